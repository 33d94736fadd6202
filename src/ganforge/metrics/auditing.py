"""`audit`: can a run's synthetic images stand in for real ones? Utility, memorisation, coverage.

Generates N images, embeds them (and real images) in one or more feature spaces, and computes:
- utility: the classification accuracy score (CAS, Ravuri & Vinyals 2019; `metrics.cas`) of a
  conditional model beside the same classifier trained on N real training images;
- memorisation: authenticity and near-copies (Alaa et al. 2022; `metrics.audit_metrics`) against the
  run's whole training set, for the generated images and for N real held-out images (the
  baseline an honest generator should look like);
- coverage: density and coverage (Naeem et al. 2020) and improved precision/recall (Kynkäänniemi
  et al. 2019) against N real training images, plus the shipped classifier's class histogram;
- membership: the discriminator-score attack (Hayes et al. 2019) and the generated-sample
  distance attack (Chen et al. 2020) on training images against held-out ones (`metrics.membership`);
- for conditional models, the downstream accuracy of the DP papers (Bie et al. 2023; `metrics.cas`).
Every number carries its protocol (N, split, feature space, network checksum, seed, version).
`audit_run(run_dir)` loads a run's generator and data and calls `audit`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ganforge import __version__
from ganforge.data.base import ImageData
from ganforge.errors import ConfigError, DataError
from ganforge.metrics import audit_metrics as A
from ganforge.metrics import membership as M
from ganforge.metrics.cas import Recipe, accuracy, downstream_accuracy, fit_classifier
from ganforge.metrics.functional import precision_recall
from ganforge.metrics.precision import maths_device

SPACES = ("classifier", "inception", "pixels")
PAIRS = 8          # closest pairs kept per feature space for the figure
FEATURE_BATCH = 500


class AuditError(ConfigError):
    """An audit that cannot run as asked (too large an N, a missing split or labels)."""


@dataclass
class Space:
    """A feature space: name, function uint8 images -> float features, and what identifies it."""
    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    dim: int
    info: dict


@dataclass
class Audit:
    record: dict
    pairs: dict = field(default_factory=dict)   # space -> (generated uint8 [P,...], nearest train uint8, distances)
    nn_distances: dict = field(default_factory=dict)  # space -> (generated [N], real baseline [N])
    histograms: Optional[tuple] = None          # (generated [K], real [K]) class shares


def build_space(name: str, *, dataset: str, device, inception_path=None, cache_dir=None) -> Space:
    """A feature space; its network is built once per process and shared with `evaluate`."""
    from ganforge.metrics.evaluation import load_network

    if name == "pixels":
        return Space("pixels", lambda x: x.reshape(len(x), -1).float() / 255.0, 0,
                     {"feature_space": "pixels", "scale": "0..1, Euclidean"})
    if name == "classifier":
        from ganforge.metrics.classifier import CLASSIFIER_FOR, FEATURE_DIM

        if dataset not in CLASSIFIER_FOR:
            raise AuditError(f"feature space 'classifier' needs a shipped classifier, which exists for "
                             f"{', '.join(CLASSIFIER_FOR)}, not {dataset!r}; use --spaces inception,pixels")
        net = load_network("classifier", device=device, dataset=CLASSIFIER_FOR[dataset])
        return Space("classifier", lambda x: net(x)[0].float(), FEATURE_DIM,
                     {"feature_space": net.name + " penultimate (128-d)", "network_sha256": net.sha256})
    if name == "inception":
        from ganforge.metrics.inception import FEATURE_DIM

        net = load_network("inception", device=device, inception_path=inception_path, cache_dir=cache_dir)
        return Space("inception", lambda x: net(x)[0].float(), FEATURE_DIM,
                     {"feature_space": net.name + " pool_3 (2048-d)", "network_sha256": net.sha256,
                      "resize_method": net.resize_method})
    raise AuditError(f"unknown feature space {name!r}; choose from {', '.join(SPACES)}")


def _embed(space: Space, images: torch.Tensor, log, what: str) -> torch.Tensor:
    out = []
    for i in range(0, len(images), FEATURE_BATCH):
        out.append(space.fn(images[i: i + FEATURE_BATCH]).cpu())
        if log and space.name != "pixels" and (i // FEATURE_BATCH) % 20 == 19:
            log(f"  {space.name} features of {what}: {i + FEATURE_BATCH}/{len(images)}")
    return torch.cat(out)


def memory_needed(n: int, image_numel: int, dims: Sequence[int], n_train: int) -> int:
    """Bytes an audit of n images needs, roughly: three image sets of n (generated, held-out,
    training subset) as uint8 and float pixels, their features, the training set's features, and
    the [1024, n] float64 distance blocks of the k-NN radii."""
    per_image = image_numel * 5 + sum(4 * (d or image_numel) for d in dims)
    return 3 * n * per_image + n_train * sum(4 * (d or image_numel) for d in dims) + 3 * 1024 * 8 * n


def available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _protocol(**extra) -> dict:
    return {"ganforge_version": __version__, **extra}


@dataclass
class _Sides:
    """What every section of one audit reads: the generated images and the real sides drawn for them."""
    fake: torch.Tensor                  # uint8 [n, C, H, W]
    fake_labels: Optional[torch.Tensor]  # the requested labels of a conditional model
    real: torch.Tensor                  # n (or all) held-out images: the real baseline
    train: ImageData
    heldout: ImageData
    train_idx: torch.Tensor             # n random training images: the coverage reference, CAS's real side
    base: dict                          # n_generated, dataset, seed: repeated in every entry
    split: str
    device: Any
    log: Optional[Callable[[str], None]]


def audit(*, generate: Callable, n: int, train: ImageData, heldout: ImageData, dataset: str, split: str = "test",
          num_classes: int = 0, spaces: Sequence[str] = ("classifier", "pixels"), seed: int = 0,
          batch_size: int = 250, device: str | torch.device = "cpu", inception_path=None, cache_dir=None,
          recipe: Recipe = Recipe(), k_pr: int = 3, k_dc: int = 5, membership: Optional[M.Setup] = None,
          generate_for: Optional[Callable] = None, log: Optional[Callable[[str], None]] = None) -> Audit:
    """Audit `n` images from generate(batch, torch.Generator) -> (uint8 [B, C, H, W], labels [B] or None).

    train: the run's training images (memorisation reference; a subset of n is the coverage
    reference and the real side of CAS). heldout: real images of `split` (the real baseline; its
    labels test CAS). num_classes > 0 marks a conditional model, whose labels CAS uses.
    membership: the members, non-members and discriminators of the membership attacks (see
    `membership.setup_for_run`); generate_for(labels, torch.Generator) -> uint8: the conditional
    generator for the downstream-accuracy protocol (`cas.downstream_accuracy`).
    """
    t_start = time.perf_counter()
    nets = _prepare(n=n, train=train, dataset=dataset, spaces=spaces, device=device, inception_path=inception_path,
                    cache_dir=cache_dir, k=max(k_pr, k_dc))
    t0 = time.perf_counter()
    fake, fake_labels = _generate(generate, n, batch_size, seed, num_classes, train)
    t_generate = time.perf_counter() - t0
    real = heldout.images[A.random_subset(len(heldout), min(n, len(heldout)), seed + 1)]
    sides = _Sides(fake, fake_labels, real, train, heldout, A.random_subset(len(train), n, seed + 2),
                   dict(n_generated=n, dataset=dataset, seed=seed), split, device, log)
    result = Audit(record={})
    record: dict[str, Any] = {"protocol": _protocol(**sides.base, reference_split=split, n_heldout=len(real),
                                                    n_train=len(train), device=str(device)),
                              "utility": {}, "memorisation": {}, "coverage": {}, "membership": {}, "seconds": {}}
    for space in nets.values():
        _memorisation_and_coverage(space, sides, record, result, k_pr=k_pr, k_dc=k_dc)
    record["seconds"]["generate"] = round(t_generate, 3)
    agreement = _class_histogram(dataset, sides, record, result)
    record["utility"] = _utility(sides, num_classes, recipe, generate_for)
    if agreement is not None:
        record["utility"]["label_agreement"] = agreement
    t0 = time.perf_counter()
    record["membership"] = (M.attack(membership, generated=fake, seed=seed, device=device, batch_size=batch_size,
                                     log=log) if membership is not None else
                            {"not_applicable": "no members, non-members or discriminator were given"})
    record["seconds"]["membership"] = round(time.perf_counter() - t0, 3)
    record["seconds"]["total"] = round(time.perf_counter() - t_start, 3)
    record["verdict"] = verdicts(record)
    result.record = record
    return result


def _prepare(*, n: int, train: ImageData, dataset: str, spaces: Sequence[str], device, inception_path, cache_dir,
             k: int) -> dict[str, Space]:
    """The feature spaces, once N is known to fit the k-NN metrics, the training set and the memory."""
    if n < 2 * k:
        raise AuditError(f"--n {n} is too small; the k-NN metrics need at least {2 * k} images")
    if n > len(train):
        raise AuditError(f"--n {n} is larger than the {len(train)} training images of {dataset}; use --n {len(train)}")
    nets = {s: build_space(s, dataset=dataset, device=device, inception_path=inception_path, cache_dir=cache_dir)
            for s in dict.fromkeys(spaces)}
    need = memory_needed(n, train.images[0].numel(), [s.dim for s in nets.values()], len(train))
    have = available_memory()
    if need > have:
        raise AuditError(f"--n {n} needs about {need / 2**30:.1f} GiB of memory but {have / 2**30:.1f} GiB is "
                         f"available; use a smaller --n")
    return nets


def _generate(generate: Callable, n: int, batch_size: int, seed: int, num_classes: int,
              train: ImageData) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """n images (and their requested labels, for a conditional model) on the host, checked against the data."""
    gen = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for i in range(0, n, batch_size):
        x, y = generate(min(batch_size, n - i), gen)
        images.append(x.cpu())
        labels.append(y.cpu() if y is not None else None)
    fake = torch.cat(images)
    if fake.shape[1:] != train.images.shape[1:]:
        raise AuditError(f"generated images are {tuple(fake.shape[1:])} but the training images are "
                         f"{tuple(train.images.shape[1:])}")
    return fake, (torch.cat(labels) if num_classes and labels[0] is not None else None)


def _memorisation_and_coverage(space: Space, s: _Sides, record: dict, result: Audit, *, k_pr: int, k_dc: int) -> None:
    """Memorisation in `space` (and coverage, but in pixels) into `record`; the figure's arrays into `result`."""
    name, train = space.name, s.train
    t0 = time.perf_counter()
    f_train = _embed(space, train.images, s.log, f"{len(train)} training images")
    f_fake, f_real = _embed(space, s.fake, s.log, "generated images"), _embed(space, s.real, s.log, f"{s.split} images")
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    mem_fake = A.memorisation(f_fake, f_train)
    t_nn = time.perf_counter() - t0
    mem_real = A.memorisation(f_real, f_train)
    record["memorisation"][name] = {
        "generated": mem_fake.summary(), "real_baseline": mem_real.summary(),
        "copy_ratio": A.COPY_RATIO, "nn_search_seconds": round(t_nn, 3), "feature_seconds": round(t_feat, 3),
        **space.info, **s.base, "reference": f"all {len(train)} training images", "baseline_split": s.split,
        "n_baseline": len(s.real)}
    pick = A.closest_pairs(mem_fake, PAIRS)
    result.pairs[name] = (s.fake[pick], train.images[mem_fake.index[pick]], mem_fake.distance[pick])
    result.nn_distances[name] = (mem_fake.distance / mem_fake.train_distance.clamp_min(1e-12),
                                 mem_real.distance / mem_real.train_distance.clamp_min(1e-12))
    if name == "pixels":
        return
    ref = f_train[s.train_idx].to(maths_device(s.device))   # the k-NN maths in float64, on a GPU when there is one
    cov = {}
    for side, feats in (("generated", f_fake), ("real_baseline", f_real)):
        pr, dc = precision_recall(ref, feats, k=k_pr), A.density_coverage(ref, feats, k=k_dc)
        cov[side] = {"precision": pr.precision, "recall": pr.recall, "density": dc.density, "coverage": dc.coverage}
    record["coverage"][name] = {**cov, **space.info, **s.base, "reference": f"{len(s.train_idx)} random training "
                                f"images", "baseline_split": s.split, "k_precision_recall": k_pr,
                                "k_density_coverage": k_dc}


