"""Stand-ins for the commands that documentation blocks call, used by test_docs.py.

Each is installed as a small executable on the PATH of a docs block (`ganforge`, `torchrun`, `make`,
`tensorboard`, `python`) and applies one documented rule before running the real thing, so that a
block runs as written but in seconds. The rules are listed in test_docs.py's docstring.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TINY_TRAIN = ["--set", "data.limit=256", "--set", "model.g_channels=8", "--set", "model.d_channels=8",
              "--set", "train.log_every=1", "--set", "train.eval_n=16"]
TINY_N = "16"           # generated and real images of an evaluation
AUDIT_N = "64"          # generated images of an audit (its classifiers need a few of each class)
TRAIN_STEPS, RESUME_STEPS = 2, 4


def _replace_value(argv: list[str], options: tuple[str, ...], value: str, *, add: bool) -> list[str]:
    out, i, seen = [], 0, False
    while i < len(argv):
        word = argv[i]
        name = word.split("=", 1)[0]
        if name in options:
            seen = True
            out += [name, value]
            i += 1 if "=" in word else 2
            continue
        out.append(word)
        i += 1
    return out + ([options[0], value] if add and not seen else [])


def _newest_checkpoint(path: str) -> str:
    """`RUN/checkpoints/step_000012000` in a document means a checkpoint of RUN: its newest one."""
    p = Path(path)
    if p.exists() or not re.fullmatch(r"step_\d+", p.name):
        return path
    found = sorted(p.parent.glob("step_*"))
    return str(found[-1]) if found else path


def _value_of(argv: list[str], option: str) -> str | None:
    for i, word in enumerate(argv):
        if word == option and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


def _starts_a_run(argv: list[str]) -> bool:
    """A new run (not --resume RUN_DIR; --resume auto when its run has no checkpoint yet)."""
    resume = _value_of(argv, "--resume")
    if resume is None:
        return True
    if resume != "auto":
        return False
    name = _value_of(argv, "--name") or _value_of(argv, "--preset") or "demo"
    return not any((Path(_value_of(argv, "--out") or "runs") / name / "checkpoints").glob("step_*"))


def tiny(argv: list[str]) -> list[str]:
    """The documented shrinking of a `ganforge` command line (see test_docs.py)."""
    if not argv:
        return argv
    if argv[0] == "train":
        steps = RESUME_STEPS if "--resume" in argv else TRAIN_STEPS
        max_steps = [argv[i + 1] for i, w in enumerate(argv[:-1]) if w == "--max-steps"]
        argv = _replace_value(argv, ("--max-steps",), str(min([steps, *map(int, max_steps)])), add=True)
        return argv + TINY_TRAIN + _tiny_batch(argv) if _starts_a_run(argv) else argv
    if argv[0] == "sweep":
        trials = min(2, int(_value_of(argv, "--trials") or 2))
        workers = min(os.cpu_count() or 1, int(_value_of(argv, "--workers") or 1))
        argv = _replace_value(argv, ("--trials",), str(trials), add=True)
        argv = _replace_value(argv, ("--workers",), str(workers), add=True)
        return argv + TINY_TRAIN + ["--set", "train.epochs=1", "--set", "train.threads=1"]
    if argv[0] == "audit":
        return [_newest_checkpoint(w) if "/checkpoints/" in w else w
                for w in _replace_value(argv, ("--n",), AUDIT_N, add=True)]
    if argv[0] == "eval":
        argv = _replace_value(argv, ("--n", "--n-gen"), TINY_N, add=True)
        argv = _replace_value(argv, ("--n-real",), TINY_N, add=True)
        return [_newest_checkpoint(w) if "/checkpoints/" in w else w for w in argv]
    return argv


def _tiny_batch(argv: list[str]) -> list[str]:
    """A preset's batch above 128 becomes 128, so that the 256 images hold one (a private run's sampling
    rate, batch / N, must be below 1); a batch the command sets itself is kept."""
    if "--batch-size" in argv or any(w.startswith("train.batch_size=") for w in argv):
        return []
    from ganforge.config import preset_config

    preset = _value_of(argv, "--preset") or "demo"
    try:
        batch = preset_config(preset).train.batch_size
    except Exception:  # an unknown preset: the command's own error says so
        return []
    return ["--set", "train.batch_size=128"] if batch > 128 else []


def ganforge(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-m", "ganforge", *tiny(argv)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(argv: list[str]) -> None:
    """Two CPU processes on this one machine: --nproc_per_node=2, --nnodes=1, a local rendezvous."""
    module = argv.index("-m") if "-m" in argv else len(argv)
    launcher, program = argv[:module], argv[module:]
    launcher = [re.sub(r"^--nproc_per_node=\d+$", "--nproc_per_node=2", w) for w in launcher]
    launcher = [re.sub(r"^--nnodes=\d+$", "--nnodes=1", w) for w in launcher]
    launcher = [re.sub(r"^--rdzv_endpoint=.*$", f"--rdzv_endpoint=127.0.0.1:{_free_port()}", w) for w in launcher]
    if program[:2] == ["-m", "ganforge"]:
        program = program[:2] + tiny(program[2:])
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", *launcher, *program])


def make(argv: list[str]) -> None:
    """A target's own recipe from the Makefile, without its prerequisites (nothing is installed);
    `make test` only collects the suite, since this test is part of it."""
    recipes, target = {}, None
    for line in Path("Makefile").read_text().splitlines():
        m = re.match(r"^([\w.-]+):", line)
        if m:
            target = m.group(1)
            recipes[target] = []
        elif line.startswith("\t") and target:
            recipes[target].append(line.strip())
    for name in argv or ["install"]:
        if name not in recipes:
            sys.exit(f"make: no target {name!r} in the Makefile")
        for command in recipes[name]:
            command = command.replace("$(BIN)/", "").replace("$(PYTHON)", "python")
            if "pytest" in command:
                command += " --collect-only"
            print(f"make {name}: {command}", flush=True)
            code = subprocess.call(command, shell=True)
            if code:
                sys.exit(code)


def tensorboard(argv: list[str]) -> None:
    """Started on a free local port, checked to answer with its page, then stopped."""
    argv = _replace_value(argv, ("--port",), str(_free_port()), add=True)
    port = argv[argv.index("--port") + 1]
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", *argv, "--host", "127.0.0.1"])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    if r.status == 200 and b"TensorBoard" in r.read():
                        print(f"tensorboard answered on port {port}")
                        return
            except OSError:
                if proc.poll() is not None:
                    sys.exit(f"tensorboard exited with {proc.returncode}")
                time.sleep(1)
        sys.exit("tensorboard did not answer within 120 s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def python(argv: list[str]) -> None:
    """This interpreter; the classifier script trains one short epoch and writes into tmp/, never into
    the package's shipped weights."""
    if argv and argv[0].endswith("train_classifier.py"):
        argv = argv + ["--epochs", "1", "--limit", "512", "--out", "tmp/classifier.safetensors"]
    os.execv(sys.executable, [sys.executable, *argv])


STAND_INS = {"ganforge": ganforge, "torchrun": torchrun, "make": make, "tensorboard": tensorboard,
             "python": python, "python3": python}


def install(bin_dir: Path) -> None:
    """One executable per stand-in in `bin_dir`, each calling the function above."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    here = str(Path(__file__).resolve().parent)
    for name in STAND_INS:
        exe = bin_dir / name
        exe.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {here!r})\n"
                       f"from docs_stand_ins import STAND_INS\nSTAND_INS[{name!r}](sys.argv[1:])\n")
        exe.chmod(0o755)
