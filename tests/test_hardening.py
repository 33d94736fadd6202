"""Every command that writes, against every hostile output path: refused in one line (exit 2), the
original untouched, no debris. A new command joins by adding a row to COMMANDS, a new path to TARGETS.

Each row is refused before any work is done, so the table stays fast. The runs written at are copies
in the test's own folder, so a regression destroys a copy, not the session's shared runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
from pathlib import Path

import pytest

from ganforge.cli import main

ROOT = os.geteuid() == 0
SWEEP_SPACE = str(Path(__file__).parent / "sweep" / "space.yaml")

# argv for a command writing to `out`; `force` adds --overwrite where the command has it.
COMMANDS = {
    "sample": lambda run, out, force: ["sample", run, "--n", "4", "--out", out] + force,
    "interpolate": lambda run, out, force: ["interpolate", run, "--out", out] + force,
    "compare": lambda run, out, force: ["compare", run, "--out", out] + force,
    "report": lambda run, out, force: ["report", run, "--out", out],
    "export": lambda run, out, force: ["export", run, "--format", "torchscript", "--out", out] + force,
    "audit": lambda run, out, force: ["audit", run, "--n", "8", "--device", "cpu", "--out", out] + force,
    "eval --json": lambda run, out, force: ["eval", run, "--n", "8", "--n-real", "16", "--metrics", "cls-fid",
                                            "--device", "cpu",
                                            "--json", out] + force,
    "sweep": lambda run, out, force: ["sweep", "--space", SWEEP_SPACE, "--trials", "1", "--out", out],
}


def _read_only_folder(tmp: Path) -> str:
    """A folder no file can be created in. Root ignores a folder's mode bits, so as root /proc stands in:
    the kernel refuses every new name there, whoever asks."""
    if ROOT:
        return "/proc/ganforge-hostile.png"
    folder = tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "new.png")


def _device_node(tmp: Path) -> str:
    """A character device like /dev/null, made in the test's folder when allowed (root), so a regression
    replaces a node of our own and not the machine's /dev/null."""
    node = tmp / "null.png"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        return str(node)
    except (PermissionError, AttributeError):
        return "/dev/null"


def _fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "pipe.png")
    return str(tmp / "pipe.png")


def _user_file(tmp: Path) -> str:
    (tmp / "mine.png").write_bytes(b"the user's own file")
    return str(tmp / "mine.png")


_HELD: list = []  # locks a target holds for the test's length; the fixture releases them


def _locked_folder(tmp: Path) -> str:
    """A folder a training holds the lock of (nothing else in it yet: the first moment of a run)."""
    from ganforge.fsutil import FolderLock

    (tmp / "busy").mkdir()
    _HELD.append(FolderLock(tmp / "busy"))
    return str(tmp / "busy")


