"""Time of the audit's nearest-neighbour search: N = 10,000 queries against 60,000 training rows.

    python -m benchmarks.nn_search [--n 10000] [--train 60000] [--json FILE]

For each feature space of `ganforge audit` (pixels 784-d on real MNIST, the shipped classifier's
128-d and Inception's 2048-d features as random rows of that shape: the cost depends only on the
shapes) it times `metrics.audit_metrics.memorisation` (the search of every query row against all training
rows plus the search of each hit training row against all training rows, Alaa et al. 2022's
authenticity) and reports the achieved matrix-product rate.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ganforge import __version__
from ganforge.metrics.audit_metrics import memorisation

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--train", type=int, default=60000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    spaces = {}
    if DATA.is_dir():
        from ganforge.data import load_dataset

        train = load_dataset(name="mnist", root=DATA, split="train").images[: args.train]
        test = load_dataset(name="mnist", root=DATA, split="test").images
        query = test[torch.randint(0, len(test), (args.n,), generator=g)]
        spaces["pixels (784-d, real MNIST)"] = (query.reshape(args.n, -1).float() / 255,
                                               train.reshape(len(train), -1).float() / 255)
    for name, dim in (("classifier (128-d)", 128), ("inception (2048-d)", 2048)):
        spaces[name] = (torch.randn(args.n, dim, generator=g), torch.randn(args.train, dim, generator=g))
    results = {}
    for name, (q, r) in spaces.items():
        t0 = time.perf_counter()
        mem = memorisation(q, r)
        seconds = time.perf_counter() - t0
        hits = int(torch.unique(mem.index).numel())
        flops = 2.0 * (len(q) + hits) * len(r) * q.shape[1]
        results[name] = {"seconds": round(seconds, 2), "unique_hits": hits,
                         "gflop_per_s": round(flops / seconds / 1e9, 1)}
        print(f"{name:<28} {seconds:7.1f} s  ({hits} training rows searched again, "
              f"{flops / seconds / 1e9:.0f} GFLOP/s)",
              flush=True)
    record = {"n_query": args.n, "n_train": args.train, "threads": args.threads, "cpu": cpu_model(),
              "torch": torch.__version__, "ganforge_version": __version__, "results": results,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