def _class_histogram(dataset: str, s: _Sides, record: dict, result: Audit) -> Optional[float]:
    """The shipped classifier's class histogram of generated and real images into `record`; how often
    it agrees with the requested label (None for an unconditional model or without a classifier)."""
    if not _has_classifier(dataset):
        record["coverage"]["class_histogram"] = {"not_applicable": f"no shipped classifier for {dataset!r}"}
        return None
    from ganforge.metrics.classifier import CLASSIFIER_FOR
    from ganforge.metrics.evaluation import load_network

    clf = load_network("classifier", device=s.device, dataset=CLASSIFIER_FOR[dataset])
    k = int(clf.meta.get("num_classes", 10))
    predict = Space("predictions", lambda x: clf(x)[1].argmax(1), 0, {})
    pred = {"g": _embed(predict, s.fake, None, ""), "r": _embed(predict, s.real, None, "")}
    hg, hr = A.class_histogram(pred["g"], k), A.class_histogram(pred["r"], k)
    result.histograms = (hg, hr)
    record["coverage"]["class_histogram"] = {
        "generated": [round(float(v), 5) for v in hg], "real": [round(float(v), 5) for v in hr],
        "total_variation": A.total_variation(hg, hr), "classes": list(s.train.class_names) or list(range(k)),
        "missing_classes": [c for c in range(k) if hg[c] < 0.1 * hr[c]],
        "classifier": clf.name, "network_sha256": clf.sha256, **s.base, "real_split": s.split, "n_real": len(s.real)}
    if s.fake_labels is None:
        return None
    return float((pred["g"] == s.fake_labels).double().mean())  # does the classifier see the digit asked for?


