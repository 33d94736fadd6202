"""Membership inference against a run: can an attacker tell its training images from unseen ones?

Two attacks, each giving every image a score (higher: "was in the training set"):
- discriminator score (Hayes et al. 2019, "LOGAN: Membership Inference Attacks Against Generative
  Models", white-box): the trained discriminator's logit D(x) (with the image's label for a
  conditional D); a D that has overfitted scores its own training images higher.
- generated-sample distance (Chen et al. 2020, "GAN-Leaks: A Taxonomy of Membership Inference
  Attacks against Generative Models", full black-box): minus the pixel L2 distance (images in
  0..1) from x to its nearest image among N generated ones; a generator that reproduces its
  training images puts a sample near each of them.
Each is summarised by ROC AUC and the true-positive rate at a 1% false-positive rate (Carlini et
al. 2022, "Membership Inference Attacks From First Principles": what matters is whether *some*
members are identified with confidence, which an average like AUC hides), on balanced members
(the run's training images) and non-members (held-out real images of the same dataset). Beside
each value: the same attack on a reference model that never saw the members, when one is given,
else chance (AUC 0.5, TPR = FPR). ROC curves come from scikit-learn (installed with mlxtend).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ganforge.data.base import ImageData
from ganforge.errors import ConfigError
from ganforge.metrics import audit_metrics as A

FPR = 0.01
N_MAX = 5000        # members and as many non-members, at most (--membership-n)
MIN_EACH = 10       # fewer members or non-members than this say nothing
BATCH = 500
ATTACKS = {
    "discriminator": "Hayes et al. 2019 (LOGAN), white-box: score = D(x), the run's discriminator logit",
    "generated_distance": "Chen et al. 2020 (GAN-Leaks), full black-box: score = -min_j ||x - G(z_j)||_2 over "
                          "the audit's N generated images, in pixels scaled to 0..1 (classes not used)",
}


# --- the formulas ----------------------------------------------------------------------------------

def _labelled(members: torch.Tensor, nonmembers: torch.Tensor):
    import numpy as np

    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return y, np.r_[members.double().cpu().numpy(), nonmembers.double().cpu().numpy()]


def roc_auc(members: torch.Tensor, nonmembers: torch.Tensor) -> float:
    """P(score of a random member > score of a random non-member), ties counting one half."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(*_labelled(members, nonmembers)))


def tpr_at_fpr(members: torch.Tensor, nonmembers: torch.Tensor, fpr: float = FPR) -> float:
    """The largest share of members scored at or above a threshold that at most `fpr` of the
    non-members reach (no interpolation: with fewer than 1/fpr non-members that means none)."""
    from sklearn.metrics import roc_curve

    f, t, _ = roc_curve(*_labelled(members, nonmembers), drop_intermediate=False)
    return float(t[f <= fpr + 1e-12].max())


def null_auc_sd(n_members: int, n_nonmembers: int) -> float:
    """Standard deviation of the AUC of scores that carry no membership signal (the Mann-Whitney U
    statistic's, divided by n1 n0): sqrt((n1 + n0 + 1) / (12 n1 n0))."""
    return math.sqrt((n_members + n_nonmembers + 1) / (12 * n_members * n_nonmembers))


# --- the scores ------------------------------------------------------------------------------------

@torch.inference_mode()
def discriminator_scores(d: nn.Module, images: torch.Tensor, labels: Optional[torch.Tensor], *,
                         device: str | torch.device = "cpu", batch: int = BATCH) -> torch.Tensor:
    """D's logit for uint8 images [N, C, H, W] (scaled to [-1, 1] as in training, no augmentation)."""
    d.eval()
    out = []
    for i in range(0, len(images), batch):
        x = images[i: i + batch].to(device).float().mul(2.0 / 255.0).sub(1.0)
        y = labels[i: i + batch].to(device) if labels is not None else None
        out.append(d(x, y).float().flatten().cpu())
    return torch.cat(out)


