"""`ganforge train`: build the resolved config (preset or resumed run, then flags, then --set) and train."""

from __future__ import annotations

import argparse
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
    p = sub.add_parser("train", help="train a GAN from a preset", description="Train a GAN from a preset.")
    p.add_argument("--preset", default="demo", help="a name from `ganforge presets` (default: demo)")
    p.add_argument("--data-dir", help="folder with the dataset's files (sets data.root)")
    p.add_argument("--out", default="runs", help="parent folder of run folders (default: runs/)")
    p.add_argument("--name", help="run folder name (default: the preset's name)")
    p.add_argument("--epochs", type=_positive)
    p.add_argument("--max-steps", type=_positive, help="stop after this many steps")
    p.add_argument("--batch-size", type=_positive)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run folder, or `auto`: the latest run of --name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set model.z_dim=64 (repeatable)")
    p.set_defaults(func=cmd_train)


def build_config(args: argparse.Namespace, *, base=None):
    """The resolved config: preset (or the resumed run's config), then flags, then --set."""
    from ganforge.config import apply_override, preset_config, validate

    cfg = base if base is not None else preset_config(args.preset)
    flags = {"data.root": args.data_dir, "train.epochs": args.epochs, "train.max_steps": args.max_steps,
             "train.batch_size": args.batch_size, "train.seed": args.seed, "train.device": args.device}
    for key, value in flags.items():
        if value is not None:
            apply_override(cfg, f"{key}={value}")
    for assignment in args.set:
        apply_override(cfg, assignment)
    validate(cfg)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from ganforge.artifacts import latest_run_dir, unique_run_dir
    from ganforge.config import format_config, load_yaml
    from ganforge.runtime import init_distributed
    from ganforge.train import Trainer

    out = Path(args.out)
    resume_dir: Optional[Path] = None
    if args.resume:
        if args.resume == "auto":
            name = args.name or args.preset
            resume_dir = latest_run_dir(out, name)
            if resume_dir is None:
                raise ConfigError(f"--resume auto: no run named {name!r} with a checkpoint under {out}/")
        else:
            resume_dir = Path(args.resume)
            if not (resume_dir / "config.yaml").is_file():
                raise ConfigError(f"--resume {resume_dir}: not a run folder (no config.yaml in it)")
        cfg = build_config(args, base=load_yaml(resume_dir / "config.yaml"))
    else:
        cfg = build_config(args)

    dist = init_distributed(cfg.train.device)
    if resume_dir is not None:
        run_dir = resume_dir
    else:
        run_dir = unique_run_dir(out, args.name or cfg.preset)
        if dist.enabled:  # every rank must agree on the folder rank 0 creates
            import torch.distributed as tdist

            shared = [run_dir]
            tdist.broadcast_object_list(shared, src=0)
            run_dir = shared[0]
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"ganforge {__version__}: preset {cfg.preset!r} -> {run_dir}")
        print(format_config(cfg), flush=True)
    trainer = Trainer(cfg, run_dir=run_dir, resume=resume_dir is not None, dist=dist)
    trainer.run()
    if dist.is_main:
        last = sorted((run_dir / "samples").glob("epoch_*.png"))
        print("open:", *(str(p) for p in [last[-1] if last else None, run_dir / "loss_curves.png"] if p),
              f"tensorboard --logdir {run_dir.parent}", sep="\n  ")
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    return 0
