"""A run's generator ready to use: loading with clear refusals, seeded latents, batched generation.

Image i of a seed depends only on (seed, i): latents come in fixed chunks, each drawn from its own
generator seeded by (seed, chunk), so `--n 10` gives the first ten images of `--n 1000` and the
batch size never changes a file. Truncation resamples every latent entry whose magnitude exceeds
T (the truncation trick of Brock et al. 2019, BigGAN, section 3.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ganforge import __version__
from ganforge.config import Config
from ganforge.errors import CheckpointError, ConfigError, UsageError

CHUNK = 256          # latents per seeded chunk and images per forward pass
MAX_IMAGES = 1_000_000  # more than any data set we train on; a typo like --n 1e9 is refused
MAX_SEED = 2**63 - 1


@dataclass
class Model:
    run_dir: Path
    checkpoint: Path
    cfg: Config
    g: torch.nn.Module
    step: int
    version: str
    channels: int
    size: int
    z_dim: int
    ema: bool = False     # the weights are G's exponential moving average
    num_classes: int = 0  # 0: unconditional
    class_names: list[str] = field(default_factory=list)
    device: torch.device = torch.device("cpu")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def class_name(self, k: int) -> str:
        return self.class_names[k] if k < len(self.class_names) else str(k)


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split(".")[:2])
    except ValueError:
        return (-1,)


def load_model(run_dir: Path | str, *, checkpoint: Optional[Path | str] = None,
               device: str | torch.device = "cpu") -> Model:
    """The run's latest (or the given) checkpoint as a `Model`; every problem is one CheckpointError line."""
    from ganforge.training.checkpoint import generator_from_state, load_checkpoint, load_latest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run folder")
    if checkpoint is not None:
        path = Path(checkpoint)
        path = path.parent if path.is_file() else path
        if not path.is_dir():
            raise UsageError(f"--checkpoint {checkpoint}: no such checkpoint folder")
        tensors, state = load_checkpoint(path)
    else:
        if not (run_dir / "checkpoints").is_dir() and not (run_dir / "config.yaml").is_file():
            raise CheckpointError(f"{run_dir}: not a ganforge run folder (no checkpoints/ and no config.yaml)")
        path, tensors, state = load_latest(run_dir)
    version = str(state.get("version", "unknown"))
    if _version_tuple(version) > _version_tuple(__version__):
        raise CheckpointError(f"{path}: written by ganforge {version}; this is ganforge {__version__}, which "
                              f"cannot read newer run folders: upgrade ganforge")
    try:
        cfg, g = generator_from_state(run_dir, tensors, state, device=device)
        shape = state["data_shape"]
        num_classes = int(shape["num_classes"]) if cfg.model.conditional else 0
        model = Model(run_dir=run_dir, checkpoint=path, cfg=cfg, g=g, step=int(state["progress"]["step"]),
                      version=version, channels=int(shape["channels"]), size=int(shape["size"]),
                      z_dim=int(cfg.model.z_dim), ema=any(k.startswith("G_ema.") for k in tensors),
                      num_classes=num_classes,
                      class_names=[str(c) for c in shape.get("class_names") or []], device=torch.device(device))
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: written by ganforge {version}, whose checkpoint layout ganforge "
                              f"{__version__} cannot read ({exc.__class__.__name__}: {exc})") from None
    check_belongs(run_dir, path, cfg)
    return model


def check_belongs(run_dir: Path, path: Path, cfg) -> None:
    """Refuse a checkpoint that another model wrote: whether found under the run's checkpoints/ or
    given as --checkpoint, its architecture (what a resume may not change) and data must be the run's."""
    from ganforge.config import load_yaml
    from ganforge.training.resume import SAFE_MODEL_KEYS, changes

    own_config = Path(run_dir) / "config.yaml"
    if not own_config.is_file():
        return
    diff = {k: v for k, v in changes(load_yaml(own_config), cfg).items()
            if (k.startswith("model.") and k not in SAFE_MODEL_KEYS) or k in ("data.name", "data.size")}
    if diff:
        what = ", ".join(f"{k}={new!r} (the run's: {old!r})" for k, (old, new) in list(diff.items())[:3])
        raise CheckpointError(f"{path}: a {cfg.model.arch} checkpoint of another model ({what}); "
                              f"{run_dir} cannot use it: "
                              f"move it out of the run or pass a checkpoint of this run")