def distance_scores(images: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """Minus the pixel L2 distance (0..1 scale) from each image to its nearest generated image."""
    nn_ = A.nearest_neighbours(images.reshape(len(images), -1).float() / 255.0,
                               generated.reshape(len(generated), -1).float() / 255.0)
    return -nn_.distance


# --- what is attacked, and with which images -------------------------------------------------------

@dataclass
class Attacked:
    """One model under attack: its discriminator and how to draw its images."""
    name: str
    discriminator: Optional[nn.Module]     # None: the attack on D is refused, `no_discriminator` says why
    generate: Optional[Callable] = None    # generate(b, gen) -> (uint8, labels); None: use the audit's images
    conditional: bool = False              # D takes the image's label
    no_discriminator: str = ""


@dataclass
class Setup:
    target: Attacked
    members: ImageData                     # the pool members are drawn from: images only the target trained on
    nonmembers: Optional[ImageData]        # None: the attack is refused, `refused` says why
    refused: str = ""
    reference: Optional[Attacked] = None
    n_max: int = N_MAX
    members_from: str = "the run's training images"
    nonmembers_from: str = "held-out real images"
    privacy: Optional[dict] = None


def image_keys(images: torch.Tensor) -> set[bytes]:
    """A digest of every image's bytes: the same image in two sets is found whatever its index."""
    flat = images.reshape(len(images), -1).contiguous().numpy()
    return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat}


def unseen(pool: ImageData, seen: set[bytes]) -> ImageData:
    """The images of `pool` whose bytes are not among `seen`."""
    flat = pool.images.reshape(len(pool), -1).contiguous().numpy()
    keep = torch.tensor([hashlib.blake2b(row.tobytes(), digest_size=16).digest() not in seen for row in flat],
                        dtype=torch.bool)
    if bool(keep.all()):
        return pool
    return ImageData(images=pool.images[keep], labels=pool.labels[keep] if pool.labels is not None else None,
                     class_names=pool.class_names, source=pool.source)


def privacy_of(run_dir: Path) -> dict:
    """What the run's privacy record says (epsilon spent by its latest checkpoint, delta, accountant, ...),
    through the one helper every command uses, or that the run is not private."""
    from ganforge.training.ledger import summary

    private = summary(run_dir)
    if private is None:
        return {"private": False, "note": "trained without differential privacy: these attacks are the only "
                                          "evidence, and they bound nothing"}
    return {"private": True, **private}


# --- the attacks -----------------------------------------------------------------------------------

def _summary(members: torch.Tensor, nonmembers: torch.Tensor) -> dict:
    return {"auc": roc_auc(members, nonmembers), "tpr_at_1pct_fpr": tpr_at_fpr(members, nonmembers)}


def _d_scores(model: Attacked, images: torch.Tensor, labels, order: torch.Tensor, device) -> torch.Tensor:
    # Members and non-members are scored in one shuffled stream, so that a D whose output depends
    # on its batch (batch statistics, minibatch standard deviation) treats both sides alike.
    assert model.discriminator is not None
    s = discriminator_scores(model.discriminator, images[order], labels[order] if model.conditional else None,
                             device=device)
    out = torch.empty_like(s)
    out[order] = s
    return out


def _generated(model: Attacked, n: int, seed: int, batch_size: int) -> torch.Tensor:
    assert model.generate is not None
    gen, parts = torch.Generator().manual_seed(seed), []
    for i in range(0, n, batch_size):
        parts.append(model.generate(min(batch_size, n - i), gen)[0].cpu())
    return torch.cat(parts)


