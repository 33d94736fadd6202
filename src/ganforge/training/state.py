"""The full training state, as one checkpoint holds it: the counters of progress, the modules (G, D,
G_ema), the stateful objects (optimizers, loss scalers, a private run's privacy ledger) and every
rank's RNG, with the one function that writes it and the one that reads it back, so the two cannot
drift apart.

Progress is counted in real images seen as well as steps: the learning-rate schedule, the EMA
half-life and the periodic evaluation are set in images (Karras et al. 2020 count kimg), so a run
resumed with another batch size or number of ranks keeps its schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from torch import nn

from ganforge import __version__, runtime
from ganforge.config import Config, to_dict
from ganforge.errors import CheckpointError, ConfigError
from ganforge.training.checkpoint import load_latest, pack, save_checkpoint, unpack
from ganforge.training.resume import check_ranks


@dataclass
class TrainProgress:
    step: int = 0          # discriminator steps done
    epoch: int = 0         # current epoch, 0-based
    pos: int = 0           # batches of the current epoch already done
    images: int = 0        # real images seen, all ranks together
    wall: float = 0.0      # training seconds so far
    rollbacks: int = 0     # health-guard rollbacks so far
    lr_scale: float = 1.0  # product of the rollback learning-rate cuts
    best_fid: float = math.inf  # lowest FID of the periodic evaluations (checkpoints/best)


@dataclass
class TrainState:
    """What a checkpoint holds. `modules` and `stateful` are the live objects, loaded in place."""

    cfg: Config
    run_dir: Path
    data_info: dict
    modules: dict[str, Optional[nn.Module]]
    stateful: dict[str, Any]
    # Entries a checkpoint written before they existed may lack (the fp16 loss scalers): left as built.
    optional: tuple[str, ...] = ()
    progress: TrainProgress = field(default_factory=TrainProgress)

    def save(self, dist: runtime.Dist, device, *, name: Optional[str] = None) -> Optional[Path]:
        """Checkpoint everything (rank 0 writes). `name` (e.g. "best") is a copy written by rank 0 alone,
        so it holds rank 0's RNG only; the numbered checkpoints gather every rank's, so a resumed
        multi-rank run draws the same noise as one never stopped."""
        if name is None:
            rng = dist.gather(runtime.rng_state(device))
            # the trained networks must be bit-identical on every rank: a rank that drifted is caught here
            dist.check_in_sync(*(m for k, m in self.modules.items() if k in ("G", "D") and m is not None))
        else:
            rng = [runtime.rng_state(device)]
        if not dist.is_main:
            return None
        tensors, state = pack(self.modules, self.stateful, progress=vars(self.progress).copy(), rng=rng,
                              config=to_dict(self.cfg), data_shape=self.data_info, version=__version__,
                              world_size=dist.world_size)
        path = save_checkpoint(self.run_dir, step=self.progress.step, tensors=tensors, state=state,
                               keep=self.cfg.train.keep_checkpoints, name=name)
        if "privacy" in self.stateful:  # privacy.json beside config.yaml: what the newest checkpoint spent
            self.stateful["privacy"].write_record(self.run_dir, step=self.progress.step)
        return path

    def restore(self, dist: runtime.Dist, device, *, allow_changes: bool) -> tuple[Path, dict]:
        """Load the newest good checkpoint in place; its path and the changes of rank count it allowed.
        A checkpoint that does not fit (other image size, architecture, optimizer) is refused in one line."""
        path, tensors, state = load_latest(self.run_dir, map_location="cpu")
        size = self.data_info["size"]
        if state.get("data_shape", {}).get("size") != size:
            raise ConfigError(f"{path}: checkpoint is for {state['data_shape']} images; the data now gives "
                              f"{size}x{size}")
        changes = check_ranks(state, dist.world_size, run_dir=self.run_dir, allow=allow_changes)
        try:  # an EMA switched on at a resume starts from G's weights
            unpack(tensors, state, self.modules, self.stateful, fallback={"G_ema": "G"}, optional=self.optional)
        except (RuntimeError, ValueError, KeyError) as exc:
            detail = next((s.strip() for s in str(exc).splitlines()[1:] if s.strip()), str(exc))
            raise CheckpointError(f"{path}: does not fit this model and optimizer ({detail})") from None
        vars(self.progress).update(vars(TrainProgress(**state["progress"])))  # in place: the loop holds it
        # A run resumed on fewer ranks than it was saved with: the extra ranks' streams are dropped.
        runtime.set_rng_state(state["rng"][min(dist.rank, len(state["rng"]) - 1)], device)
        if dist.is_main:
            p = self.progress
            print(f"resumed from {path} at step {p.step}, epoch {p.epoch + 1}, {p.images / 1000:.1f} kimg", flush=True)
        return path, changes
