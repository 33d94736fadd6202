"""Host memory of a 2-rank torchrun training on a large image folder: what each rank holds privately.

    python -m benchmarks.data_memory --folder /tmp/folder24k --make 24000        # make the folder once
    python -m benchmarks.data_memory --folder /tmp/folder24k --label this         # this checkout's code
    python -m benchmarks.data_memory --folder /tmp/folder24k --label main --src /work/main/src
    python -m benchmarks.data_memory --folder /tmp/folder24k --label this-device --set data.placement=device

Each run starts from an empty cache (a cache miss: the case where every rank used to decode), trains
`--steps` steps of a tiny model on CPU with gloo, and samples every worker's /proc/PID/smaps_rollup
twice a second. It reports, per rank, the peak of Rss, Pss, Anonymous (private memory nothing but
the process can free) and Private_Clean + Private_Dirty, during loading and during training, the
time from start to the first training step, and the training images/s from metrics.jsonl. File-backed
pages of a memory-mapped cache appear in Rss (and in Private_Clean when one rank alone touched them)
but are page cache, which the kernel reclaims under pressure; Anonymous is the figure that matters.
The record goes to benchmarks/records/data/<label>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RECORDS = Path(__file__).resolve().parent / "records" / "data"
FIELDS = ("Rss", "Pss", "Anonymous", "Private_Clean", "Private_Dirty")


def make_folder(folder: Path, n: int, size: int = 128) -> None:
    """n random-ish JPEGs (smooth colour fields plus grain) of size x size: cheap to write, real decode work."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size),
                                                                                          Image.Resampling.BILINEAR)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)


def smaps(pid: int) -> dict[str, int]:
    """The memory fields of a process, in MB (0 when it has ended)."""
    out = dict.fromkeys(FIELDS, 0)
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in out:
                out[key] = int(rest.split()[0]) // 1024
    except (OSError, ValueError):
        pass
    return out


def workers(launcher: int) -> dict[int, int]:
    """{rank: pid} of the torchrun workers under `launcher`."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != launcher:
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        rank = [int(e[5:]) for e in env if e.startswith(b"RANK=")]
        if rank:
            found[rank[0]] = int(proc.name)
    return found


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ganforge-datamem-"))
    env = {**os.environ, "GANFORGE_CACHE": str(work / "cache"), "PYTHONPATH": args.src}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ganforge",
           "train", "--out", str(work / "runs"), "--name", "r", "--device", "cpu", "--data-dir", str(args.folder),
           "--set", "data.name=folder", "--set", f"data.size={args.size}", "--set", "model.conditional=false",
           "--set", "model.g_channels=8", "--set", "model.d_channels=8", "--batch-size", "32",
           "--max-steps", str(args.steps), "--set", "train.log_every=10", "--set", "threads=1",
           *[a for kv in args.set for a in ("--set", kv)]]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = work / "runs" / "r" / "metrics.jsonl"
    peaks: dict[str, dict[int, dict[str, int]]] = {"loading": {}, "training": {}}
    first_step = None
    while proc.poll() is None:
        if first_step is None and metrics.is_file() and metrics.stat().st_size > 0:
            first_step = time.monotonic() - t0
        phase = "training" if first_step is not None else "loading"
        for rank, pid in workers(proc.pid).items():
            now, peak = smaps(pid), peaks[phase].setdefault(rank, dict.fromkeys(FIELDS, 0))
            now["Private"] = now["Private_Clean"] + now["Private_Dirty"]
            for k, v in now.items():
                peak[k] = max(peak.get(k, 0), v)
        time.sleep(0.5)
    out = proc.communicate()[0]
    if proc.returncode != 0:
        raise SystemExit(f"training failed:\n{out}")
    rates = [json.loads(s)["images_per_s"] for s in metrics.read_text().splitlines() if "images_per_s" in s]
    shutil.rmtree(work, ignore_errors=True)
    return {"label": args.label, "src": args.src, "command": " ".join(cmd), "folder": str(args.folder),
            "images": len(list(Path(args.folder).glob("*.jpg"))), "size": args.size, "steps": args.steps,
            "seconds_to_first_window": round(first_step or 0.0, 1), "wall_s": round(time.monotonic() - t0, 1),
            "images_per_s_last_window": round(rates[-1], 1) if rates else None,
            "peak_mb": {phase: {str(r): v for r, v in sorted(p.items())} for phase, p in peaks.items()},
            "placement_line": next((s for s in out.splitlines() if s.startswith("data: ")), ""),
            "cpu": platform.processor() or _cpu_model(), "time": time.strftime("%Y-%m-%d %H:%M")}


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", type=Path, required=True)
    p.add_argument("--make", type=int, default=0, help="first write this many JPEGs into --folder")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--label", default="this")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed on to ganforge train")
    p.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"),
                   help="the ganforge source to measure (PYTHONPATH), e.g. another checkout's src")
    args = p.parse_args()
    if args.make:
        make_folder(args.folder, args.make, args.size)
        print(f"wrote {args.make} images to {args.folder}")
        return
    record = run(args)
    RECORDS.mkdir(parents=True, exist_ok=True)
    path = RECORDS / f"{args.label}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
