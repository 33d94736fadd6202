"""What a run leaves on disk: metrics.jsonl, TensorBoard scalars and images, sample grids, loss curves.

Only rank 0 writes. Files are appended or rewritten whole through `fsutil`, so a run killed at
any moment leaves readable files; on resume, log lines past the checkpoint's step are dropped so the log matches
the restored state exactly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganforge import fsutil


def unique_run_dir(out: Path, name: str) -> Path:
    """Create and return `out/name`, or `out/name-2`, `-3`, ... when it exists: a new run never shares a folder.

    mkdir either creates the folder or fails, so two runs starting at once never claim the same name.
    """
    out.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = out / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


class RunLog:
    def __init__(self, run_dir: Path, *, resume_step: int | None = None):
        self.dir = run_dir
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        self.metrics_path = run_dir / "metrics.jsonl"
        self.history: list[dict[str, Any]] = []
        if resume_step is not None and self.metrics_path.exists():
            lines = [json.loads(s) for s in self.metrics_path.read_text().splitlines() if s.strip()]
            self.history = lines
            self.truncate(resume_step)
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a killed run wrote after its last checkpoint, so TensorBoard's
        # curves of a resumed run show one history, not two overlapping ones.
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)

    def truncate(self, step: int) -> None:
        """Forget records past `step` (after a rollback), rewriting the file atomically."""
        self.history = [r for r in self.history if r.get("step", 0) <= step]
        fsutil.write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.history))

    def log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        # Appended, not rewritten: one short write per window, and a kill mid-write costs at most
        # the last line, which `runs.read_run` then skips.
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["step"]
        for key, value in record.items():
            if key not in ("step", "epoch", "kimg", "time") and isinstance(value, (int, float)):
                self.tb.add_scalar(key, value, step)

    def save_grid(self, images: torch.Tensor, name: str, *, step: int, nrow: int = 8, tag: str = "samples") -> Path:
        """samples/<name> and a TensorBoard image from images [B, C, H, W] in [-1, 1]: the same uint8
        conversion and grid as `ganforge sample` and `interpolate` (outputs.model, outputs.animation)."""
        from ganforge.outputs.animation import grid_image, save_image_atomic
        from ganforge.outputs.model import to_uint8

        path = self.dir / "samples" / name
        grid = grid_image(to_uint8(images.detach()), nrow=nrow)
        save_image_atomic(grid, path)
        self.tb.add_image(tag, np.asarray(grid.convert("RGB")), step, dataformats="HWC")
        return path

    def plot_losses(self, *, probabilities: bool = True) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_l, ax_p) = plt.subplots(1, 2, figsize=(11, 4))
        # A window without a generator step has no G loss; a private run logs no D(x) nor D loss.
        for ax, key, label in ((ax_l, "loss_d", "D loss"), (ax_l, "loss_g", "G loss"), (ax_p, "d_real", "D(x)"),
                               (ax_p, "d_fake", "D(G(z))")):
            rows = [r for r in self.history if key in r and "kimg" in r]
            ax.plot([r["kimg"] for r in rows], [r[key] for r in rows], label=label)
        ax_l.set_xlabel("thousands of real images seen")
        ax_l.set_title("losses")
        ax_l.legend()
        ax_p.set_xlabel("thousands of real images seen")
        if probabilities:
            ax_p.set_title("discriminator outputs (sigmoid of logits)")
            ax_p.set_ylim(0, 1)
        else:
            ax_p.set_title("critic outputs (mean)")
        ax_p.legend()
        fig.tight_layout()
        path = self.dir / "loss_curves.png"
        with fsutil.atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=90)
        plt.close(fig)
        return path

    def close(self) -> None:
        """End of the run (finished, stopped or failed): the epoch grids become samples/progress.gif."""
        self.tb.close()
        from ganforge.outputs.animation import progress_gif

        try:
            progress_gif(self.dir)
        except (OSError, ValueError) as exc:  # a damaged grid must not hide why the run ended
            warnings.warn(f"could not write {self.dir / 'samples' / 'progress.gif'}: {exc}", stacklevel=2)


class Snapshots:
    """The sample grids of a run: the same latent vectors at every snapshot, so grids of successive
    epochs show one set of images changing. A conditional grid has one row per class (8 latents
    repeated for each class); an unconditional one `train.num_samples` latents, 8 to a row."""

    COLUMNS = 8

    def __init__(self, *, seed: int, z_dim: int, num_samples: int, num_classes: int, device: torch.device):
        # A generator of its own, offset from the training seed: the grids' latents never consume the
        # training noise stream, so a resumed run shows the same grid and trains on the same noise.
        g = torch.Generator().manual_seed(seed + 12345)
        if num_classes:
            z = torch.randn(self.COLUMNS, z_dim, generator=g).repeat(num_classes, 1)
            labels: torch.Tensor | None = torch.arange(num_classes).repeat_interleave(self.COLUMNS).to(device)
        else:
            z, labels = torch.randn(num_samples, z_dim, generator=g), None
        self.z, self.labels, self.conditional = z.to(device), labels, num_classes > 0

    @torch.no_grad()
    def images(self, generator: torch.nn.Module) -> torch.Tensor:
        """The generator's images [N, C, H, W] in [-1, 1] for the fixed latents, in eval mode."""
        was_training = generator.training
        generator.eval()
        # eval mode: batch norm uses its running statistics, as every later `sample` of the run will
        out = torch.cat([generator(self.z[i : i + 256], None if self.labels is None else self.labels[i : i + 256])
                         for i in range(0, len(self.z), 256)])
        generator.train(was_training)
        return out.float()

    def write(self, log: RunLog, images: torch.Tensor, *, epoch_label: int, step: int) -> None:
        log.save_grid(images, f"epoch_{epoch_label:04d}.png", step=step, nrow=self.COLUMNS)
        if self.conditional:
            log.save_grid(images, "classes.png", step=step, nrow=self.COLUMNS, tag="classes")

    @staticmethod
    def write_real(log: RunLog, real: torch.Tensor | None) -> None:
        """samples/real.png once per run: uint8 training images beside the generated grids; none (None)
        for a private run, whose training images must not be published."""
        if real is not None and not (log.dir / "samples" / "real.png").exists():
            log.save_grid(real.float().div(127.5).sub(1), "real.png", step=0, tag="real")
