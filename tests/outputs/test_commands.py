"""Using a trained model: `ganforge sample`, `interpolate`, `export`, `compare`, `report` on tiny real
runs, samples/progress.gif, and the one-line refusals of bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.cli import main
from ganforge.outputs.files import atomic_output
from ganforge.outputs.interpolate import slerp
from ganforge.outputs.model import latents, load_model
from ganforge.outputs.sampling import class_folders


def run_cli(argv):
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    return exit_.value.code


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


def test_import_stays_light():
    code = ("import sys, ganforge, ganforge.cli, ganforge.outputs.model; "
            "print(sorted(m for m in ('gradio', 'onnx', 'onnxruntime', 'playwright') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_latents_depend_only_on_seed_and_index():
    a = latents(7, 0, 600, 16)
    assert torch.equal(latents(7, 250, 300, 16), a[250:300])  # across a chunk boundary
    assert not torch.equal(latents(8, 0, 600, 16), a)
    t = latents(7, 0, 600, 16, truncation=0.5)
    assert t.abs().max() <= 0.5 and t.std() > 0.2


def test_sample_png_is_reproducible_and_labels_match_folders(trained_runs, tmp_path, capsys):
    run = trained_runs["cgan"]
    assert run_cli(["sample", run, "--n", 40, "--out", tmp_path / "a", "--seed", 7]) == 0
    assert run_cli(["sample", run, "--n", 40, "--out", tmp_path / "b", "--seed", 7]) == 0
    assert run_cli(["sample", run, "--n", 12, "--out", tmp_path / "c", "--seed", 8]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 40
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert not np.array_equal(pixels(tmp_path / "a" / files[0]), pixels(tmp_path / "c" / files[0]))
    rows = list(csv.DictReader(open(tmp_path / "a" / "labels.csv")))
    model = load_model(run)
    assert model.ema and model.conditional  # the EMA generator is the one sampled
    folders = class_folders(model)
    assert len(rows) == 40 and [int(r["label"]) for r in rows] == [i % 10 for i in range(40)]
    for r in rows:
        assert r["path"].split("/")[0] == folders[int(r["label"])] and (tmp_path / "a" / r["path"]).is_file()
    # The label really is the class drawn: asking for class 3 alone redraws the same images of class 3.
    assert run_cli(["sample", run, "--n", 40, "--out", tmp_path / "three", "--seed", 7, "--class", 3]) == 0
    assert sorted(p.parent.name for p in (tmp_path / "three").rglob("*.png")) == [folders[3]] * 40
    for r in rows:
        same = np.array_equal(pixels(tmp_path / "a" / r["path"]),
                              pixels(tmp_path / "three" / folders[3] / r["path"].split("/")[1]))
        assert same == (r["label"] == "3"), r
    assert "wrote 40 images" in capsys.readouterr().out


def test_sample_npz_matches_png(trained_runs, tmp_path):
    run = trained_runs["cgan"]
    assert run_cli(["sample", run, "--n", 300, "--out", tmp_path / "s.npz", "--seed", 3]) == 0
    assert run_cli(["sample", run, "--n", 300, "--out", tmp_path / "png", "--seed", 3]) == 0
    data = np.load(tmp_path / "s.npz")
    assert data["images"].dtype == np.uint8 and data["images"].shape == (300, 1, 28, 28)
    assert data["labels"].tolist() == [i % 10 for i in range(300)] and len(data["class_names"]) == 10
    rows = list(csv.DictReader(open(tmp_path / "png" / "labels.csv")))
    for i in (0, 255, 256, 299):
        assert np.array_equal(data["images"][i, 0], pixels(tmp_path / "png" / rows[i]["path"]))
    assert data["images"].std() > 0


def test_unconditional_sample_has_no_labels(trained_runs, tmp_path):
    assert run_cli(["sample", trained_runs["gan"], "--n", 5, "--out", tmp_path / "u", "--truncation", 0.7]) == 0
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == [f"{i:06d}.png" for i in range(5)]
    assert run_cli(["sample", trained_runs["gan"], "--n", 5, "--out", tmp_path / "u.npz"]) == 0
    assert set(np.load(tmp_path / "u.npz").files) == {"images"}


def _other_version(run, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(run, copy)
    for ckpt in (copy / "checkpoints").iterdir():
        state = torch.load(ckpt / "state.pt", weights_only=True)
        state["version"] = "9.0.0"
        torch.save(state, ckpt / "state.pt")
    return copy


def _no_checkpoint(run, tmp_path):
    copy = tmp_path / "empty"
    copy.mkdir()
    shutil.copy(run / "config.yaml", copy)
    return copy


@pytest.mark.parametrize("case, argv, message", [
    ("n0", ["--n", "0"], "--n 0: expected a count from 1 to"),
    ("huge", ["--n", "1000000000"], "--n 1000000000: expected a count from 1 to 1,000,000"),
    ("class", ["--n", "3", "--class", "10"], "--class 10: out of range; this model has classes 0 to 9"),
    ("uncond", ["--n", "3", "--class", "1"], "is an unconditional model"),
    ("unwritable", ["--n", "3"], "is not a folder"),
    ("exists", ["--n", "3"], "already exists; choose another path or pass --overwrite"),
    ("nockpt", ["--n", "3"], "no checkpoint in"),
    ("version", ["--n", "3"], "written by ganforge 9.0.0; this is ganforge"),
    ("truncation", ["--n", "3", "--truncation", "0"], "--truncation 0.0: expected a value from 0.05 to 10"),
])
def test_sample_bad_input_one_line_nothing_written(trained_runs, tmp_path, capsys, case, argv, message):
    run = trained_runs["gan" if case == "uncond" else "cgan"]
    out = tmp_path / "out"
    if case == "unwritable":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    elif case == "exists":
        out.mkdir()
        (out / "mine.txt").write_text("keep")
    elif case == "nockpt":
        run = _no_checkpoint(run, tmp_path)
    elif case == "version":
        run = _other_version(run, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_cli(["sample", run, *argv, "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ganforge: error: ") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if case == "exists":
        assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_failure_while_writing_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(tmp_path / "out", folder=True) as tmp:
            (tmp / "half.png").write_bytes(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_slerp_walks_the_sphere():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    path = slerp(a, b, torch.linspace(0, 1, 5))[0]
    assert torch.allclose(path[0], a[0]) and torch.allclose(path[-1], b[0], atol=1e-6)
    assert torch.allclose(path.norm(dim=1), torch.ones(5))   # a straight line would dip to 0.707
    same = slerp(a, a, torch.linspace(0, 1, 3))[0]           # parallel endpoints fall back to a line
    assert torch.allclose(same, a.expand(3, 2))


def test_interpolate_grid_and_gif(trained_runs, tmp_path):
    assert run_cli(["interpolate", trained_runs["cgan"], "--out", tmp_path / "w.png", "--steps", 6]) == 0
    with Image.open(tmp_path / "w.png") as im:  # one walk, one row per class, 28 px + 2 px padding
        assert im.size == (6 * 30 + 2, 10 * 30 + 2)
    grid = pixels(tmp_path / "w.png")
    row0, row1 = grid[2:30, 2:30 * 6], grid[32:60, 2:30 * 6]
    assert not np.array_equal(row0, row1)  # same latents, different labels
    assert run_cli(["interpolate", trained_runs["gan"], "--out", tmp_path / "w.gif", "--gif", "--steps", 5,
                    "--rows", 3]) == 0
    with Image.open(tmp_path / "w.gif") as im:
        assert im.n_frames == 5 + 3  # there and back
    assert run_cli(["interpolate", trained_runs["gan"], "--out", tmp_path / "x.png", "--gif"]) == 2
    assert run_cli(["interpolate", trained_runs["gan"], "--out", tmp_path / "x.png", "--steps", 1]) == 2
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("kind", ["cgan", "gan"])
def test_onnx_export_runs_under_onnxruntime_and_matches_pytorch(trained_runs, tmp_path, kind):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "g.onnx"
    assert run_cli(["export", trained_runs[kind], "--format", "onnx", "--out", out]) == 0
    model = load_model(trained_runs[kind])
    z = torch.randn(7, model.z_dim, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 1, 2, 3, 9, 9, 4]) if model.conditional else None
    with torch.no_grad():
        expected = model.g(z, labels).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = {"z": z.numpy(), **({"labels": labels.numpy()} if labels is not None else {})}
    assert [i.name for i in session.get_inputs()] == list(feed)
    got = session.run(["images"], feed)[0]
    assert got.shape == (7, 1, 28, 28) and np.abs(got - expected).max() <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["num_classes"] == ("10" if kind == "cgan" else "0") and meta["z_dim"] == str(model.z_dim)


def test_torchscript_export_matches_pytorch(trained_runs, tmp_path):
    out = tmp_path / "g.pt"
    assert run_cli(["export", trained_runs["cgan"], "--format", "torchscript", "--out", out]) == 0
    model = load_model(trained_runs["cgan"])
    z, labels = torch.randn(3, model.z_dim), torch.tensor([1, 5, 7])
    extra = {"ganforge.json": ""}
    with pytest.warns(FutureWarning):
        loaded = torch.jit.load(str(out), _extra_files=extra)
    with torch.no_grad():
        assert torch.allclose(loaded(z, labels), model.g(z, labels), atol=1e-5)
    assert json.loads(extra["ganforge.json"])["num_classes"] == "10"
    assert run_cli(["export", trained_runs["cgan"], "--format", "torchscript", "--out", out]) == 2  # exists


def test_progress_gif_at_end_and_on_stop(trained_runs):
    for kind, frames in (("cgan", 2), ("gan", 1)):  # gan stopped by --max-steps inside epoch 1
        with Image.open(trained_runs[kind] / "samples" / "progress.gif") as im:
            assert im.n_frames == frames
            first = np.asarray(im.convert("RGB"))
        with Image.open(trained_runs[kind] / "samples" / "epoch_0001.png") as grid:
            assert first.shape[1] == grid.width and first.shape[0] > grid.height  # plus the caption strip


def test_compare_flags_different_protocols(trained_runs, tmp_path, capsys):
    runs = []
    for kind, n in (("cgan", 60), ("gan", 80)):
        runs.append(tmp_path / kind)
        shutil.copytree(trained_runs[kind], runs[-1])
        assert run_cli(["eval", runs[-1], "--metrics", "cls-fid", "--n", n, "--n-real", 100]) == 0
    capsys.readouterr()
    assert run_cli(["compare", *runs, "--out", tmp_path / "cmp"]) == 0
    out = capsys.readouterr().out
    assert "| cgan | demo | 2 |" in out and "cls-fid (!)" in out and "different protocols" in out
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "compare.csv")))
    assert [r["run"] for r in rows] == ["cgan", "gan"] and float(rows[0]["kimg"]) == 0.512
    assert float(rows[1]["epochs"]) == 0.5 and rows[1]["kimg"] == "0.128"  # stopped after 4 of 8 steps
    assert float(rows[0]["cls-fid"]) > 0 and float(rows[1]["loss_d_last_epoch"]) > 0
    with Image.open(tmp_path / "cmp" / "compare.png") as im:
        assert im.width > 2 * 242
    assert run_cli(["compare", *runs, "--out", tmp_path / "cmp"]) == 2  # would replace the files
    assert run_cli(["compare", *runs, "--out", tmp_path / "cmp", "--overwrite"]) == 0


def test_report_is_self_contained(trained_runs, tmp_path):
    run = tmp_path / "cgan"
    shutil.copytree(trained_runs["cgan"], run)
    assert run_cli(["report", run]) == 0
    page = (run / "report.html").read_text()
    assert page.count('src="data:image/') >= 6  # final grid, progress GIF, classes, losses, metric history, real
    assert 'alt="metric history"' in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "No evaluation yet" in page and "model:" in page


def test_output_that_cannot_fit_is_refused(tmp_path):
    from ganforge.errors import UsageError

    with pytest.raises(UsageError, match="needs about .* MiB free; ask for fewer images"):
        with atomic_output(tmp_path / "big.npz", need_bytes=2**62):
            pass
    assert list(tmp_path.iterdir()) == []


def test_web_page_inputs_are_checked_without_a_browser(trained_runs, tmp_path):
    """The page's generate function, as the browser test drives it: bounded inputs, one message each."""
    from ganforge.errors import UsageError
    from ganforge.outputs.animation import grid_size
    from ganforge.outputs.webapp import make_images

    cgan, gan = load_model(trained_runs["cgan"]), load_model(trained_runs["gan"])
    grid, path, caption = make_images(cgan, seed=3, count=9, label=2, truncation=0, out_dir=tmp_path)
    assert grid.size == grid_size(9, nrow=3, size=28) and caption == "9 images, seed 3, class 2"
    assert Image.open(path).size == grid.size
    for model, values, message in [(cgan, dict(count=65), "count 65: expected a count from 1 to 64"),
                                   (cgan, dict(count=0), "count 0"),
                                   (cgan, dict(seed=-1), "seed -1: expected an integer from 0"),
                                   (cgan, dict(label=-1), "class -1: out of range"),
                                   (cgan, dict(label=1.5), "class 1.5: expected a whole number"),
                                   (gan, dict(label=0), "unconditional model"),
                                   (gan, dict(truncation=20), "truncation 20.0: expected a value from 0.05 to 10")]:
        args = {"seed": 0, "count": 4, "label": None, "truncation": 0, **values}
        with pytest.raises(UsageError, match=message):
            make_images(model, **args, out_dir=tmp_path)