def check_count(n: int, *, limit: int = MAX_IMAGES, what: str = "--n") -> int:
    if n < 1 or n > limit:
        raise UsageError(f"{what} {n}: expected a count from 1 to {limit:,}")
    return n


def check_seed(seed: int, what: str = "--seed") -> int:
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"{what} {seed}: expected an integer from 0 to {MAX_SEED}")
    return seed


def check_class(model: Model, k: Optional[int], what: str = "--class") -> Optional[int]:
    """None, or a class index the model was trained on; anything else is refused naming what is allowed."""
    if k is None:
        return None
    if not model.conditional:
        raise UsageError(f"{what} {k}: {model.run_dir} is an unconditional model ({model.cfg.model.arch}, "
                         f"model.conditional=false); leave the class out")
    if not 0 <= k < model.num_classes:
        raise UsageError(f"{what} {k}: out of range; this model has {describe_classes(model)}")
    return k


def describe_classes(model: Model) -> str:
    """'classes 0 to 9', naming them when the names say more than the numbers."""
    names = [model.class_name(i) for i in range(model.num_classes)]
    listed = "" if names == [str(i) for i in range(model.num_classes)] else " (" + ", ".join(
        f"{i}={name}" for i, name in enumerate(names)) + ")"
    return f"classes 0 to {model.num_classes - 1}{listed}"


def check_truncation(t: Optional[float], what: str = "--truncation") -> Optional[float]:
    if t is not None and not 0.05 <= t <= 10:
        raise UsageError(f"{what} {t}: expected a value from 0.05 to 10 (smaller: less varied, cleaner images)")
    return t


def truncated_normal(shape: tuple[int, ...], generator: torch.Generator, truncation: Optional[float]) -> torch.Tensor:
    z = torch.randn(shape, generator=generator)
    if truncation is None:
        return z
    out = z.abs() > truncation
    while out.any():  # redraw only the entries outside [-T, T]
        z[out] = torch.randn(int(out.sum()), generator=generator)
        out = z.abs() > truncation
    return z


def latents(seed: int, start: int, stop: int, z_dim: int, truncation: Optional[float] = None) -> torch.Tensor:
    """Latents start..stop-1 of `seed`, [stop - start, z_dim]: the same rows whatever the range asked."""
    rows = []
    for chunk in range(start // CHUNK, (stop - 1) // CHUNK + 1):
        state = np.random.SeedSequence([seed, chunk]).generate_state(2, np.uint32)
        gen = torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))
        z = truncated_normal((CHUNK, z_dim), gen, truncation)
        lo, hi = max(start - chunk * CHUNK, 0), min(stop - chunk * CHUNK, CHUNK)
        rows.append(z[lo:hi])
    return torch.cat(rows)


def labels_for(model: Model, start: int, stop: int, k: Optional[int]) -> Optional[torch.Tensor]:
    """Class k for every image, or the classes in turn (balanced) when no class is asked."""
    if not model.conditional:
        return None
    idx = torch.arange(start, stop)
    return torch.full_like(idx, k) if k is not None else idx % model.num_classes


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> uint8 on the same device: the one conversion of generated images,
    for the files `sample` writes, the training grids and the images `eval` measures alike.

    Rounded the way torchvision's save_image does (+0.5, then truncated), so a PNG written by another
    PyTorch tool from the same output has the same pixels; the clamp comes after the scaling, so a
    generator overshooting [-1, 1] saturates at 0 and 255 instead of wrapping around."""
    return images.float().add(1).mul(127.5).add(0.5).clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def generate(model: Model, z: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
    """Images in [-1, 1] for the given latents (and labels), in forward passes of at most CHUNK."""
    outs = []
    for i in range(0, len(z), CHUNK):
        lab = None if labels is None else labels[i:i + CHUNK].to(model.device)
        outs.append(model.g(z[i:i + CHUNK].to(model.device), lab).float().cpu())
    return torch.cat(outs)


def batches(model: Model, n: int, *, seed: int, k: Optional[int] = None,
            truncation: Optional[float] = None) -> Iterator[tuple[int, torch.Tensor, Optional[torch.Tensor]]]:
    """(first index, uint8 images [B, C, H, W], labels or None) for images 0..n-1 of `seed`, CHUNK at a time."""
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        labels = labels_for(model, start, stop, k)
        images = generate(model, latents(seed, start, stop, model.z_dim, truncation), labels)
        yield start, to_uint8(images), labels