def attack(setup: Setup, *, generated: torch.Tensor, seed: int = 0, device: str | torch.device = "cpu",
           batch_size: int = 250, log: Optional[Callable[[str], None]] = None) -> dict:
    """The `membership` section of an audit: both attacks on the target (and the reference), on
    the same balanced members and non-members; `generated` are the target's N generated images."""
    if setup.nonmembers is None:
        return {"not_applicable": setup.refused, "privacy": setup.privacy}
    n = min(setup.n_max, len(setup.members), len(setup.nonmembers))
    if n < MIN_EACH:
        return {"not_applicable": f"only {n} members or non-members are available; the attacks need at least "
                                  f"{MIN_EACH} of each", "privacy": setup.privacy}
    mem, non = setup.members, setup.nonmembers
    mi, ni = A.random_subset(len(mem), n, seed + 3), A.random_subset(len(non), n, seed + 4)
    images = torch.cat([mem.images[mi], non.images[ni]])
    labels = torch.cat([mem.labels[mi], non.labels[ni]]) if mem.labels is not None and non.labels is not None \
        else None
    order = A.random_subset(2 * n, 2 * n, seed + 5)
    models = {"target": setup.target, **({"reference": setup.reference} if setup.reference else {})}
    scores: dict[str, dict[str, Any]] = {a: {} for a in ATTACKS}
    for role, model in models.items():
        if model.discriminator is not None:
            if model.conditional and labels is None:
                raise ConfigError("the discriminator is conditional but the members or non-members have no labels")
            scores["discriminator"][role] = _d_scores(model, images, labels, order, device)
        else:
            scores["discriminator"][role] = model.no_discriminator or "no discriminator"
        if log:
            log(f"  membership: nearest of {2 * n} real images among {len(generated)} generated ({role})")
        fake = generated if role == "target" else _generated(model, len(generated), seed, batch_size)
        scores["generated_distance"][role] = distance_scores(images, fake)
    sd = null_auc_sd(n, n)
    out: dict[str, Any] = {
        "n_members": n, "n_nonmembers": n, "members": setup.members_from, "nonmembers": setup.nonmembers_from,
        "seed": seed, "fpr": FPR, "null_auc_sd": sd, "n_generated": len(generated),
        "reference_run": setup.reference.name if setup.reference else None, "privacy": setup.privacy}
    for name, by_role in scores.items():
        out[name] = _attack_record(name, by_role, n, sd)
    return out


def _attack_record(name: str, by_role: dict, n: int, sd: float) -> dict:
    target = by_role["target"]
    if isinstance(target, str):
        return {"paper": ATTACKS[name], "not_applicable": target}
    entry: dict[str, Any] = {"paper": ATTACKS[name], **_summary(target[:n], target[n:])}
    ref = by_role.get("reference")
    if isinstance(ref, torch.Tensor):
        entry["reference"] = _summary(ref[:n], ref[n:])
    elif isinstance(ref, str):
        entry["reference"] = {"not_applicable": ref}
    else:
        entry["chance"] = {"auc": 0.5, "tpr_at_1pct_fpr": FPR,
                           "note": "no reference run: 0.5 AUC and 1% TPR at 1% FPR are what chance gives"}
    # Above the baseline by more than 3 null standard deviations (sqrt(2) more against a reference,
    # whose AUC is as noisy as the target's): chance alone does that about once in a thousand.
    base = entry.get("reference", {}).get("auc", 0.5)
    margin = 3 * sd * (math.sqrt(2) if "reference" in entry and "auc" in entry["reference"] else 1)
    entry["leaks"] = bool(entry["auc"] > base + margin)
    return entry


def verdict(section: dict) -> str:
    """One line: each attack's AUC and TPR beside its baseline."""
    if "not_applicable" in section:
        return f"not applicable: {section['not_applicable']}"
    parts = []
    for name in ATTACKS:
        e = section[name]
        if "not_applicable" in e:
            parts.append(f"{name}: not applicable ({e['not_applicable']})")
            continue
        base = e.get("reference", e.get("chance", {}))
        against = ("reference run" if "reference" in e else "chance") if "auc" in base else None
        state = "MEMBERS DISTINGUISHABLE" if e["leaks"] else "no signal above " + (against or "chance")
        parts.append(f"{name}: {state} (AUC {e['auc']:.3f}, TPR {e['tpr_at_1pct_fpr']:.1%} at 1% FPR"
                     + (f"; {against} {base['auc']:.3f}, {base['tpr_at_1pct_fpr']:.1%}" if against else "") + ")")
    return f"{section['n_members']} members vs {section['n_nonmembers']} non-members; " + "; ".join(parts)


# --- from run folders ------------------------------------------------------------------------------

