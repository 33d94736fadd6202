"""`ganforge interpolate`: rows of smooth walks between random latent points.

Walks follow great circles (spherical interpolation, Shoemake 1985; White 2016, "Sampling Generative
Networks", explains why: Gaussian latents live near a sphere, and a straight line between two of
them passes through unlikely, low-norm points). For a conditional model every class walks the same
latent path, one row per class, so the rows differ only in the label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ganforge.errors import UsageError
from ganforge.outputs.animation import grid_image, save_gif
from ganforge.outputs.files import atomic_output, check_output
from ganforge.outputs.model import Model, check_seed, check_truncation, generate, latents, to_uint8

MAX_STEPS, MAX_ROWS = 64, 32


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points at fractions t [T] along the great circle from a to b, [..., D] -> [..., T, D]."""
    # Spherical, not linear (White 2016, "Sampling Generative Networks"): a Gaussian latent's mass
    # lies near a sphere of radius sqrt(D), and the midpoint of a straight line between two such
    # points is well inside it, where G saw no latents during training.
    t = t.view(*([1] * (a.dim() - 1)), -1, 1)
    a, b = a.unsqueeze(-2), b.unsqueeze(-2)
    cos = (a / a.norm(dim=-1, keepdim=True) * b / b.norm(dim=-1, keepdim=True)).sum(-1, keepdim=True)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))  # clamped: round-off can put cos just past +-1 (NaN)
    so = torch.sin(omega)
    linear = (1 - t) * a + t * b  # nearly parallel endpoints: the arc is a line
    arc = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so.clamp_min(1e-7)
    return torch.where(so > 1e-6, arc, linear)


def walks(model: Model, *, rows: int, steps: int, seed: int, truncation: Optional[float] = None):
    """(latents [R', steps, z], labels [R'] or None): R walks, repeated for every class of a conditional model."""
    # the seed's first 2R latents, the same `ganforge sample --seed` draws: a walk's ends are images
    # the user may already have seen
    ends = latents(seed, 0, 2 * rows, model.z_dim, truncation).view(rows, 2, model.z_dim)
    z = slerp(ends[:, 0], ends[:, 1], torch.linspace(0, 1, steps))          # [R, steps, z]
    if not model.conditional:
        return z, None
    k = model.num_classes
    z = z.repeat_interleave(k, dim=0)                                      # [R * classes, steps, z]
    labels = torch.arange(k).repeat(rows)                                  # each walk: classes 0..k-1
    return z, labels


def interpolate(model: Model, *, out: Path, steps: int = 10, rows: Optional[int] = None, seed: int = 0,
                gif: bool = False, truncation: Optional[float] = None, overwrite: bool = False) -> Path:
    """A PNG grid (one walk per row) or, with gif, an animation whose frame t shows step t of every walk."""
    rows = rows if rows is not None else (1 if model.conditional else 8)
    if not 2 <= steps <= MAX_STEPS:
        raise UsageError(f"--steps {steps}: expected 2 to {MAX_STEPS}")
    if not 1 <= rows <= MAX_ROWS:
        raise UsageError(f"--rows {rows}: expected 1 to {MAX_ROWS}")
    check_seed(seed)
    check_truncation(truncation)
    out = Path(out)
    want = ".gif" if gif else ".png"
    if out.suffix.lower() != want:
        raise UsageError(f"--out {out}: {'--gif writes' if gif else 'without --gif the output is'} a {want} file; "
                         f"name it ...{want}")
    check_output(out, overwrite=overwrite)
    z, labels = walks(model, rows=rows, steps=steps, seed=seed, truncation=truncation)
    n_rows = z.shape[0]
    flat_labels = None if labels is None else labels.repeat_interleave(steps)
    images = to_uint8(generate(model, z.reshape(-1, model.z_dim), flat_labels))  # [rows * steps, C, H, W]
    with atomic_output(out, overwrite=overwrite) as tmp:
        if not gif:
            grid_image(images, nrow=steps).save(tmp, format="PNG")
            return out
        by_step = images.view(n_rows, steps, *images.shape[1:])
        cols = model.num_classes if model.conditional else min(n_rows, 8)
        frames = [grid_image(by_step[:, t], nrow=cols) for t in range(steps)]
        frames += frames[-2:0:-1]  # there and back again, so the loop has no jump
        save_gif(frames, tmp, frame_ms=120, last_ms=120, atomic=False)
    return out
