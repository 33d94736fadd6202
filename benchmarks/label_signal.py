"""How much of D's per-image gradient carries the label: a diagnosis of conditional private training.

    python -m benchmarks.label_signal RUN_DIR [--checkpoint DIR] [--images 32] [--test 2000]

Under DP-SGD (Abadi et al. 2016) each real image's gradient of D's loss is clipped as a whole to
`privacy.max_grad_norm`, so a term whose gradient is small next to the others gets only its share of
that norm, against noise of the full norm on every coordinate. For a run whose D has an auxiliary
class head (`model.d_condition=classifier`, AC-GAN, Odena et al. 2017) this prints, from one of its
checkpoints (for any other conditional D, a projection or label maps, what needs no head: D's reading
below, the probe, G's adversarial gradient and the variety):
- the median norm, over `--images` training images taken one at a time, of the gradient of D's
  adversarial term on real images and of the class head's cross-entropy, and the cross-entropy's
  share of their sum at the run's `loss.class_weight` (the share one norm for all of D gives it;
  `privacy.label_clip` clips the head apart, to a norm of its own);
- the class head's accuracy on the first `--test` images of the test split (of the training split
  for a data set without one), chance being 1/K: whether the label pathway has learnt anything at all.
  A D without a head is read as a classifier the same way: each image gets the label whose logit
  D(x, y) is highest (for a projection D, Miyato & Koyama 2018, the class embedding's inner product
  with the image's features decides it, the rest of the logit being the same for every label);
- beside it, a linear probe's accuracy on the same features (D's last maps pooled over positions,
  what the head or the projection reads), fitted without noise on `--probe` training images: the most this head could
  reach on D's features as they are, so a head far below it is held back by its own training (its
  share of the clipped gradient, its learning rate), not by what D's features know;
- G's side, on `--images` generated images (the run's G, uniform labels): the median norm of the
  gradient, with respect to each generated image, of G's adversarial term and of its cross-entropy on
  the asked-for label at `loss.class_weight_g` (a class term far above the adversarial one pulls
  every latent of a class to the one image the head likes best, AC-GAN's known loss of variety), the
  head's accuracy on them, and their variety within a class: the mean pixel distance between two
  generated images of the same class over that between two training images of the same class
  (1 for as varied as the data, near 0 for one image per class).
Nothing is written; it reads the checkpoint and the data set only.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from torch.nn import functional as F


def _pooled_features(d: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What the class head or the projection reads for these uint8 images: D's last maps pooled over
    positions, [B, ch] (the head averages, the projection sums: the same up to a scale the probe removes)."""
    seen = []
    hook = d.project.register_forward_pre_hook(lambda _m, args: seen.append(args[1]))
    try:
        with torch.no_grad():  # read with label 0: only label maps at D's input make the features depend on it
            d(images.float() / 127.5 - 1, torch.zeros(len(images), dtype=torch.long))
    finally:
        hook.remove()
    return seen[0]