# name -> (path to write at, given the test folder, pass --overwrite?)
TARGETS = {
    "run folder": (lambda tmp: str(tmp / "runs" / "other"), True),
    "folder holding a run": (lambda tmp: str(tmp / "runs"), True),
    "parent of the run": (lambda tmp: str(tmp / "work"), True),
    "inside checkpoints/": (lambda tmp: str(tmp / "runs" / "other" / "checkpoints" / "new.png"), True),
    "a run's config.yaml": (lambda tmp: str(tmp / "runs" / "other" / "config.yaml"), True),
    "a run's samples/": (lambda tmp: str(tmp / "runs" / "other" / "samples"), True),
    "a checkpoint": (lambda tmp: str(next((tmp / "runs" / "other" / "checkpoints").glob("step_*"))), True),
    "current folder": (lambda tmp: ".", True),
    "folder a training holds": (_locked_folder, True),
    "device node": (_device_node, True),
    "fifo": (_fifo, True),
    "existing file, no --overwrite": (_user_file, False),
    "read-only folder": (_read_only_folder, True),
}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: its kind and, for a file, its content hash (so a change or a new
    hidden temporary shows)."""
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(top) / name
            st = os.lstat(p)
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), digest)
    return out


def _hung(signum, frame):
    raise AssertionError("the command blocked (it opened the output, a FIFO, instead of refusing it)")


@pytest.fixture
def hostile_home(trained_runs, tmp_path, monkeypatch):
    """tmp/work/r (the run the command reads), tmp/runs/other (a run it must not touch), tmp/cwd (the
    current folder, holding a user's file)."""
    shutil.copytree(trained_runs["gan"], tmp_path / "work" / "r")
    shutil.copytree(trained_runs["gan"], tmp_path / "runs" / "other")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "notes.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path / "cwd")
    yield tmp_path
    while _HELD:
        _HELD.pop().release()


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_writers_refuse_hostile_outputs(hostile_home, capsys, command, target):
    tmp = hostile_home
    make, force = TARGETS[target]
    out = make(tmp)
    before = snapshot(tmp)
    node_before = os.stat(out) if os.path.exists(out) else None
    argv = [str(a) for a in COMMANDS[command](tmp / "work" / "r", out, ["--overwrite"] if force else [])]
    capsys.readouterr()
    signal.signal(signal.SIGALRM, _hung)
    signal.alarm(60)  # opening a FIFO blocks until a reader comes: a hang is a failure, not a stuck suite
    try:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, (argv, err)
    assert "Traceback" not in err and err.startswith("ganforge: error: ") and err.count("\n") == 1, err
    assert snapshot(tmp) == before
    if node_before is not None:
        after = os.stat(out)
        assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(node_before.st_mode)
        assert after.st_ino == node_before.st_ino


def _source_root() -> str:
    """The folder of the ganforge this test imported, for a subprocess to run the same code."""
    import ganforge

    return str(Path(ganforge.__file__).resolve().parents[1])


def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    return exit_.value.code, capsys.readouterr().err


def _one_line(err: str) -> bool:
    return "Traceback" not in err and err.startswith("ganforge: error: ") and err.count("\n") == 1


def test_a_folder_named_like_a_checkpoint_is_not_one_and_pruning_keeps_the_new_checkpoint(trained_runs, tmp_path):
    from ganforge.training.checkpoint import list_checkpoints, load_checkpoint, load_latest, save_checkpoint

    run = tmp_path / "gan"
    shutil.copytree(trained_runs["gan"], run)
    real = list_checkpoints(run)[-1]
    tensors, state = load_checkpoint(real)
    users = run / "checkpoints" / "step_999999999"
    users.mkdir()
    (users / "notes.txt").write_text("a user's folder")
    bogus = run / "checkpoints" / "step_999999998"  # a checkpoint's two file names, not a checkpoint
    bogus.mkdir()
    (bogus / "weights.safetensors").write_bytes(b"x")
    (bogus / "state.pt").write_bytes(b"y")
    assert users not in list_checkpoints(run)
    new = save_checkpoint(run, step=state["progress"]["step"] + 1, tensors=tensors, state=state, keep=1)
    assert new.is_dir() and (users / "notes.txt").read_text() == "a user's folder" and bogus.is_dir()
    with pytest.warns(UserWarning):
        assert load_latest(run)[0] == new
    assert not real.exists()  # keep=1: the older real checkpoint goes, and only it


def test_resume_auto_refuses_to_start_again_inside_a_run_with_no_loadable_checkpoint(trained_runs, tmp_path, capsys):
    from tests.conftest import TINY

    out = tmp_path / "runs"
    run = out / "gan"
    shutil.copytree(trained_runs["gan"], run)
    for p in (run / "checkpoints").iterdir():
        shutil.rmtree(p)
    (run / "checkpoints" / "step_000000004").mkdir()
    (run / "checkpoints" / "step_000000004" / "notes.txt").write_text("not a checkpoint")
    before = snapshot(run)
    code, err = _cli(["train", "--out", out, "--name", "gan", "--resume", "auto", "--max-steps", "1", *TINY], capsys)
    assert code == 2 and _one_line(err) and "step_000000004" in err, err
    assert snapshot(run) == before


def test_train_out_a_run_folder_is_refused(trained_runs, tmp_path, capsys):
    from tests.conftest import TINY

    run = tmp_path / "gan"
    shutil.copytree(trained_runs["gan"], run)
    before = snapshot(run)
    code, err = _cli(["train", "--out", run, "--max-steps", "1", *TINY], capsys)
    assert code == 2 and _one_line(err) and "is a run folder" in err, err
    assert snapshot(run) == before


def test_eval_json_never_replaces_a_kept_record(trained_runs, tmp_path, capsys):
    run = tmp_path / "gan"
    shutil.copytree(trained_runs["gan"], run)
    (run / "eval").mkdir()
    kept = run / "eval" / "step_000000004-20261124T221503Z.json"
    kept.write_text('{"metrics": {}}\n')
    (run / "eval.json").write_text('{"metrics": {}}\n')
    before = snapshot(tmp_path)
    for target in (kept, run / "eval.json"):
        code, err = _cli(["eval", run, "--n", "8", "--metrics", "cls-fid", "--device", "cpu", "--json", target,
                          "--overwrite"], capsys)
        assert code == 2 and _one_line(err) and "never overwritten" in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["sample", "export", "eval --json", "audit"])
