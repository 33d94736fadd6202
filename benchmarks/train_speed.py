"""Training and evaluation speed, side by side with the textbook loop and the machine's own peak.

    python -m benchmarks.train_speed [--preset mnist-dcgan64] [--batch-size 64] [--json FILE]

Prints and writes (JSON): images/s of ganforge's loop and of the textbook loop (same networks,
same process, interleaved), model FLOPs per image (torch.utils.flop_counter), the machine's
measured fp32 (and bf16) matmul peak, the fraction of it each loop reaches, and Inception
feature-extraction images/s against a plain fp32 batch-32 loop.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.textbook import textbook_images_per_s, textbook_loader
from ganforge import __version__
from ganforge.config import apply_override, preset_config
from ganforge.runtime import Dist
from ganforge.training.loop import Trainer


def matmul_peak(dtype: torch.dtype, device: torch.device, *, n: int = 2048, repeats: int = 5) -> float:
    """Achieved FLOP/s of a large square matmul: the practical ceiling for conv-heavy training."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_trainer(preset: str, sets: list[str], *, run_dir: Path | None = None) -> Trainer:
    cfg = preset_config(preset)
    for s in sets:
        apply_override(cfg, s)
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="ganforge-bench-")) / "run"
    return Trainer(cfg, run_dir=run_dir, dist=Dist())


def ganforge_images_per_s(tr: Trainer, *, warmup: int, windows: int, window_steps: int) -> tuple[list[float], float]:
    """Images/s of each timed window, and the seconds the warm-up took (torch.compile's, when on)."""
    stream = _cycle(tr)
    start = time.perf_counter()
    for _ in range(warmup):
        tr.train_step(*next(stream))
    _sync(tr.device)
    warmup_s = time.perf_counter() - start
    rates = []
    for _ in range(windows):
        _sync(tr.device)
        start = time.perf_counter()
        for _ in range(window_steps):
            tr.train_step(*next(stream))
            tr.progress.step += 1
        tr.window.take()  # what the loop's log flush does, minus the file writes
        _sync(tr.device)
        rates.append(window_steps * tr.cfg.train.batch_size / (time.perf_counter() - start))
    return rates, warmup_s


def _cycle(tr: Trainer):
    epoch = 0
    while True:
        yield from tr.batches.epoch(epoch)
        epoch += 1


def flops_per_image(tr: Trainer) -> float:
    """FLOPs of one full training step (D on real and fake, G forward and backward) per image."""
    x, labels = next(tr.batches.epoch(0))
    with FlopCounterMode(display=False) as counter:
        tr.train_step(x, labels)
    return counter.get_total_flops() / x.shape[0]


def inception_speed(device: torch.device, *, n: int, batch_size: int) -> dict:
    """Inception pool features/s: ganforge's extractor against a plain fp32 batch-32 loop over the
    TorchScript file as `torch.jit.load` gives it (what a user without ganforge would run)."""
    from ganforge.metrics.inception import InceptionFeatures, to_inception_input

    net = InceptionFeatures(device=device)
    script = torch.jit.load(str(net.source.path), map_location=device).eval()  # the file as shipped
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)

    def timed(fn) -> float:
        fn(images[:8])
        start = time.perf_counter()
        fn(images)
        _sync(device)
        return n / (time.perf_counter() - start)

    def plain(x):
        with torch.no_grad():
            return torch.cat([script(to_inception_input(x[i:i + 32].to(device))) for i in range(0, len(x), 32)])

    def ours(x):
        return torch.cat([net(x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)])

    return {"ganforge_images_per_s": timed(ours), "ganforge_batch_size": batch_size,
            "plain_fp32_b32_images_per_s": timed(plain)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mnist-dcgan64")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--window-steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2, help="textbook DataLoader workers (pytorch/examples uses 2)")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides for ganforge's loop")
    ap.add_argument("--inception-n", type=int, default=256, help="0 skips the feature-network benchmark")
    ap.add_argument("--inception-batch", type=int, default=50, help="ganforge eval's default")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    # The benchmark needs no files: the shipped MNIST subset at the preset's size is the same work per image.
    size = preset_config(args.preset).data.size or 28
    sets = ["data.name=mnist-5k", "data.root=none", f"data.size={size}", f"train.batch_size={args.batch_size}",
            f"train.device={args.device}", *args.set]
    tr = make_trainer(args.preset, sets)
    device = tr.device
    G0, D0 = copy.deepcopy(tr.G), copy.deepcopy(tr.D)  # untouched copies for the textbook loop
    flops = flops_per_image(tr)
    peak32 = matmul_peak(torch.float32, device)
    bf16_ok = device.type == "cuda" or torch.backends.mkldnn.is_available()
    peak16 = matmul_peak(torch.bfloat16, device) if bf16_ok else None

    ours, warmup_s = ganforge_images_per_s(tr, warmup=args.warmup, windows=args.windows, window_steps=args.window_steps)
    G_t = G0.to(memory_format=torch.contiguous_format).to(device)
    D_t = D0.to(memory_format=torch.contiguous_format).to(device)
    loader = textbook_loader(tr.batches.images.cpu(), size=size, batch_size=args.batch_size, workers=args.workers)
    base = textbook_images_per_s(G_t, D_t, loader, z_dim=tr.cfg.model.z_dim, warmup=args.warmup,
                                 windows=args.windows, window_steps=args.window_steps, device=device)
    ours_med, base_med = statistics.median(ours), statistics.median(base)
    result = {
        "preset": args.preset, "batch_size": args.batch_size, "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "ganforge": __version__, "cpu": platform.processor() or platform.machine(),
        "precision": tr.precision.name, "channels_last": tr.cfg.train.channels_last, "compile": tr.cfg.train.compile,
        "flops_per_image": flops, "peak_fp32_flops": peak32, "peak_bf16_flops": peak16,
        "ganforge_images_per_s": ours_med, "ganforge_windows": ours,
        "ganforge_warmup_seconds": warmup_s,
        "textbook_images_per_s": base_med, "textbook_windows": base, "speedup": ours_med / base_med,
        "ganforge_fraction_of_fp32_peak": flops * ours_med / peak32,
        "textbook_fraction_of_fp32_peak": flops * base_med / peak32,
    }
    if peak16:
        result["ganforge_fraction_of_bf16_peak"] = flops * ours_med / peak16
    if args.inception_n:
        try:
            result["inception"] = inception_speed(device, n=args.inception_n, batch_size=args.inception_batch)
        except Exception as exc:  # the feature network is optional for a training benchmark
            result["inception"] = {"skipped": f"{exc.__class__.__name__}: {exc}"}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