def _has_classifier(dataset: str) -> bool:
    from ganforge.metrics.classifier import CLASSIFIER_FOR

    return dataset in CLASSIFIER_FOR


def _utility(s: _Sides, num_classes: int, recipe: Recipe, generate_for: Optional[Callable]) -> dict:
    """CAS of a conditional model beside real images' accuracy, and the downstream-accuracy protocol."""
    if not num_classes:
        return {"not_applicable": "the model is unconditional: its images carry no labels to train a classifier "
                                  "on, so the classification accuracy score does not apply"}
    if s.fake_labels is None:
        raise AuditError("the conditional generator returned no labels; CAS needs the labels it was asked for")
    train, heldout, log = s.train, s.heldout, s.log
    if heldout.labels is None or train.labels is None:
        what = f"the {s.split} split" if heldout.labels is None else "the training split"
        raise DataError(f"CAS needs labelled real images, but {what} of {s.base['dataset']} has no labels; "
                        f"run without CAS on an unconditional model, or use a labelled dataset")
    t0 = time.perf_counter()
    if log:
        log(f"  CAS: training the classifier on {len(s.fake)} generated images")
    acc_fake = accuracy(fit_classifier(s.fake, s.fake_labels, num_classes=num_classes, recipe=recipe),
                        heldout.images, heldout.labels)
    if log:
        log(f"  CAS: training the classifier on {len(s.train_idx)} real training images")
    acc_real = accuracy(fit_classifier(train.images[s.train_idx], train.labels[s.train_idx], num_classes=num_classes,
                                       recipe=recipe), heldout.images, heldout.labels)
    out = {"cas": acc_fake, "real_accuracy": acc_real, "ratio": acc_fake / max(acc_real, 1e-12),
           "recipe": recipe.describe(), "test_split": s.split, "n_test": len(heldout), **s.base,
           "n_real_train": len(s.train_idx), "seconds": round(time.perf_counter() - t0, 3)}
    if generate_for is None:
        out["downstream"] = {"not_applicable": "no label-controlled generator (generate_for) was given"}
        return out
    if log:
        log(f"  downstream: training the classifier on {len(s.fake)} class-balanced generated images")
    t0 = time.perf_counter()
    out["downstream"] = downstream_accuracy(generate_for, n_train=len(s.fake), num_classes=num_classes,
                                            test_images=heldout.images, test_labels=heldout.labels,
                                            test_split=s.split, recipe=recipe, seed=s.base["seed"])
    out["downstream"]["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def verdicts(record: dict) -> dict[str, str]:
    """One line per section. Rules (docs/evaluation.md): memorising when the near-copy share is
    above max(1%, 2x the real baseline's) or authenticity is 0.1 below the baseline's; coverage
    collapsed when coverage is below half the baseline's or a class is missing."""
    out = {}
    u = record["utility"]
    out["utility"] = (f"not applicable: {u['not_applicable']}" if "not_applicable" in u else
                      f"CAS {u['cas']:.3f} vs {u['real_accuracy']:.3f} for real images "
                      f"({u['ratio']:.0%} of real utility)" + (
                          f"; the shipped classifier sees the requested class in {u['label_agreement']:.0%} "
                          f"of generated images" if "label_agreement" in u else "")
                      + (f"; downstream accuracy {d['accuracy']:.3f} (epoch {d['selected_epoch']} of {d['epochs']}, "
                         f"chosen on generated images)" if "accuracy" in (d := u.get("downstream", {})) else ""))
    lines = []
    for name, m in record["memorisation"].items():
        g, r = m["generated"], m["real_baseline"]
        bad = g["near_copies"] > max(0.01, 2 * r["near_copies"]) or g["authenticity"] < r["authenticity"] - 0.1
        lines.append(f"{name}: {'MEMORISING' if bad else 'no sign of copying'} (authentic {g['authenticity']:.2f}"
                     f" vs {r['authenticity']:.2f} real, near-copies {g['near_copies']:.1%} vs {r['near_copies']:.1%})")
    out["memorisation"] = "; ".join(lines)
    lines = []
    for name, c in record["coverage"].items():
        if name == "class_histogram":
            if "not_applicable" not in c:
                miss = c["missing_classes"]
                lines.append(f"classes: TV {c['total_variation']:.2f}"
                             + (f", MISSING {miss}" if miss else ", all present"))
            continue
        g, r = c["generated"], c["real_baseline"]
        state = "COLLAPSED" if g["coverage"] < 0.5 * r["coverage"] else "ok"
        lines.append(f"{name}: {state} (coverage {g['coverage']:.2f} vs {r['coverage']:.2f} real, "
                     f"density {g['density']:.2f} vs {r['density']:.2f})")
    out["coverage"] = "; ".join(lines)
    if "membership" in record:
        out["membership"] = M.verdict(record["membership"])
    return out


def audit_run(run_dir: str | Path, *, n: int = 10000, split: str = "test", spaces: Optional[Sequence[str]] = None,
              checkpoint: Optional[Path] = None, data_dir: Optional[str] = None, device: str | torch.device = "cpu",
              seed: int = 0, inception_path=None, out: Optional[Path] = None, reference_run: Optional[Path] = None,
              membership_n: int = M.N_MAX, log: Optional[Callable[[str], None]] = None) -> Audit:
    """Audit a run folder written by `ganforge train`: its latest checkpoint (or `checkpoint`), its
    training data (its split and data.limit), and `split` as the held-out real images; membership
    attacks on up to `membership_n` training images against as many held-out ones, beside
    `reference_run`'s when given. Writes audit.json and audit.png into `out` when given."""
    from ganforge.data import DATASETS, load_dataset
    from ganforge.metrics.cas import make_generate_for
    from ganforge.metrics.evaluation import make_generate
    from ganforge.outputs.model import load_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AuditError(f"{run_dir}: no such run folder")
    if reference_run is not None and not Path(reference_run).is_dir():
        raise AuditError(f"--reference-run {reference_run}: no such run folder")
    model = load_model(run_dir, checkpoint=checkpoint, device=device)
    cfg, g = model.cfg, model.g
    name, size, root, own = cfg.data.name, cfg.data.size, data_dir or cfg.data.root, cfg.data.split
    spec = DATASETS.get(name)
    if split not in spec.splits or split == own:
        held = [s for s in spec.splits if s != own]
        raise AuditError(f"--split {split}: the audit needs a held-out split other than {own}; {name!r} has "
                         + (", ".join(held) if held else "none, so it cannot be audited against unseen real images"))
    train = load_dataset(name=name, root=root, split=own, size=size, limit=cfg.data.limit)
    heldout = load_dataset(name=name, root=root, split=split, size=size)
    num_classes = getattr(getattr(g, "cond", None), "num_classes", 0) or getattr(g, "num_classes", 0)
    if spaces is None:
        spaces = ("classifier", "pixels") if _has_classifier(name) else ("inception", "pixels")
    membership = M.setup_for_run(model, train=train, heldout=heldout, split=split, device=device, data_dir=data_dir,
                                 reference=Path(reference_run) if reference_run is not None else None,
                                 n_max=membership_n)
    result = audit(generate=make_generate(g, z_dim=cfg.model.z_dim, num_classes=num_classes, device=device),
                   n=n, train=train, heldout=heldout, dataset=name, split=split, num_classes=num_classes,
                   spaces=spaces, seed=seed, device=device, inception_path=inception_path, membership=membership,
                   generate_for=make_generate_for(g, z_dim=cfg.model.z_dim, device=device) if num_classes else None,
                   log=log)
    result.record["protocol"].update(run_dir=str(run_dir), checkpoint=str(checkpoint) if checkpoint else "latest",
                                     arch=cfg.model.arch, preset=cfg.preset, privacy=membership.privacy)
    if out is not None:
        write(result, Path(out))
    return result


def write(result: Audit, out: Path) -> tuple[Path, Path]:
    """audit.json and audit.png into the folder `out`, each written to a temporary name first."""
    from ganforge import fsutil
    from ganforge.metrics.audit_plot import plot_audit

    js, png = out / "audit.json", out / "audit.png"
    try:
        out.mkdir(parents=True, exist_ok=True)
        fsutil.write_json(js, result.record)
        plot_audit(result, png)
    except OSError as exc:
        raise AuditError(f"--out {out}: cannot write the audit ({exc.strerror or exc}); its verdicts are "
                         f"printed above") from None
    return js, png