def test_a_checkpoint_of_another_model_under_checkpoints_is_refused(trained_runs, tmp_path, capsys, command):
    run = tmp_path / "gan"
    shutil.copytree(trained_runs["gan"], run)
    foreign = sorted((trained_runs["cgan"] / "checkpoints").glob("step_*"))[-1]
    shutil.copytree(foreign, run / "checkpoints" / "step_000009999")  # the newest: what readers pick
    out = tmp_path / "out.pt"
    code, err = _cli(COMMANDS[command](run, out, []), capsys)
    assert code == 2 and _one_line(err) and "another model" in err and "model.conditional" in err, err
    assert not out.exists()


def test_eval_refuses_reference_data_other_than_the_runs(tmp_path, capsys):
    from tests.conftest import TINY, shared_path

    mnist, fashion = shared_path("mnist"), shared_path("fashion-mnist")
    code, err = _cli(["train", "--out", tmp_path, "--name", "m", "--max-steps", "2", *TINY, "--set", "data.name=mnist",
                      "--data-dir", mnist, "--set", "model.conditional=false"], capsys)
    assert code == 0, err
    code, err = _cli(["eval", tmp_path / "m", "--n", "8", "--metrics", "cls-fid", "--device", "cpu",
                      "--data-dir", fashion, "--json", tmp_path / "e.json"], capsys)
    assert code == 2 and _one_line(err) and "differ in content" in err, err
    assert not (tmp_path / "e.json").exists()


def test_compare_flags_different_reference_data(trained_runs, tmp_path):
    import json

    from ganforge.outputs.compare import table
    from ganforge.outputs.runs import read_run

    runs = []
    for name, digest in (("a", "0123"), ("b", "4567")):
        shutil.copytree(trained_runs["gan"], tmp_path / name)
        record = {"dataset": "mnist", "reference_split": "train", "n_generated": 10, "reference_data_digest": digest,
                  "metrics": {"fid": {"value": 1.0, "n_generated": 10, "n_real": 10}}}
        (tmp_path / name / "eval.json").write_text(json.dumps(record))
        runs.append(read_run(tmp_path / name))
    notes = table(runs)[2]
    assert notes and "reference_data_digest=0123" in notes[0] and "reference_data_digest=4567" in notes[0]


# A full file system, simulated where every write is flushed: fsync fails as on a disk with no room.
FULL_DISK = {
    "sample": "out-samples",
    "interpolate": "walk.png",
    "compare": "cmp",
    "report": "page.html",
    "export": "g.pt",
    "eval --json": "e.json",
    "eval": None,  # the run's own eval/ record
}