def class_scores(d: torch.nn.Module, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """D read as a classifier, [B, K]: the class head's logits, or for a D without one its logit D(x, y)
    for every label y."""
    if getattr(d, "classes", None) is not None:
        return d(x, torch.zeros(len(x), dtype=torch.long), with_classes=True)[1]
    return torch.stack([d(x, torch.full((len(x),), k, dtype=torch.long)) for k in range(num_classes)], dim=1)


def _grad_norm(d: torch.nn.Module, loss: torch.Tensor) -> float:
    d.zero_grad(set_to_none=True)
    loss.backward()
    return float(torch.cat([p.grad.flatten() for p in d.parameters() if p.grad is not None]).norm())


def _generator_side(model, d: torch.nn.Module, loss, n: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """G's gradients at its own images (the class term's only with a head) and D's reading of them;
    the images and their labels."""
    from ganforge.outputs.model import generate, labels_for, latents

    labels = labels_for(model, 0, n, None)
    fake = generate(model, latents(0, 0, n, model.z_dim), labels).requires_grad_(True)
    # One batched pass: D has no batch statistics here, so the gradient of the summed per-image
    # losses with respect to image i is image i's own (g_loss is a mean, hence the factor n).
    head = getattr(d, "classes", None) is not None
    logit, scores = d(fake, labels, with_classes=True) if head else (d(fake, labels), None)
    adversarial = torch.autograd.grad(n * loss.g_loss(logit, None), fake, retain_graph=head)[0]
    norm = None
    if scores is not None:
        ce = model.cfg.loss.class_weight_g * F.cross_entropy(scores, labels, reduction="sum")
        norm = float(torch.autograd.grad(ce, fake)[0].flatten(1).norm(dim=1).median())
    else:
        with torch.no_grad():
            scores = class_scores(d, fake.detach(), model.num_classes)
    read = scores.detach().argmax(1)
    stats = {"g_adversarial_grad_norm": float(adversarial.flatten(1).norm(dim=1).median()),
             "g_class_grad_norm": norm, "generated_head_accuracy": float((read == labels).float().mean())}
    return stats, fake.detach(), labels


def within_class_distance(images: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean L2 distance between two different images of the same class, pixels in [-1, 1]."""
    flat, total, pairs = images.float().flatten(1), 0.0, 0
    for k in labels.unique():
        group = flat[labels == k]
        if len(group) > 1:  # the diagonal's zeros are left out of the mean
            total += float(torch.cdist(group, group).sum())
            pairs += len(group) * (len(group) - 1)
    return total / max(pairs, 1)


def linear_probe(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor) -> float:
    """Test accuracy of a multinomial logistic regression (standardised features, L-BFGS, a small L2 penalty)."""
    mean, std = train_f.mean(0), train_f.std(0) + 1e-6
    a, b = (train_f - mean) / std, (test_f - mean) / std
    k = int(train_y.max()) + 1
    w = torch.zeros(a.shape[1], k, requires_grad=True)
    bias = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, train_y) + 1e-4 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + bias).argmax(1) == test_y).float().mean())


def _discriminator_side(d: torch.nn.Module, train, cfg, loss, images: int) -> tuple[float, float | None]:
    """The median per-image gradient norm of D's adversarial term on real images, and of the class
    head's cross-entropy (None without a head), one image at a time: its own gradient, as DP-SGD clips it."""
    head = getattr(d, "classes", None) is not None
    adversarial, classes = [], []
    for i in range(images):
        x, y = train.images[i:i + 1].float() / 127.5 - 1, train.labels[i:i + 1]
        logit = d(x, y)
        adversarial.append(_grad_norm(d, loss.d_loss(logit, logit.detach(), cfg.loss)))
        if head:
            classes.append(_grad_norm(d, F.cross_entropy(d(x, y, with_classes=True)[1], y)))
    return statistics.median(adversarial), statistics.median(classes) if head else None


def label_signal(run_dir: Path, *, checkpoint: Path | None = None, images: int = 32, test: int = 2000,
                 probe: int = 5000) -> dict:
    from ganforge.data import DATASETS, load_dataset
    from ganforge.metrics.membership import discriminator_of
    from ganforge.outputs.model import load_model
    from ganforge.training.losses import LOSSES

    model = load_model(run_dir, checkpoint=checkpoint)
    d, why = discriminator_of(model)
    if d is None or not model.num_classes:
        raise SystemExit(f"{run_dir}: {why or 'an unconditional model: its discriminator takes no label'}")
    cfg, loss = model.cfg, LOSSES.get(model.cfg.loss.name)
    held_out = "test" if "test" in DATASETS.get(cfg.data.name).splits else "train"
    data = {split: load_dataset(name=cfg.data.name, root=cfg.data.root, split=split, size=cfg.data.size)
            for split in {"train", held_out}}
    train = data["train"]
    adv, ce = _discriminator_side(d, train, cfg, loss, images)
    x, y = data[held_out].images[:test].float() / 127.5 - 1, data[held_out].labels[:test]
    with torch.no_grad():
        accuracy = float((class_scores(d, x, model.num_classes).argmax(1) == y).float().mean())
    probed = (linear_probe(_pooled_features(d, train.images[:probe]), train.labels[:probe],
                           _pooled_features(d, data[held_out].images[:test]), y)
              if probe and hasattr(d, "project") else None)
    w = cfg.loss.class_weight
    g_side, fake, fake_labels = _generator_side(model, d, loss, images * 8)
    real = train.images[:images * 8].float() / 127.5 - 1
    variety = within_class_distance(fake, fake_labels) / within_class_distance(real, train.labels[:images * 8])
    return {"checkpoint": str(model.checkpoint), "adversarial_grad_norm": adv, "class_grad_norm": ce,
            "class_weight": w, "class_share": None if ce is None else w * ce / (adv + w * ce),
            "head_accuracy": accuracy, "has_head": ce is not None,
            **g_side, "class_weight_g": cfg.loss.class_weight_g, "generated_variety": variety,
            "probe_accuracy": probed, "probe_images": probe, "accuracy_split": held_out,
            "chance": 1 / data[held_out].num_classes, "label_clip": cfg.privacy.label_clip}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--probe", type=int, default=5000, help="training images for the linear probe (0: none)")
    a = ap.parse_args()
    from ganforge.errors import GanforgeError

    try:
        r = label_signal(a.run_dir, checkpoint=a.checkpoint, images=a.images, test=a.test, probe=a.probe)
    except GanforgeError as exc:  # a wrong folder or checkpoint: one line, as the ganforge commands say it
        raise SystemExit(f"benchmarks.label_signal: {exc}") from None
    probed = "" if r["probe_accuracy"] is None else (
        f"; a linear probe on the features it reads, fitted on {a.probe} training images: "
        f"{100 * r['probe_accuracy']:.1f} %")
    apart = f"; privacy.label_clip={r['label_clip']:g} clips the label apart, to {r['label_clip'] ** 0.5:.2f} C"
    reader = "class head" if r["has_head"] else "D read as a classifier (the label of its highest logit)"
    split = ("" if not r["has_head"] else
             f", class cross-entropy {r['class_grad_norm']:.2f}; at class_weight {r['class_weight']:g} the label "
             f"has {100 * r['class_share']:.1f} % of each clipped gradient")
    g_class = ("" if r["g_class_grad_norm"] is None else
               f", class cross-entropy {r['g_class_grad_norm']:.3g} at class_weight_g {r['class_weight_g']:g}")
    print(f"{r['checkpoint']}: per-image gradient norm (median of {a.images}): adversarial "
          f"{r['adversarial_grad_norm']:.1f}{split}. {reader[0].upper()}{reader[1:]}: accuracy on {a.test} "
          f"{r['accuracy_split']} images {100 * r['head_accuracy']:.1f} % (chance {100 * r['chance']:.0f} %)"
          f"{probed}{apart if r['label_clip'] else ''}. G's side, per generated image: adversarial gradient "
          f"{r['g_adversarial_grad_norm']:.3g}{g_class}; the {'head' if r['has_head'] else 'same reading'} finds "
          f"{100 * r['generated_head_accuracy']:.1f} % of them as asked; variety within a class "
          f"{r['generated_variety']:.2f} of the training images'")


if __name__ == "__main__":
    main()