def discriminator_of(model: Any, device: str | torch.device = "cpu") -> tuple[Optional[nn.Module], str]:
    """(the run's discriminator in eval mode or None, why not) for a loaded
    `outputs.model.Model`."""
    from ganforge.models import build_models
    from ganforge.training.checkpoint import load_checkpoint, split_prefix

    tensors, state = load_checkpoint(Path(model.checkpoint))
    # Opacus wraps a privately trained module in a GradSampleModule, whose state names start `_module.`.
    weights = {k.removeprefix("_module."): v for k, v in split_prefix(tensors, "D.").items()}
    if not weights:
        return None, f"{model.checkpoint} holds no discriminator weights"
    shape = state["data_shape"]
    _, d = build_models(model.cfg.model, channels=shape["channels"], size=shape["size"],
                        num_classes=shape["num_classes"])
    try:
        d.load_state_dict(weights)
    except RuntimeError:
        return None, (f"the discriminator weights in {model.checkpoint} do not fit the {model.cfg.model.arch} "
                      f"discriminator its config builds")
    return d.to(device).eval(), ""


def _describe(cfg: Any) -> str:
    d = cfg.data
    return f"{d.name} {d.split}" + (f", first {d.limit}" if d.limit else "")


def _attacked(model: Any, device, *, own: bool) -> Attacked:
    from ganforge.metrics.evaluation import make_generate

    d, why = discriminator_of(model, device)
    generate = None if own else make_generate(model.g, z_dim=model.z_dim, num_classes=model.num_classes,
                                              device=device)
    return Attacked(str(model.run_dir), d, generate, conditional=model.conditional, no_discriminator=why)


def setup_for_run(model: Any, *, train: ImageData, heldout: ImageData, split: str, reference: Optional[Path] = None,
                  data_dir: Optional[str] = None, device: str | torch.device = "cpu", n_max: int = N_MAX) -> Setup:
    """Members: the run's training images (`train`, as it trained: split and data.limit); non-members:
    the held-out `split`, less any image that is also a training image. With a `reference` run, both
    pools also lose every image the reference trained on, so that it never saw either side."""
    from ganforge.data import load_dataset
    from ganforge.outputs.model import load_model

    target = _attacked(model, device, own=True)
    members, nonmembers = train, unseen(heldout, image_keys(train.images))
    members_from = f"the run's training images ({_describe(model.cfg)}: {len(train)})"
    nonmembers_from = f"the {split} split ({len(nonmembers)} images not in the training set)"
    ref = None
    if reference is not None:
        ref_model = load_model(reference, device=device)
        if (ref_model.channels, ref_model.size) != (model.channels, model.size):
            raise ConfigError(f"--reference-run {reference}: its images are {ref_model.channels}x{ref_model.size}px, "
                              f"the audited run's {model.channels}x{model.size}px; a reference must make the same")
        if ref_model.conditional and train.labels is None:
            raise ConfigError(f"--reference-run {reference}: a conditional model, but the members have no labels")
        ref = _attacked(ref_model, device, own=False)
        c = ref_model.cfg.data
        same = c.name == model.cfg.data.name
        seen = load_dataset(name=c.name, root=(data_dir if same and data_dir else c.root), split=c.split,
                            size=c.size or model.size, limit=c.limit)
        keys = image_keys(seen.images)
        members, nonmembers = unseen(members, keys), unseen(nonmembers, keys)
        for pool, what in ((members, "training images of the audited run"), (nonmembers, f"{split} images")):
            if len(pool) < MIN_EACH:
                raise ConfigError(f"--reference-run {reference}: it trained on {_describe(ref_model.cfg)}, which "
                                  f"leaves {len(pool)} {what} it never saw (at least {MIN_EACH} needed); train the "
                                  f"reference on other images (another split or a data.limit)")
        members_from += f", less those the reference trained on ({len(members)} left)"
        nonmembers_from += f", less those the reference trained on ({len(nonmembers)} left)"
    return Setup(target=target, members=members, nonmembers=nonmembers, reference=ref, n_max=n_max,
                 members_from=members_from, nonmembers_from=nonmembers_from, privacy=privacy_of(Path(model.run_dir)))