@pytest.mark.parametrize("command", list(FULL_DISK))
def test_a_write_to_a_full_disk_is_one_line_and_leaves_nothing(trained_runs, tmp_path, capsys, monkeypatch, command):
    import errno

    from ganforge import fsutil

    run = tmp_path / "gan"
    shutil.copytree(trained_runs["gan"], run)
    before = snapshot(tmp_path)

    def full(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsutil, "fsync", full)
    name = FULL_DISK[command]
    if name is None:
        argv = ["eval", run, "--n", "8", "--n-real", "16", "--metrics", "cls-fid", "--device", "cpu"]
    else:
        argv = COMMANDS[command](run, tmp_path / name, [])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    last = captured.err.splitlines(keepends=True)[-1:]  # eval reports its progress on stderr first
    assert exit_.value.code == 2 and "Traceback" not in captured.err and _one_line("".join(last)), captured.err
    assert "No space left" in last[0]
    after = snapshot(tmp_path)
    assert after == before, set(after) ^ set(before)  # no temporary file, no empty folder, no 0-byte record
    if command.startswith("eval"):
        assert "cls-fid" in captured.out  # the numbers computed are still printed


def test_sigterm_during_sample_leaves_no_temporary_files(trained_runs, tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "many"
    env = dict(os.environ, PYTHONPATH=_source_root())
    proc = subprocess.Popen([sys.executable, "-m", "ganforge", "sample", str(trained_runs["gan"]), "--n", "200000",
                             "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "sample ended before writing"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.terminate()
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


# Numeric and choice arguments: one line naming the flag and what is allowed, before any work.
BAD_VALUES = [
    (["eval", "{run}", "--seed", str(2**64), "--json", "{tmp}/e.json"], "--seed"),
    (["audit", "{run}", "--seed", "-1", "--out", "{tmp}/a"], "--seed"),
    (["audit", "{run}", "--seed", str(2**64), "--out", "{tmp}/a"], "--seed"),
    (["sample", "{run}", "--n", "2", "--out", "{tmp}/s", "--device", "bogus"], "--device bogus"),
    (["sample", "{run}", "--n", "2", "--out", "{tmp}/s", "--seed", "-1"], "--seed"),
    (["sample", "{run}", "--n", "0", "--out", "{tmp}/s"], "--n 0"),
    (["sample", "{run}", "--n", "2", "--out", "{tmp}/s", "--truncation", "nan"], "--truncation nan"),
]


@pytest.mark.parametrize("argv, flag", BAD_VALUES)
def test_bad_values_are_one_line_naming_the_flag(trained_runs, tmp_path, capsys, argv, flag):
    argv = [a.format(run=trained_runs["gan"], tmp=tmp_path) for a in argv]
    code, err = _cli(argv, capsys)
    assert code == 2 and _one_line(err) and flag in err, err
    assert list(tmp_path.iterdir()) == []


def test_device_cuda_without_cuda_names_the_flag(trained_runs, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = _cli(["sample", trained_runs["gan"], "--n", "2", "--out", tmp_path / "s", "--device", "cuda"], capsys)
    assert code == 2 and _one_line(err) and "--device cuda" in err and "train.device" not in err, err


@pytest.mark.parametrize("content", [b"[1, 2]", b"\xff\xfe not utf-8", b'{"metrics": [1]}'])
def test_a_hand_edited_eval_json_is_one_line(trained_runs, tmp_path, capsys, content):
    run = tmp_path / "gan"
    shutil.copytree(trained_runs["gan"], run)
    (run / "eval.json").write_bytes(content)
    for argv in (["report", run], ["compare", run, "--out", tmp_path / "cmp"]):
        code, err = _cli(argv, capsys)
        assert code == 2 and _one_line(err) and "eval.json" in err, err
    assert not (run / "report.html").exists() and not (tmp_path / "cmp").exists()


def test_falling_back_to_an_older_checkpoint_is_one_warning_line(trained_runs, tmp_path):
    import subprocess
    import sys

    run = tmp_path / "gan"
    shutil.copytree(trained_runs["gan"], run)
    newest = sorted((run / "checkpoints").glob("step_*"))[-1]
    shutil.copytree(newest, newest.with_name("step_000000001"))
    (newest / "weights.safetensors").write_bytes(b"truncated")
    env = dict(os.environ, PYTHONPATH=_source_root())
    done = subprocess.run([sys.executable, "-m", "ganforge", "sample", str(run), "--n", "2", "--out",
                           str(tmp_path / "s")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganforge: warning: skipping bad checkpoint"), done.stderr


def test_compare_escapes_a_bar_in_a_run_name(trained_runs, tmp_path, capsys):
    run = tmp_path / "a|b"
    shutil.copytree(trained_runs["gan"], run)
    code, _ = _cli(["compare", run, "--out", tmp_path / "cmp"], capsys)
    lines = (tmp_path / "cmp" / "compare.md").read_text().splitlines()
    row = next(line for line in lines if "a" in line and "b" in line and line.startswith("| a"))
    assert code == 0 and row.startswith("| a\\|b |") and row.count(" | ") == lines[0].count(" | ")


def test_unconditional_export_lists_no_classes(trained_runs, tmp_path, capsys):
    import json

    import torch

    out = tmp_path / "g.pt"
    code, err = _cli(["export", trained_runs["gan"], "--format", "torchscript", "--out", out], capsys)
    assert code == 0, err
    files = {"ganforge.json": ""}
    torch.jit.load(str(out), _extra_files=files)
    meta = json.loads(files["ganforge.json"])
    assert meta["num_classes"] == "0" and json.loads(meta["class_names"]) == []


def test_a_metric_on_too_few_images_is_flagged_in_the_record_and_the_table(trained_runs, tmp_path, capsys):
    import json

    out = tmp_path / "e.json"
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in ["eval", trained_runs["cgan"], "--n", "10", "--n-real", "16", "--metrics",
                               "cls-is,cls-fid", "--device", "cpu", "--json", out]])
    assert exit_.value.code == 0
    record = json.loads(out.read_text())
    for name in ("cls-is", "cls-fid"):
        assert "too few images" in record["metrics"][name]["warning"]
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cls-is")]
    assert printed and "too few images" in printed[0]


# Every numeric argument x (0, negative, huge, non-integer, NaN); a value the option accepts is left out.
NUMERIC = {
    "sample": (["sample", "{run}", "--out", "{tmp}/s", "--n", "2"], ["--n", "--seed", "--truncation", "--class"]),
    "interpolate": (["interpolate", "{run}", "--out", "{tmp}/w.png"], ["--steps", "--rows", "--seed", "--truncation"]),
    "eval": (["eval", "{run}", "--json", "{tmp}/e.json", "--metrics", "cls-fid", "--device", "cpu"],
             ["--n", "--n-real", "--seed", "--batch-size"]),
    "audit": (["audit", "{run}", "--out", "{tmp}/a", "--device", "cpu"], ["--n", "--seed"]),
    "sweep": (["sweep", "--space", SWEEP_SPACE, "--out", "{tmp}/s", "--trials", "1"], ["--trials", "--workers"]),
}
VALUES = ["0", "-1", str(10**30), "2.5", "nan"]
ACCEPTED = {("--seed", "0"), ("--truncation", "2.5")}
NUMERIC_ROWS = [(cmd, flag, value) for cmd, (_, flags) in NUMERIC.items() for flag in flags for value in VALUES
                if (flag, value) not in ACCEPTED]


@pytest.mark.parametrize("command, flag, value", NUMERIC_ROWS)
def test_numeric_arguments_are_refused_in_one_line(trained_runs, tmp_path, capsys, command, flag, value):
    base, _ = NUMERIC[command]
    argv = [a.format(run=trained_runs["gan"], tmp=tmp_path) for a in base] + [flag, value]
    code, err = _cli(argv, capsys)
    assert code == 2 and _one_line(err), err
    assert list(tmp_path.iterdir()) == []


def test_onnx_export_of_a_resnet_generator_declares_its_output_shape(trained_runs, tmp_path):
    import dataclasses

    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from ganforge.models import build_models
    from ganforge.outputs.export import export
    from ganforge.outputs.model import load_model

    model = load_model(trained_runs["gan"])
    arch = dataclasses.replace(model.cfg.model, arch="resnet")
    model.g = build_models(arch, channels=model.channels, size=model.size, num_classes=0)[0].eval()
    model.cfg = dataclasses.replace(model.cfg, model=arch)
    export(model, fmt="onnx", out=tmp_path / "g.onnx")
    dims = onnx.load(str(tmp_path / "g.onnx")).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", model.channels, model.size, model.size]


def test_report_never_writes_into_the_run(trained_runs, tmp_path, capsys):
    """A read-only run (an archive, another user's) gets its report too: the progress animation a
    stopped run lacks is made in memory, not written into samples/."""
    run = tmp_path / "cgan"
    shutil.copytree(trained_runs["cgan"], run)
    (run / "samples" / "progress.gif").unlink()
    before = snapshot(run)
    code, err = _cli(["report", run, "--out", tmp_path / "page.html"], capsys)
    assert code == 0, err
    assert snapshot(run) == before and "data:image/gif;base64," in (tmp_path / "page.html").read_text()


def _copy_without_state_entry(source, run, key: str):
    """A copy of the run whose every checkpoint's state file lacks `key` (a hand-edited or foreign file)."""
    import torch

    shutil.copytree(source, run)
    for ckpt in (run / "checkpoints").glob("step_*"):
        state = torch.load(ckpt / "state.pt", weights_only=True)
        del state[key]
        torch.save(state, ckpt / "state.pt")
    return run


@pytest.mark.parametrize("command", ["sample", "eval --json", "audit", "export"])
def test_a_state_file_missing_an_entry_is_one_line(trained_runs, tmp_path, capsys, command):

    run = _copy_without_state_entry(trained_runs["gan"], tmp_path / "gan", "data_shape")
    code, err = _cli(COMMANDS[command](run, tmp_path / "out.pt", []), capsys)
    assert code == 2 and _one_line(err) and "data_shape" in err, err


def test_serve_keeps_only_the_newest_downloads_and_never_rounds(trained_runs, tmp_path):
    pytest.importorskip("gradio")
    from ganforge.outputs.model import load_model
    from ganforge.outputs.webapp import KEEP_DOWNLOADS, build_app, make_images

    model = load_model(trained_runs["gan"])
    for seed in range(KEEP_DOWNLOADS + 5):
        make_images(model, seed=seed, count=1, label=None, truncation=0, out_dir=tmp_path)
    assert len(list(tmp_path.glob("*.png"))) == KEEP_DOWNLOADS
    app, _, _ = build_app(model, out_dir=tmp_path / "d")
    numbers = {b.elem_id: b for b in app.blocks.values() if getattr(b, "elem_id", None) in ("seed", "count", "class")}
    assert set(numbers) == {"seed", "count", "class"} and all(b.precision is None for b in numbers.values())


@pytest.mark.slow  # starts the Gradio server
def test_serve_removes_its_files_at_exit_and_refuses_uploads(trained_runs, tmp_path):
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("gradio")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=_source_root(), TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "ganforge", "serve", str(trained_runs["gan"]), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        body = b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.bin\"\r\n\r\n" + b"0" * (1 << 20) \
            + b"\r\n--x--\r\n"
        request = urllib.request.Request(f"http://127.0.0.1:{port}/gradio_api/upload", data=body,
                                         headers={"Content-Type": "multipart/form-data; boundary=x"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code in (400, 413)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("ganforge-serve-", "gradio"))]


def test_resume_of_a_state_file_without_progress_is_one_line(trained_runs, tmp_path, capsys):

    run = _copy_without_state_entry(trained_runs["gan"], tmp_path / "gan", "progress")
    before = snapshot(run)
    code, err = _cli(["train", "--resume", run], capsys)
    assert code == 2 and _one_line(err) and "progress" in err, err
    assert snapshot(run) == before
