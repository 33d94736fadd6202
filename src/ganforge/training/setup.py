"""How a run's parts are built from its config, in the order that refuses bad input before costly work.

1. `device_and_precision`: threads, determinism, the device (under torchrun the GPU of the local
   rank), the mixed precision it runs natively, and the settings determinism cannot honour there;
   unknown loss or optimizer names; what a private run (`privacy`) refuses from its config alone.
2. `check_models`: the models' size and memory, estimated on PyTorch's meta device (nothing is
   allocated), whether D may be penalised and whether Opacus can give per-sample gradients
   through it (a private run); all before the data set is decoded, which can take
   minutes for a large folder.
3. `load_data`: the decoded uint8 set (memory-mapped, one decode per host) and where it will live;
   a private run's delta against the set's size.
4. `models`: G, D and the EMA copy of G, built once for the data's real shape, with the same
   weights on every rank; `optimizers`, `fast_modules` (torch.compile) and `batches` around them.
"""

from __future__ import annotations

import copy
from typing import Any, Optional, cast

import torch
from torch import nn

from ganforge import precision, runtime
from ganforge.config import PRESETS, Config, preset_config
from ganforge.data import DATASETS, ImageData, load_dataset
from ganforge.data.batches import DeviceBatches, PoissonBatches, choose_placement, describe
from ganforge.errors import ConfigError
from ganforge.models import build_models
from ganforge.models.common import label_parameters
from ganforge.runtime import Dist
from ganforge.training import capacity, privacy
from ganforge.training.ada import AdaptiveAugment
from ganforge.training.augment import DiffAugment
from ganforge.training.losses import LOSSES, penalises_gradients
from ganforge.training.optim import OPTIMIZERS


def device_and_precision(cfg: Config, dist: Dist) -> tuple[torch.device, precision.Precision]:
    t = cfg.train
    runtime.configure(t, world_size=dist.world_size)
    device = runtime.pick_device(t.device, local_rank=dist.local_rank, world_size=dist.world_size)
    # A private run trains in fp32: `auto` would pick half precision on a GPU (privacy.check_config).
    chosen = precision.choose("off" if cfg.privacy.enabled and t.amp == "auto" else t.amp, device)
    conflict = runtime.deterministic_conflict(cfg, device)
    if conflict:
        raise ConfigError(conflict)
    LOSSES.get(cfg.loss.name)        # unknown names are refused before the data loads
    OPTIMIZERS.get(cfg.optim.name)
    privacy.check_config(cfg, dist.world_size)
    note = budget_note(cfg, device)
    if note and dist.is_main:
        print(note, flush=True)
    return device, chosen


def budget_note(cfg: Config, device: torch.device) -> str:
    """Where a preset's epochs will not fit its time budget on this kind of CPU: one line (ganforge.budget)."""
    import ganforge.presets  # noqa: F401  (fills PRESETS)

    timing = PRESETS.get(cfg.preset).timing if cfg.preset in PRESETS.names() else None
    if timing is None or device.type != "cpu" or cfg.train.amp != "auto":  # timed as the preset runs on a CPU
        return ""
    return timing.note(cfg.preset, preset_epochs=preset_config(cfg.preset).train.epochs, epochs=cfg.train.epochs,
                       native_bf16=precision.cpu_native_bf16())


def check_models(cfg: Config, *, device: torch.device, half_precision: bool, dist: Dist) -> capacity.Estimate:
    """The start-up estimate for the dataset's declared shape (the models' own refusals included), and
    the one combination of losses and layers that cannot work: a per-sample gradient penalty with
    batch norm in D, which mixes the samples of a batch."""
    spec = DATASETS.get(cfg.data.name)
    # A folder's classes are known only after listing it: assume two for this check.
    classes = spec.num_classes or (2 if cfg.model.conditional and spec.name == "folder" else 0)
    est = capacity.check_start(cfg, channels=spec.channels, size=cfg.data.size or spec.native_size,
                               num_classes=classes, device=device, dist=dist, half_precision=half_precision)
    privacy.check_discriminator(cfg, channels=spec.channels, size=cfg.data.size or spec.native_size,
                                num_classes=classes)
    if penalises_gradients(cfg.loss) and est.d_batch_norm:
        what = (f"loss.name={cfg.loss.name}" if LOSSES.get(cfg.loss.name).gradient_penalty
                else "loss.r1_gamma / loss.r2_gamma")
        raise ConfigError(f"{what} penalises each sample's gradient, which batch norm in the "
                          f"discriminator mixes across the batch; use model.d_norm=layer or none "
                          f"(architecture {cfg.model.arch!r})")
    return est


def load_data(cfg: Config, *, device: torch.device, dist: Dist) -> tuple[ImageData, str]:
    """The decoded set and its placement (`device` or `host`), decided before any model takes device
    memory, so a forced device copy that cannot fit is refused first."""
    d = cfg.data
    data = load_dataset(name=d.name, root=d.root, split=d.split, size=d.size, limit=d.limit, dist=dist)
    privacy.check_data(cfg, len(data))
    return data, agreed_placement(d.placement, share=d.device_share, nbytes=data.images.nbytes, device=device,
                                  dist=dist)


