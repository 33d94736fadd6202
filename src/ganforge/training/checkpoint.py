"""Checkpoints: the full training state, written atomically, loaded without unpickling code.

Layout: `checkpoints/step_000001234/` holding `weights.safetensors` (G, D and the EMA generator)
and `state.pt` (optimizers, counters, RNG states, config; loadable with `weights_only=True`, and
carrying the weights file's SHA-256). A checkpoint is written through `fsutil.atomic_dir` (a
temporary folder, each file fsync'd, then renamed into place; a folder it replaces, such as
`best`, is moved aside first, never deleted first); older ones are pruned only after the new one
is complete.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

from ganforge import fsutil
from ganforge.errors import CheckpointError

PREFIX = "step_"
WEIGHTS, STATE = "weights.safetensors", "state.pt"
_NAME = re.compile(rf"{PREFIX}\d{{9}}")  # exactly what save_checkpoint names a step


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first: `step_<9 digits>` folders (not links) holding both
    files. A folder that merely carries such a name (a user's, another command's) is not one, and
    temporary folders are ignored. load_checkpoint verifies the content."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink()
                  and (p / WEIGHTS).is_file() and (p / STATE).is_file())


def _prune(run_dir: Path, final: Path, keep: int) -> None:
    """Keep `final` and the newest keep-1 verified checkpoints before it; remove older ones, but only
    folders holding nothing but a checkpoint's two files. A step above `final` is not this training's
    and stays: the newest good checkpoint is never removed by its successor."""
    older = [p for p in list_checkpoints(run_dir) if p.name < final.name]
    kept = 1
    for path in reversed(older):
        if kept < keep and _verified(path):
            kept += 1
        elif kept >= keep and set(os.listdir(path)) == {WEIGHTS, STATE}:
            fsutil.remove_dir(path)


def _verified(path: Path) -> bool:
    try:
        _read_state(path)
        return True
    except CheckpointError:
        return False


def save_checkpoint(run_dir: Path, *, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any],
                    keep: int, name: Optional[str] = None) -> Path:
    """Write `checkpoints/step_<step>` (or `checkpoints/<name>`) atomically, then prune to the newest `keep`."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / (name or f"{PREFIX}{step:09d}")
    try:
        with fsutil.atomic_dir(final) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS))
            torch.save(dict(state, weights_sha256=fsutil.sha256_file(tmp / WEIGHTS)), tmp / STATE)
    except OSError as exc:
        previous = [p.name for p in list_checkpoints(run_dir)]
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"cannot write checkpoint {final} ({exc.strerror or exc}); {kept}") from None
    if name is None:
        _prune(run_dir, final, keep)
    return final


def newest_checkpoint_time(run_dir: Path) -> Optional[float]:
    """When the run's newest checkpoint was written (its state file's own time), or None without one.

    Reading a run (an evaluation, a copy of samples) changes the run folder's time but never this.
    """
    found = list_checkpoints(run_dir)
    return (found[-1] / STATE).stat().st_mtime if found and (found[-1] / STATE).is_file() else None


def _read_state(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """The verified state of one checkpoint folder (its weights match their checksum)."""
    weights, state_file = path / WEIGHTS, path / STATE
    for f in (weights, state_file):
        if not f.is_file():
            raise CheckpointError(f"{f}: missing; a checkpoint folder holds {WEIGHTS} and {STATE}")
    try:
        state = torch.load(state_file, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, a pickle with code in it, ...: all refused the same way
        raise CheckpointError(f"{state_file}: not a valid ganforge state file ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or "weights_sha256" not in state:
        raise CheckpointError(f"{state_file}: not a ganforge state file (no weights checksum)")
    if fsutil.sha256_file(weights) != state["weights_sha256"]:
        raise CheckpointError(f"{weights}: checksum mismatch (truncated or modified)")
    return state


def load_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify one checkpoint folder; any problem raises CheckpointError naming the file."""
    path = Path(path)
    state = _read_state(path, map_location)
    try:
        tensors = load_file(str(path / WEIGHTS), device=str(map_location))
    except Exception as exc:
        raise CheckpointError(f"{path / WEIGHTS}: cannot read safetensors ({exc.__class__.__name__})") from None
    return tensors, state


def load_latest(run_dir: Path, *, map_location: str | torch.device = "cpu") -> tuple[Path, dict, dict]:
    """The newest checkpoint that loads; a bad one is skipped with a warning naming it."""
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoint in {Path(run_dir) / 'checkpoints'}")
    for path in reversed(found):
        try:
            tensors, state = load_checkpoint(path, map_location=map_location)
            return path, tensors, state
        except CheckpointError as exc:
            warnings.warn(f"skipping bad checkpoint: {exc}; falling back to the one before", stacklevel=2)
    raise CheckpointError(f"{run_dir}: none of the {len(found)} checkpoints could be loaded")


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_generator(run_dir: Path, *, checkpoint: Optional[Path] = None, device: str | torch.device = "cpu"):
    """(config, generator in eval mode) from a run folder: the EMA generator when the run kept one."""
    if checkpoint is not None:
        tensors, state = load_checkpoint(Path(checkpoint))
    else:
        _, tensors, state = load_latest(Path(run_dir))
    return generator_from_state(run_dir, tensors, state, device=device)


def generator_from_state(run_dir: Path, tensors: dict[str, torch.Tensor], state: dict, *,
                         device: str | torch.device = "cpu"):
    """(config, generator in eval mode) from a loaded checkpoint: the EMA weights when there are some."""
    from ganforge.config import from_dict
    from ganforge.models import build_models

    cfg = from_dict(state["config"], origin=str(run_dir))
    shape = state["data_shape"]
    g, _ = build_models(cfg.model, channels=shape["channels"], size=shape["size"], num_classes=shape["num_classes"])
    weights = split_prefix(tensors, "G_ema.") or split_prefix(tensors, "G.")
    try:
        g.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(
            f"{run_dir}: checkpoint weights do not match architecture {cfg.model.arch!r} of its config"
        ) from None
    return cfg, g.to(device).eval()


def pack(modules: dict[str, Optional[torch.nn.Module]], stateful: dict[str, Any],
         **state: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The two halves of a checkpoint: every module's tensors under `<name>.` (the safetensors file) and
    every stateful object's `state_dict()` (optimizers, loss scalers) beside the plain `state` entries
    (the state file). `unpack` reads back exactly these names."""
    tensors = {f"{name}.{k}": v for name, m in modules.items() if m is not None for k, v in m.state_dict().items()}
    return tensors, {**{key: obj.state_dict() for key, obj in stateful.items()}, **state}


def unpack(tensors: dict[str, torch.Tensor], state: dict[str, Any], modules: dict[str, Optional[torch.nn.Module]],
           stateful: dict[str, Any], *, fallback: Optional[dict[str, str]] = None,
           optional: tuple[str, ...] = ()) -> None:
    """Load what `pack` wrote into the same modules and objects. fallback: a module missing from the
    checkpoint takes another's tensors (an EMA turned on at a resume starts from G). optional: stateful
    entries an older checkpoint may lack; one saved empty (a loss scaler that was off) is left alone.
    Anything else missing is a KeyError."""
    for name, module in modules.items():
        if module is None:
            continue
        part = split_prefix(tensors, f"{name}.")
        if not part and fallback and name in fallback:
            part = split_prefix(tensors, f"{fallback[name]}.")
        module.load_state_dict(part)
    for key, obj in stateful.items():
        if key not in state and key not in optional:
            raise KeyError(f"the checkpoint has no {key!r}")
        if state.get(key):
            obj.load_state_dict(state[key])
