"""The data path that scales: a memory-mapped cache, host or device placement with identical batches,
one decode per host under torchrun, and the placement refusals."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import EXACT, REPO, TINY, run_cli
from ganforge.config import Config, validate
from ganforge.data import batches as batches_module
from ganforge.data import load_dataset
from ganforge.data.batches import DeviceBatches, choose_placement
from ganforge.data.cache import FORMAT, cached_files
from ganforge.errors import ConfigError
from ganforge.training.checkpoint import list_checkpoints, load_checkpoint


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):  # a fresh cache per test: the first load always decodes
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def image_folder(root: Path, n: int = 12, size: int = 20) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
    return root


def mapped_file(t: torch.Tensor) -> str:
    """The file whose mapping holds the tensor's memory (from /proc/self/maps): a path, or "", "[heap]"...
    for private memory."""
    ptr = t.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        lo, hi = (int(v, 16) for v in fields[0].split("-"))
        if lo <= ptr < hi:
            return fields[5] if len(fields) == 6 else ""
    return ""


needs_proc = pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")


@needs_proc
def test_cache_entry_opens_memory_mapped_without_a_warning(tmp_path):
    root = image_folder(tmp_path / "imgs")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy on a read-only array would warn here
        first = load_dataset(name="folder", root=root, size=16)    # decoded, written, then mapped
        second = load_dataset(name="folder", root=root, size=16)   # from the cache
    (entry,) = cached_files()
    for d in (first, second):
        assert d.mapped and mapped_file(d.images) == str(entry / "images.npy")
        assert isinstance(np.load(entry / "images.npy", mmap_mode="r"), np.memmap)
    assert torch.equal(first.images, second.images) and second.images.shape == (12, 3, 16, 16)
    assert json.loads((entry / "meta.json").read_text())["format"] == FORMAT
    private = load_dataset(name="folder", root=root, size=16, cache=False)  # no cache: a private array
    assert not private.mapped and not mapped_file(private.images).startswith("/")  # heap or anonymous


@pytest.mark.parametrize("damage", ["truncated", "other-format"])
def test_damaged_or_outdated_entry_warns_once_and_is_decoded_again(tmp_path, caplog, damage):
    root = image_folder(tmp_path / "imgs")
    before = load_dataset(name="folder", root=root, size=16).images.clone()  # the mapping dies with the damage
    (entry,) = cached_files()
    if damage == "truncated":
        data = (entry / "images.npy").read_bytes()
        (entry / "images.npy").write_bytes(data[: len(data) // 2])
        expected = f"{entry / 'images.npy'}: truncated or unreadable"
    else:
        meta = json.loads((entry / "meta.json").read_text())
        (entry / "meta.json").write_text(json.dumps({**meta, "format": FORMAT + 1}))
        expected = f"{entry}: cache entry of format version {FORMAT + 1} (this ganforge reads {FORMAT})"
    with caplog.at_level(logging.WARNING, logger="ganforge.data"):
        again = load_dataset(name="folder", root=root, size=16)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and expected in warned[0] and warned[0].endswith("decoding again"), warned
    assert torch.equal(again.images, before) and again.mapped
    assert cached_files() == [entry] and json.loads((entry / "meta.json").read_text())["format"] == FORMAT


def batches_of(placement: str, images: torch.Tensor, labels: torch.Tensor, *, epoch: int, start: int):
    torch.manual_seed(7)  # the flips' stream, as the training loop's RNG would be
    b = DeviceBatches(images, labels, batch_size=8, seed=3, device=torch.device("cpu"), rank=1, world_size=2,
                      hflip=True, placement=placement)
    return [(x.clone(), y.clone()) for x, y in b.epoch(epoch, start=start)]


def test_host_placement_batches_are_bit_identical_to_device_placement(tmp_path):
    rng = np.random.default_rng(1)
    array = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(100, 3, 6, 6))
    array[:] = rng.integers(0, 256, array.shape, dtype=np.uint8)
    images = torch.from_numpy(np.load(tmp_path / "x.npy", mmap_mode="c"))
    labels = torch.from_numpy(rng.integers(0, 10, 100))
    for epoch, start in ((1, 2), (0, 0)):  # an epoch resumed at its third batch, and a fresh one
        device = batches_of("device", images, labels, epoch=epoch, start=start)
        host = batches_of("host", images, labels, epoch=epoch, start=start)
        assert len(device) == len(host) == 6 - start  # 100 // (8 x 2 ranks) = 6 steps
        for (xd, yd), (xh, yh) in zip(device, host):
            assert torch.equal(xd, xh) and torch.equal(yd, yh)
    # Rank 1 took its own stride of epoch 0's permutation; some images were flipped, some not.
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(3 * 1_000_003 + 0))[1::2]
    assert torch.equal(host[0][1], labels[perm[:8]])
    unflipped = images[perm[:8]].float().mul_(2 / 255).sub_(1)
    same = [torch.equal(host[0][0][i], unflipped[i]) for i in range(8)]
    assert any(same) and not all(same)


def test_choose_placement_rules_and_refusal(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert choose_placement("auto", share=0.5, nbytes=10**12, device=cpu) == "host"   # no copy on a CPU
    assert choose_placement("device", share=0.5, nbytes=10**12, device=cpu) == "device"
    monkeypatch.setattr(batches_module, "device_memory", lambda device: (60 * 10**9, 80 * 10**9))
    assert choose_placement("auto", share=0.5, nbytes=40 * 10**9, device=cuda) == "device"
    assert choose_placement("auto", share=0.5, nbytes=41 * 10**9, device=cuda) == "host"
    assert choose_placement("auto", share=0.9, nbytes=61 * 10**9, device=cuda) == "host"  # over what is free
    assert choose_placement("host", share=0.5, nbytes=1, device=cuda) == "host"
    with pytest.raises(ConfigError) as e:
        choose_placement("device", share=0.5, nbytes=70 * 10**9, device=cuda)
    assert str(e.value) == ("data.placement=device: the training set needs 70.00 GB on cuda:0, which has 60.00 GB "
                            "free of 80.00 GB; set data.placement=host (or auto) to keep it in host memory")
    with pytest.raises(ConfigError, match=r"data.placement='gpu': choose one of auto, device, host"):
        choose_placement("gpu", share=0.5, nbytes=1, device=cpu)


@pytest.mark.parametrize("key, value, message", [
    ("placement", "foo", "data.placement='foo': choose auto, device or host"),
    ("device_share", 0.0, "data.device_share=0: must be in (0, 1]"),
    ("device_share", 1.5, "data.device_share=1.5: must be in (0, 1]"),
])
def test_placement_settings_are_validated(key, value, message):
    cfg = Config()
    setattr(cfg.data, key, value)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value) == message


def test_bad_placement_on_the_command_line_is_one_line(tmp_path, capsys):
    assert run_cli(["train", "--out", str(tmp_path), "--max-steps", "1", *TINY, "--set", "data.placement=foo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ganforge: error: data.placement='foo': choose auto, device or host"
    assert not list(tmp_path.iterdir())  # refused before a run folder was made


@needs_proc
def test_host_placement_trains_and_resumes_exactly_like_device_placement(tmp_path, capsys):
    flags = [*TINY, *EXACT, "--device", "cpu", "--set", "data.hflip=true"]
    host = [*flags, "--set", "data.placement=host"]
    assert run_cli(["train", "--out", str(tmp_path), "--name", "device", "--epochs", "2", *flags,
                    "--set", "data.placement=device"]) == 0
    assert run_cli(["train", "--out", str(tmp_path), "--name", "host", "--epochs", "2", *host]) == 0
    out = capsys.readouterr().out
    assert "data: 256 images 28x28x1 (0.00 GB uint8) in host memory (memory-mapped), batches gathered and " \
           "prefetched" in out
    # Stopped inside the first epoch (step 5 of 8), then resumed from that position with host placement.
    assert run_cli(["train", "--out", str(tmp_path), "--name", "split", "--epochs", "2", "--max-steps", "5",
                    "--set", "checkpoint_steps=5", *host]) == 0
    assert run_cli(["train", "--resume", str(tmp_path / "split"), "--set", "train.max_steps=0"]) == 0
    weights = [load_checkpoint(list_checkpoints(tmp_path / n)[-1])[0] for n in ("device", "host", "split")]
    assert load_checkpoint(list_checkpoints(tmp_path / "split")[-1])[1]["progress"]["step"] == 16
    for other in weights[1:]:
        assert weights[0].keys() == other.keys() and all(torch.equal(weights[0][k], other[k]) for k in other)


@needs_proc
def test_trainer_keeps_no_private_copy_of_the_set(tmp_path):
    from ganforge.config import preset_config
    from ganforge.runtime import Dist
    from ganforge.training.loop import Trainer

    cfg = preset_config("demo")
    cfg.data.limit, cfg.train.batch_size, cfg.model.g_channels, cfg.model.d_channels = 128, 16, 8, 8
    cfg.train.device, cfg.train.eval_every, cfg.train.eval_metrics = "cpu", 1, "cls-fid"
    trainer = Trainer(cfg, run_dir=tmp_path / "run", dist=Dist())
    try:
        (entry,) = cached_files()
        assert trainer.batches.placement == "host"
        assert mapped_file(trainer.batches.images) == str(entry / "images.npy")
        assert mapped_file(trainer.evaluator.real) == str(entry / "images.npy")
        preview = trainer.real_preview
        assert len(preview) == 64 and preview.untyped_storage().nbytes() == preview.nbytes  # its own small copy
    finally:
        trainer.log.close()


COUNTING = '''
import os, sys
from ganforge.data import folder
decode = folder.decode_tree

def counted(*args, **kwargs):  # one line per decode, by any process
    with open(os.environ["DECODES"], "a") as f:
        f.write(f"rank {os.environ.get('RANK')}\\n")
    return decode(*args, **kwargs)

folder.decode_tree = counted
from ganforge.cli import main
main(sys.argv[1:])
'''


def torchrun_counting(tmp_path: Path, root: Path, cache: Path) -> tuple[subprocess.CompletedProcess, list]:
    script = tmp_path / "count_decodes.py"
    script.write_text(COUNTING)
    decodes = tmp_path / "decodes.txt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           "train", "--out", str(tmp_path / "runs"), "--name", "r", "--device", "cpu", "--data-dir", str(root),
           "--set", "data.name=folder", "--set", "data.size=16", "--batch-size", "4", "--max-steps", "2",
           "--set", "model.conditional=false", "--set", "model.g_channels=8", "--set", "model.d_channels=8",
           "--set", "threads=1"]
    env = {**__import__("os").environ, "GANFORGE_CACHE": str(cache), "DECODES": str(decodes),
           "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    return result, (decodes.read_text().splitlines() if decodes.is_file() else [])


@pytest.mark.slow
def test_torchrun_decodes_once_per_host_and_every_rank_maps_the_file(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "imgs", n=24)
    result, decodes = torchrun_counting(tmp_path, root, tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert decodes == ["rank 0"]
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    (entry,) = cached_files()  # one entry written, no temporary left
    assert not entry.name.startswith(".tmp-") and sorted(p.name for p in entry.iterdir()) == ["images.npy",
                                                                                             "meta.json"]
    assert result.stdout.count("data: 24 images 16x16x3") == 1 and "(memory-mapped)" in result.stdout


@pytest.mark.slow
def test_torchrun_with_an_unwritable_cache_decodes_on_every_rank_with_one_warning(tmp_path):
    root = image_folder(tmp_path / "imgs", n=24)
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("not a folder")
    result, decodes = torchrun_counting(tmp_path, root, blocked)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(decodes) == ["rank 0", "rank 1"]
    warned = [s for s in result.stderr.splitlines() if "not writable" in s]
    assert len(warned) == 1 and "so every rank decodes the data for itself" in warned[0], result.stderr


@pytest.mark.slow
def test_torchrun_decode_failure_stops_every_rank_with_the_same_line(tmp_path):
    root = image_folder(tmp_path / "imgs", n=1)
    for i in range(3):
        (root / f"x{i}.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result, decodes = torchrun_counting(tmp_path, root, tmp_path / "cache")
    assert result.returncode != 0 and decodes == ["rank 0"]
    errors = [s for s in result.stderr.splitlines() if s.startswith("ganforge: error:")]
    assert len(errors) == 2 and errors[0] == errors[1], result.stderr
    assert "3 of 4 images are unreadable or corrupt" in errors[0]
    assert "ganforge/data/cache.py" not in result.stderr  # no traceback from a rank, only the line


def test_a_folder_decodes_straight_into_its_cache_file_without_a_private_copy(tmp_path):
    """The decoding process never holds the whole set in private memory: numpy's allocations (which
    tracemalloc sees) stay far below the decoded size, and the result is the mapped cache file."""
    import tracemalloc

    root = image_folder(tmp_path / "imgs", n=400, size=48)
    tracemalloc.start()
    try:
        data = load_dataset(name="folder", root=root, size=48)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.images.nbytes == 400 * 3 * 48 * 48
    assert peak < data.images.nbytes / 4, (peak, data.images.nbytes)
    assert data.mapped and mapped_file(data.images).endswith("images.npy")
    assert not list((tmp_path / "cache").rglob(".tmp*"))  # no temporary folder left beside the entry
    again = load_dataset(name="folder", root=root, size=48)
    assert torch.equal(again.images, data.images)


def test_a_folder_with_an_unreadable_file_still_caches_the_readable_ones(tmp_path):
    root = image_folder(tmp_path / "imgs", n=6)
    (root / "002.png").write_bytes(b"not a png")
    data = load_dataset(name="folder", root=root, size=20)
    assert len(data) == 5 and data.mapped
    assert torch.equal(load_dataset(name="folder", root=root, size=20).images, data.images)


class _TwoRanks:
    """Dist's gather as two ranks would answer it: this rank's verdict and the other's."""

    def __init__(self, other):
        self.other = other

    def gather(self, obj):
        return [obj, self.other]


def test_every_rank_takes_the_same_placement_and_the_same_refusal(monkeypatch):
    from ganforge.training.setup import agreed_placement

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(batches_module, "device_memory", lambda device: (8 * 2**30, 16 * 2**30))
    kw = dict(share=0.5, nbytes=2**30, device=cuda)
    assert agreed_placement("auto", **kw, dist=_TwoRanks(("ok", "device"))) == "device"
    # The other rank's GPU had too little free memory for a copy: both keep the set in host memory.
    assert agreed_placement("auto", **kw, dist=_TwoRanks(("ok", "host"))) == "host"
    # The other rank refused a forced copy: this rank, whose GPU had room, stops with the same line.
    with pytest.raises(ConfigError, match="rank 1 refused"):
        agreed_placement("device", **kw, dist=_TwoRanks(("error", "rank 1 refused")))