def agreed_placement(setting: str, *, share: float, nbytes: int, device: torch.device, dist: Dist) -> str:
    """One placement for every rank: each rank judges its own device's free memory, then all take the
    first refusal (so no rank goes on to wait for one that stopped) or, when any rank keeps the set in
    host memory, host (batches are bit-identical either way, so this only costs speed)."""
    try:
        mine = ("ok", choose_placement(setting, share=share, nbytes=nbytes, device=device))
    except ConfigError as exc:
        mine = ("error", str(exc))
    verdicts = dist.gather(mine)
    refusal = next((text for kind, text in verdicts if kind == "error"), None)
    if refusal is not None:
        raise ConfigError(refusal)
    return "host" if any(text == "host" for _, text in verdicts) else "device"


def data_info(data: ImageData) -> dict:
    """What a checkpoint records of the data, to refuse a resume on data of another shape."""
    return {"channels": data.channels, "size": data.size, "num_classes": data.num_classes,
            "class_names": list(data.class_names), "source": data.source, "count": len(data)}


def models(cfg: Config, data: ImageData, *, device: torch.device,
           dist: Dist) -> tuple[nn.Module, nn.Module, Optional[nn.Module]]:
    """(G, D, EMA of G or None) on the device, bit-identical on every rank."""
    t = cfg.train
    runtime.seed_everything(t.seed)  # the same initial weights on every rank and in every rerun
    G, D = build_models(cfg.model, channels=data.channels, size=data.size, num_classes=data.num_classes)
    if t.sync_bn and dist.enabled:
        if device.type != "cuda":
            raise ConfigError("train.sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
        G, D = nn.SyncBatchNorm.convert_sync_batchnorm(G), nn.SyncBatchNorm.convert_sync_batchnorm(D)
    G.to(device)
    D.to(device)
    dist.broadcast_modules(G, D)  # identical starting weights on every rank, whatever the RNG did
    if t.channels_last:
        G.to(memory_format=torch.channels_last)
        # A private D stays contiguous: Opacus's per-sample convolution gradients (its as_strided unfold)
        # read channels_last activations as if contiguous, and were measured wrong by a relative 0.9.
        if not cfg.privacy.enabled:
            D.to(memory_format=torch.channels_last)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.model.ema_kimg > 0 else None
    return G, D, G_ema


def optimizers(cfg: Config, G: nn.Module, D: nn.Module,
               device: torch.device) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    build, o = OPTIMIZERS.get(cfg.optim.name), cfg.optim
    d_params: Any = D.parameters()
    label = label_parameters(D)
    labelled = {id(q) for q in label}
    if o.lr_d_label != 1.0 and label:
        # A group of its own, its rate a multiple of D's (optim.set_learning_rate keeps the multiple):
        # under DP-SGD the label's parameters can have a clean signal and still move too slowly at lr_d.
        d_params = [{"params": [q for q in D.parameters() if id(q) not in labelled]},
                    {"params": label, "lr": o.lr_d * o.lr_d_label, "lr_mult": o.lr_d_label}]
    return build(G.parameters(), o.lr_g, o, device), build(d_params, o.lr_d, o, device)


def fast_modules(cfg: Config, G: nn.Module, D: nn.Module) -> tuple[nn.Module, nn.Module]:
    """G and D compiled (`train.compile`), sharing the eager modules' weights; else the modules themselves."""
    t = cfg.train
    if not t.compile:
        return G, D
    # config.validate has refused an unknown backend before any data was read.
    # torch.compile of a module returns a module (an OptimizedModule); its stubs say only "a callable".
    return (cast(nn.Module, torch.compile(G, backend=t.compile_backend)),
            cast(nn.Module, torch.compile(D, backend=t.compile_backend)))


def augmentation(cfg: Config, device: torch.device) -> tuple[DiffAugment, Optional[AdaptiveAugment]]:
    """DiffAugment of the configured policy; with data.ada_target, applied with ADA's tuned probability."""
    ada = AdaptiveAugment(cfg.data, device=device) if AdaptiveAugment.enabled(cfg.data) else None
    return DiffAugment(cfg.data.augment, p=None if ada is None else ada.p), ada


def batches(cfg: Config, data: ImageData, placement: str, *, device: torch.device, dist: Dist, num_classes: int,
            private: Optional[privacy.PrivateDiscriminator] = None) -> DeviceBatches:
    """Shuffled batches, or for a private run Poisson-sampled ones seeded by its ledger."""
    t = cfg.train
    kw: dict[str, Any] = dict(batch_size=t.batch_size, seed=t.seed, device=device, rank=dist.rank,
                              world_size=dist.world_size, hflip=cfg.data.hflip, placement=placement)
    labels = data.labels if num_classes else None
    out = (DeviceBatches(data.images, labels, **kw) if private is None else
           PoissonBatches(data.images, labels, key=lambda: private.ledger.seed(privacy.BATCHES), **kw))
    if dist.is_main:
        print(describe(data.images, placement=placement, device=device, mapped=data.mapped), flush=True)
    return out


def evaluator(cfg: Config, data: ImageData, *, device: torch.device, dist: Dist, num_classes: int):
    """The periodic evaluation, or None when train.eval_every(_kimg) asks for none. Built on every rank:
    under torchrun the ranks share its generated images."""
    if not (cfg.train.eval_every or cfg.train.eval_every_kimg):
        return None
    from ganforge.training.periodic_eval import PeriodicEval  # the feature networks load only when asked

    return PeriodicEval(cfg, data, device=device, num_classes=num_classes, shard=dist.enabled)
