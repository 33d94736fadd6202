"""Typed configuration: a tree of dataclasses, named presets, and type-checked `--set key=value`.

A preset is a function returning a `Config`; `resolve_config` applies the command-line overrides
and refuses unknown keys and ill-typed values with one line naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ganforge import fsutil
from ganforge.budget import CpuTiming
from ganforge.errors import ConfigError
from ganforge.registry import Registry


@dataclass
class DataConfig:
    name: str = "mnist-5k"          # a key of ganforge.data.DATASETS
    root: Optional[str] = None      # --data-dir: where the dataset's files are
    split: str = "train"
    size: int = 0                   # image side in pixels; 0 keeps the dataset's own size
    limit: int = 0                  # use only the first N images; 0 uses all
    hflip: bool = False             # random horizontal flips, drawn batch-wise on the device
    augment: str = ""               # DiffAugment policy for every image D sees: translation,cutout,color
    ada_target: float = 0.0         # adaptive augmentation (ADA): apply `augment` with a probability p tuned
                                    # so that E[sign(D(real))] stays near this target (0.6 in the paper); 0 = off
    ada_kimg: float = 100.0         # ADA: thousands of real images for p to go from 0 to 1 at the fastest
    placement: str = "auto"         # where the uint8 training set lives: auto | device | host (data/batches.py)
    device_share: float = 0.5       # auto: copy the set onto a CUDA device only within this share of its memory


@dataclass
class ModelConfig:
    arch: str = "dcgan"             # a key of ganforge.models.MODELS
    z_dim: int = 100
    g_channels: int = 64            # width of the generator's last hidden layer
    d_channels: int = 64            # width of the discriminator's first layer
    conditional: bool = False       # class-conditional G and D (needs a labelled dataset)
    dropout: float = 0.0            # discriminator dropout
    d_norm: str = "batch"           # for arch=dcgan, D's normalisation: batch | layer | none (wgan-gp: not batch)
    upsample: str = "nearest"       # for arch=upsample: nearest | bilinear
    arch_d: str = ""                # D's architecture when it differs from G's (a key of MODELS); "" = arch
    d_sn: bool = False              # spectral normalisation of every D layer (Miyato et al. 2018)
    d_mbstd: int = 0                # for dcgan/resnet D: minibatch standard deviation over groups of this size; 0 = off
    d_condition: str = "projection"  # how a conditional dcgan D sees the label: projection | input (label maps)
                                    # | classifier (an auxiliary class head, AC-GAN)
    ema_kimg: float = 0.0           # half-life of G's exponential moving average in thousands of images; 0 = off
    ema_rampup: float = 0.05        # early on the half-life is at most this fraction of the images seen; 0 = none


@dataclass
class LossConfig:
    name: str = "bce"               # a key of ganforge.training.losses.LOSSES
    label_smoothing: float = 0.0    # one-sided: real targets become 1 - label_smoothing
    label_flip: float = 0.0         # probability of swapping real and fake targets for D
    gp_weight: float = 10.0         # gradient-penalty weight (wgan-gp)
    n_critic: int = 1               # discriminator steps per generator step
    r1_gamma: float = 0.0           # zero-centred penalty on real images, gamma/2 E|grad D(x)|^2 (Mescheder 2018)
    r2_gamma: float = 0.0           # the same on generated images (Roth et al. 2017; R3GAN uses both)
    reg_every: int = 1              # apply R1/R2 every N D steps, scaled by N (lazy regularisation, Karras 2020)
    class_weight: float = 1.0       # weight of the class head's cross-entropy in D's loss (d_condition=classifier)
    class_weight_g: float = 1.0     # and in G's loss, on the asked-for labels
    mode_seeking: float = 0.0       # weight of MSGAN's mode-seeking term in G's loss (Mao et al. 2019); 0: off


@dataclass
class OptimConfig:
    name: str = "adam"              # adam | sgd
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    lr_d_label: float = 1.0         # D's label parameters (class head or embedding, label maps) learn at this x lr_d
    beta1: float = 0.5
    beta2: float = 0.999
    momentum: float = 0.0           # sgd only
    lr_decay_start: float = 1.0     # fraction of training after which both learning rates fall linearly; 1 = constant
    lr_decay_to: float = 0.0        # the learning rates' final fraction of their base value


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int = 0              # stop after this many steps (batches); 0 means no limit
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda | mps
    deterministic: bool = False     # bit-exact reruns and resumes (slower kernels)
    log_every: int = 25             # steps between metrics.jsonl lines (and the only host syncs)
    sample_every: int = 1           # epochs between sample grids
    checkpoint_every: int = 1       # epochs between checkpoints
    checkpoint_steps: int = 0       # also checkpoint every N steps inside an epoch; 0 turns it off
    keep_checkpoints: int = 3
    num_samples: int = 64           # fixed latent vectors drawn for every snapshot (8x8 grid)
    amp: str = "auto"               # auto (bf16 where native, fp16 on CUDA 7.x, else fp32) | bf16 | fp16 | off
    channels_last: bool = True
    compile: bool = False           # torch.compile the generator and discriminator
    compile_backend: str = "inductor"  # torch.compile backend (aot_eager compiles fast and needs no C++ compiler)
    threads: int = 0                # CPU threads; 0 uses every core
    eval_every: int = 0             # epochs between evaluations logged to metrics.jsonl; 0 turns it off
    eval_every_kimg: float = 0.0    # also evaluate every this many thousand real images; 0 turns it off
    eval_metrics: str = "auto"      # comma-separated metric keys; auto: classifier metrics on MNIST-like data, else fid
    eval_n: int = 1000              # generated images per evaluation (small: a trend, not a paper number)
    sync_bn: bool = False           # under torchrun on CUDA: SyncBatchNorm instead of per-rank statistics
    max_rollbacks: int = 3          # non-finite loss or weight: roll back at most this many times
    rollback_lr_factor: float = 0.5 # each rollback multiplies both learning rates by this


@dataclass
class PrivacyConfig:
    """DP-SGD on the discriminator (Abadi et al. 2016), accounted by Opacus; see training/privacy.py."""
    enabled: bool = False
    epsilon: float = 10.0           # the budget: the run stops before a D step would spend more
    delta: float = 1e-5             # must be below 1 / the number of training images
    max_grad_norm: float = 1.0      # C: each image's gradient is clipped to this L2 norm
    clip_generated: bool = True     # clip each generated image's gradient to C as well (no noise: public data)
    label_clip: float = 0.0         # share of C^2 for D's label parameters, clipped apart from the rest (0: one norm)
    accountant: str = "rdp"         # Opacus's accountant: rdp | prv
    noise_multiplier: float = 0.0   # sigma; 0: Opacus computes it from epsilon for the planned D steps (written here)
    sampling_seed: int = 0          # 0: a secret seed for the batches and the noise, kept in checkpoints only
    adaptive_d_steps: bool = False  # Bie et al. 2023: raise the D steps per G step as D's accuracy on fakes falls
    d_steps_threshold: float = 0.7  # ... when the EMA of D's accuracy on generated images is at most this
    d_steps_grace: int = 200        # ... after this many G steps at the current rate
    d_steps_beta: float = 0.99      # ... the EMA's decay per G step


@dataclass
class Config:
    preset: str = "demo"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


SECTIONS = ("data", "model", "loss", "optim", "train", "privacy")


@dataclass(frozen=True)
class Preset:
    name: str
    source: str                     # the paper it reproduces (and the founding document, by title)
    build: Callable[[], Config]
    timing: Optional[CpuTiming] = None  # minutes on each kind of CPU, for a preset with a time budget


PRESETS: Registry[Preset] = Registry("preset")


def register_preset(name: str, *, source: str,
                    timing: Optional[CpuTiming] = None) -> Callable[[Callable[[], Config]], Callable[[], Config]]:
    def add(build: Callable[[], Config]) -> Callable[[], Config]:
        PRESETS.register(name)(Preset(name=name, source=source, build=build, timing=timing))
        return build

    return add


def preset_config(name: str) -> Config:
    import ganforge.presets  # noqa: F401  (fills PRESETS)

    cfg = PRESETS.get(name).build()
    cfg.preset = name
    return cfg


# ----------------------------------------------------------------------------- overrides


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return {type(None): "none", bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def parse_value(key: str, text: str, tp: Any) -> Any:
    """Turn the command-line text for `key` into a value of type `tp`, or raise ConfigError."""
    if typing.get_origin(tp) is typing.Union:
        args = typing.get_args(tp)
        if type(None) in args and text.strip().lower() in ("none", "null", ""):
            return None
        (tp,) = [a for a in args if a is not type(None)]
    raw = text.strip()
    try:
        if tp is bool:
            low = raw.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            value = float(raw) if any(c in raw.lower() for c in ".e") else int(raw, 0)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
        if tp is str:
            return raw
    except (ValueError, OverflowError):
        pass
    raise ConfigError(f"{key}={text!r}: expected {_type_name(tp)}")


def _lookup(cfg: Config, key: str) -> tuple[Any, str, str]:
    """Find the dataclass holding `key` ("section.field" or a field name unique across sections)."""
    parts = key.split(".")
    if len(parts) == 2 and parts[0] in SECTIONS:
        section = getattr(cfg, parts[0])
        if parts[1] in _fields(section):
            return section, parts[1], key
    elif len(parts) == 1:
        hits = [s for s in SECTIONS if parts[0] in _fields(getattr(cfg, s))]
        if len(hits) == 1:
            return getattr(cfg, hits[0]), parts[0], f"{hits[0]}.{parts[0]}"
        if len(hits) > 1:
            raise ConfigError(f"{key!r} is ambiguous; write one of: {', '.join(f'{s}.{key}' for s in hits)}")
    raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(all_keys(cfg))}")


def all_keys(cfg: Config) -> list[str]:
    return [f"{s}.{f}" for s in SECTIONS for f in _fields(getattr(cfg, s))]


def key_type(cfg: Config, key: str) -> tuple[str, Any]:
    """The full name of `key` ("section.field", or a field name unique across sections) and its type;
    an unknown or ambiguous key raises ConfigError naming the valid keys."""
    section, name, full = _lookup(cfg, key.strip())
    return full, typing.get_type_hints(type(section))[name]


def apply_override(cfg: Config, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, for example train.epochs=5")
    key, text = assignment.split("=", 1)
    section, name, full = _lookup(cfg, key.strip())
    hints = typing.get_type_hints(type(section))
    setattr(section, name, parse_value(full, text, hints[name]))


def validate(cfg: Config) -> None:
    """Range checks that do not need the dataset; model/data compatibility is checked at build."""
    t = cfg.train
    checks = [
        (t.epochs >= 1, "train.epochs must be at least 1"),
        (t.max_steps >= 0, "train.max_steps must be 0 (no limit) or positive"),
        (t.batch_size >= 1, "train.batch_size must be at least 1"),
        (t.log_every >= 1, "train.log_every must be at least 1"),
        (t.sample_every >= 1 and t.checkpoint_every >= 1, "train.sample_every and checkpoint_every must be ≥ 1"),
        (t.keep_checkpoints >= 1, "train.keep_checkpoints must be at least 1"),
        (t.eval_every >= 0 and t.eval_every_kimg >= 0 and t.eval_n >= 2,
         "train.eval_every and train.eval_every_kimg must be ≥ 0 and train.eval_n ≥ 2"),
        (t.checkpoint_steps >= 0 and t.max_rollbacks >= 0, "train.checkpoint_steps and max_rollbacks must be ≥ 0"),
        (0.0 < t.rollback_lr_factor <= 1.0, "train.rollback_lr_factor must be in (0, 1]"),
        (t.num_samples >= 1, "train.num_samples must be at least 1"),
        (t.device in ("auto", "cpu", "cuda", "mps") or t.device.startswith("cuda:"),
         f"train.device={t.device!r}: choose auto, cpu, cuda or mps"),
        (t.amp in ("auto", "bf16", "fp16", "off"), f"train.amp={t.amp!r}: choose auto, bf16, fp16 or off"),
        (cfg.model.z_dim >= 1, "model.z_dim must be at least 1"),
        (cfg.model.ema_kimg >= 0 and cfg.model.ema_rampup >= 0, "model.ema_kimg and model.ema_rampup must be ≥ 0"),
        (cfg.loss.r1_gamma >= 0 and cfg.loss.r2_gamma >= 0, "loss.r1_gamma and loss.r2_gamma must be ≥ 0"),
        (cfg.loss.reg_every >= 1, "loss.reg_every must be at least 1"),
        (cfg.model.d_mbstd >= 0, "model.d_mbstd must be ≥ 0 (a group size; 0 = off)"),
        (0.0 <= cfg.optim.lr_decay_start <= 1.0, "optim.lr_decay_start must be in [0, 1]"),
        (0.0 <= cfg.optim.lr_decay_to <= 1.0, "optim.lr_decay_to must be in [0, 1]"),
        (0.0 <= cfg.model.dropout < 1.0, "model.dropout must be in [0, 1)"),
        (0.0 <= cfg.loss.label_smoothing < 1.0, "loss.label_smoothing must be in [0, 1)"),
        (0.0 <= cfg.loss.label_flip < 0.5, "loss.label_flip must be in [0, 0.5)"),
        (cfg.loss.n_critic >= 1, "loss.n_critic must be at least 1"),
        (cfg.optim.lr_g > 0 and cfg.optim.lr_d > 0, "optim.lr_g and optim.lr_d must be positive"),
        (cfg.data.size >= 0 and cfg.data.limit >= 0, "data.size and data.limit must be ≥ 0"),
        (cfg.data.placement in ("auto", "device", "host"),
         f"data.placement={cfg.data.placement!r}: choose auto, device or host"),
        (0.0 < cfg.data.device_share <= 1.0, f"data.device_share={cfg.data.device_share:g}: must be in (0, 1]"),
        (0.0 <= cfg.data.ada_target < 1.0, f"data.ada_target={cfg.data.ada_target:g}: must be in [0, 1) (0 = off)"),
        (cfg.data.ada_kimg > 0, f"data.ada_kimg={cfg.data.ada_kimg:g}: must be positive"),
        (not cfg.data.ada_target or cfg.data.augment.strip(),
         "data.ada_target needs operations to apply: set data.augment (e.g. translation,cutout,color)"),
        *_privacy_checks(cfg.privacy),
        *_compile_checks(t),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    for key, lo, hi, why in LIMITS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not lo <= value <= hi:
            raise ConfigError(f"{key}={value}: must be between {lo:g} and {hi:g} ({why})")


def _compile_checks(t: TrainConfig) -> list[tuple[bool, str]]:
    # torch._dynamo takes a second or two to import, so only a config that compiles pays for it; the
    # check belongs here so that a misspelt backend is refused before any data is read.
    if not t.compile:
        return []
    import torch._dynamo

    backends = torch._dynamo.list_backends(exclude_tags=())
    return [(t.compile_backend in backends,
             f"train.compile_backend={t.compile_backend!r}: choose one of {', '.join(backends)}")]


def _privacy_checks(p: PrivacyConfig) -> list[tuple[bool, str]]:
    return [
        (p.epsilon > 0 and 0.0 < p.delta < 1.0, "privacy.epsilon must be positive and privacy.delta in (0, 1)"),
        (p.max_grad_norm > 0 and p.noise_multiplier >= 0,
         "privacy.max_grad_norm must be positive and privacy.noise_multiplier ≥ 0 (0: computed)"),
        (0.0 <= p.label_clip < 1.0, "privacy.label_clip must be in [0, 1): the share of C^2 given to D's label "
                                     "parameters (0 clips all of D's gradient to one norm)"),
        (p.accountant in ("rdp", "prv"), f"privacy.accountant={p.accountant!r}: choose rdp or prv (Opacus's)"),
        (0.0 < p.d_steps_threshold < 1.0 and 0.0 <= p.d_steps_beta < 1.0 and p.d_steps_grace >= 1,
         "privacy.d_steps_threshold must be in (0, 1), privacy.d_steps_beta in [0, 1) and privacy.d_steps_grace ≥ 1"),
        (0 <= p.sampling_seed < 2**63, "privacy.sampling_seed must be in [0, 2^63) (0: a secret one)"),
    ]


# Values that pass the type check but not the libraries below: (key, lowest, highest, why).
LIMITS = (
    ("optim.beta1", 0.0, 0.999999, "Adam's decay rates lie in [0, 1)"),
    ("optim.beta2", 0.0, 0.999999, "Adam's decay rates lie in [0, 1)"),
    ("optim.momentum", 0.0, 0.999999, "SGD momentum lies in [0, 1)"),
    ("optim.lr_g", 0.0, 10.0, "a learning rate above 10 only diverges"),
    ("optim.lr_d", 0.0, 10.0, "a learning rate above 10 only diverges"),
    ("optim.lr_d_label", 0.0, 1000.0, "a multiple of optim.lr_d; 1 learns at lr_d"),
    ("loss.class_weight", 0.0, 1000.0, "1 weighs the class head's cross-entropy like the adversarial loss"),
    ("loss.class_weight_g", 0.0, 1000.0, "1 weighs the class head's cross-entropy like the adversarial loss"),
    ("loss.mode_seeking", 0.0, 1000.0, "Mao et al. 2019 weigh their mode-seeking term 1; 0 turns it off"),
    ("train.seed", 0, 2**32 - 1, "seeds are 32-bit"),
    ("train.threads", 0, 1024, "0 uses every core"),
    # Sizes: far above any published GAN at these resolutions, far below what fails to allocate.
    ("train.batch_size", 1, 65536, "larger batches do not fit in memory"),
    ("train.num_samples", 1, 1024, "the snapshot grid holds at most 32 x 32 images"),
    ("train.eval_n", 2, 1_000_000, "papers use 50,000"),
    ("model.z_dim", 1, 4096, "larger latent vectors cannot be allocated with the layers they feed"),
    ("model.g_channels", 1, 1024, "wider layers cannot be allocated"),
    ("model.d_channels", 1, 1024, "wider layers cannot be allocated"),
    ("data.size", 0, 1024, "0 keeps the dataset's own size"),
)


# ----------------------------------------------------------------------------- files


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict, *, origin: str = "config") -> Config:
    """Rebuild a Config from `to_dict` output, refusing unknown keys (older files get defaults)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(data).__name__}")
    cfg = Config()
    data = _upgrade(data)
    for key, value in data.items():
        if key in ("preset", "description"):
            setattr(cfg, key, str(value))
            continue
        if key not in SECTIONS or not isinstance(value, dict):
            raise ConfigError(f"{origin}: unknown section {key!r}; valid: preset, description, {', '.join(SECTIONS)}")
        section = getattr(cfg, key)
        hints = typing.get_type_hints(type(section))
        for name, v in value.items():
            if name not in hints:
                raise ConfigError(f"{origin}: unknown key {key}.{name}")
            setattr(section, name, parse_value(f"{key}.{name}", "none" if v is None else str(v), hints[name]))
    return cfg


def _upgrade(data: dict) -> dict:
    """Configs written before `model.ema_kimg` held `model.ema`, a decay per generator step: same horizon."""
    model = data.get("model")
    if not isinstance(model, dict) or "ema" not in model:
        return data
    model = dict(model)
    decay = float(model.pop("ema") or 0.0)
    if 0.0 < decay < 1.0:
        train, loss = data.get("train") or {}, data.get("loss") or {}
        per_update = int(train.get("batch_size", 64)) * int(loss.get("n_critic", 1))
        model["ema_kimg"] = per_update * math.log(0.5) / math.log(decay) / 1000
    return {**data, "model": model}


def save_yaml(cfg: Config, path: Path) -> None:
    fsutil.write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_yaml(path: Path) -> Config:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.__class__.__name__})") from None
    return from_dict(data, origin=str(path))


def format_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip()
