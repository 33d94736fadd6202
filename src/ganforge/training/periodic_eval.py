"""Evaluation during training: every `train.eval_every` epochs and/or every `train.eval_every_kimg`
thousand real images, a small-N evaluation of the current (EMA) generator is logged to
metrics.jsonl and TensorBoard, and the checkpoint with the lowest FID so far is kept as
`checkpoints/best/` (never pruned, never used by --resume; the best value is part of the
training state, so a resumed run keeps comparing against it). Under torchrun every rank takes
part and the feature extraction is split between them; rank 0 logs and writes.

Small N makes FID biased upward (Heusel et al. 2017; Bińkowski et al. 2018), so these values
show a trend within one run; `ganforge eval` with N ≥ 10,000 gives the numbers to publish.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from ganforge.config import Config
from ganforge.data import ImageData

FID_KEYS = ("fid", "cls-fid")  # the first present decides which checkpoint is "best"
# Images per generator call on a CPU; the batch decides which latent vectors are drawn, so it stays
# what earlier runs logged with. A GPU takes `evaluation.CUDA_BATCH`.
EVAL_BATCH_CPU = 100


def resolve_metrics(cfg: Config, *, conditional: bool) -> list[str]:
    from ganforge.metrics.classifier import CLASSIFIER_FOR

    if cfg.train.eval_metrics != "auto":
        return [m.strip() for m in cfg.train.eval_metrics.split(",") if m.strip()]
    if cfg.data.name in CLASSIFIER_FOR and (cfg.data.size in (0, 28)):
        return ["cls-fid", "cls-is"] + (["cls-acc"] if conditional else [])
    return ["fid"]


class PeriodicEval:
    def __init__(self, cfg: Config, data: ImageData, *, device: torch.device, num_classes: int, shard: bool = False):
        from ganforge.metrics import METRICS

        self.cfg, self.device, self.num_classes, self.shard = cfg, device, num_classes, shard
        self.metrics = resolve_metrics(cfg, conditional=num_classes > 0)
        for m in self.metrics:
            METRICS.get(m)  # an unknown key stops the run before training, with the valid choices
        self.real = data.images
        self.dataset_key = f"{cfg.data.name}@{data.size}px-{cfg.data.split}-limit{cfg.data.limit}"
        # the reference cache is keyed by what the files hold, not by their name, place or time
        self.fingerprint = data.reference_key or data.fingerprint
        self.reported: set[str] = set()

    def due_epoch(self, epoch_done: int) -> bool:
        every = self.cfg.train.eval_every
        return every > 0 and epoch_done % every == 0

    def due_images(self, before: int, after: int) -> bool:
        """Whether a multiple of eval_every_kimg thousand images was crossed going from `before` to `after`."""
        every = round(self.cfg.train.eval_every_kimg * 1000)
        return every > 0 and after // every > before // every

    def __call__(self, generator: torch.nn.Module, *, step: int) -> dict[str, float]:
        from ganforge.metrics.evaluation import evaluate, flat_values, make_generate, resolve_batch_size

        was_training = generator.training
        generator.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the small-N warning would repeat every epoch
            record = evaluate(generate=make_generate(generator, z_dim=self.cfg.model.z_dim,
                                                     num_classes=self.num_classes, device=self.device),
                              real_images=self.real, dataset_key=self.dataset_key, metrics=self.metrics,
                              n=self.cfg.train.eval_n, device=self.device, seed=self.cfg.train.seed,
                              batch_size=resolve_batch_size("auto", self.device, cpu=EVAL_BATCH_CPU),
                              split=self.cfg.data.split, n_real=min(len(self.real), 10_000),
                              classifier=self.cfg.data.name, shard=self.shard, real_fingerprint=self.fingerprint)
        generator.train(was_training)
        for name, rec in record["metrics"].items():
            if rec.get("unavailable") and name not in self.reported:
                self.reported.add(name)
                warnings.warn(f"train.eval_metrics: {name} is unavailable: {rec['unavailable']}", stacklevel=2)
        return {f"eval/{k}": v for k, v in flat_values(record).items()}


def improved(values: dict[str, float], best: float) -> Optional[float]:
    """This evaluation's FID if it beats `best`, else None (cls-fid when there is no Inception FID)."""
    for key in FID_KEYS:
        value = values.get(f"eval/{key}")
        if value is not None:
            return value if value < best else None
    return None
