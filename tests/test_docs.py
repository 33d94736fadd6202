"""Every code block in README.md, CONTRIBUTING.md and docs/*.md runs, so the documentation cannot drift from the code.

The rules, which are all the test changes about what a reader would copy:

- Every fenced block names its language: ```bash blocks run, ```python blocks are executed, and
  ```text blocks are not run, but each of their lines that starts `ganforge COMMAND` is checked
  against the parser: the command and every --option exist, and `a|b|c` choices are offered.
- The blocks of one file run in order, in one scratch folder laid out like the repository root
  (src/, scripts/, tests/, Makefile, ... linked in), beside `../shared` (the real shared data
  folder), with their own $GANFORGE_CACHE. A block that names `../shared/data` is skipped, with
  a message, when that folder is absent.
- A bash block runs whole under `bash -e`, with stand-ins first on its PATH
  (tests/docs_stand_ins.py) that run the real thing after one documented change each:
  `ganforge train` stops after 2 steps (4 with --resume) and, for a new run (`--resume auto`
  included, when its run has no checkpoint yet), uses 256 images, a batch of at most 128 (unless the
  command sets one) and 8-channel networks; `ganforge sweep`
  runs at most 2 trials, at most as many at once as there are cores, each of one epoch on the same 256
  images and 8-channel networks with one thread; `ganforge eval`
  generates and compares 16 images, and a `checkpoints/step_N` that does not exist means that run's
  newest checkpoint; `ganforge audit` generates 64 images, with the same checkpoint rule; `torchrun`
  starts 2 CPU processes on this one machine (one node, a local rendezvous); `make T` runs
  target T's own recipe without installing (`make test` only collects the suite, of which this
  test is part); `tensorboard` is started, checked to answer, and stopped;
  `python scripts/train_classifier.py` trains one epoch on 512 images and writes into tmp/.
  `/tmp/` in a block means the scratch folder's tmp/.
- In a python block, the keyword arguments `n=` and `n_real=` become 16.
- `<!-- docs-test: before: COMMAND -->` on the line above a block runs COMMAND first, with the
  same stand-ins: for a block that needs a run that the document does not make itself.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from docs_stand_ins import TINY_N, install

from conftest import REPO, SHARED_DATA

DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!-- docs-test: (before): (.+?) -->$")
LINKED = ["src", "scripts", "tests", "benchmarks", "docs", "Makefile", "pyproject.toml", "README.md",
          "CONTRIBUTING.md"]


@dataclass
class Block:
    path: Path
    line: int              # 1-based line of the opening fence
    lang: str
    code: str
    before: list[str]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, before = i, []
        j = i - 1
        while j >= 0 and MARKER.match(lines[j]):
            before.insert(0, MARKER.match(lines[j]).group(2))
            j -= 1
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        found.append(Block(path, start + 1, m.group(1), "\n".join(lines[start + 1:i]) + "\n", before))
        i += 1
    return found


ALL = [b for doc in DOCS for b in blocks_of(doc)]
RUN = [b for b in ALL if b.lang in ("bash", "python")]


def test_every_block_names_its_language():
    unnamed = [b.id for b in ALL if b.lang not in ("bash", "python", "text")]
    assert not unnamed, f"code blocks without bash/python/text: {unnamed}"
    assert len(RUN) >= 8  # the test finds the blocks it is meant to run


# ----------------------------------------------------------------------------- text blocks


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from ganforge.cli import make_parser

    parser = make_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def synopsis_problems(text: str) -> list[str]:
    """What in `ganforge ...` lines disagrees with the parser: commands, options, offered choices."""
    commands, problems = _subparsers(), []
    for line in text.splitlines():
        words = line.split("#")[0].split()
        if words[:1] != ["ganforge"] or len(words) < 2:
            continue
        if words[1] not in commands:
            problems.append(f"no command `ganforge {words[1]}`")
            continue
        options = {s: a for a in commands[words[1]]._actions for s in a.option_strings}
        for k, word in enumerate(words[2:], start=2):
            word = word.strip("[]")
            if not word.startswith("--"):
                continue
            name = word.split("=")[0]
            if name not in options:
                problems.append(f"`ganforge {words[1]}` has no option {name}")
                continue
            value = word.split("=")[1] if "=" in word else (words[k + 1].strip("[]") if k + 1 < len(words) else "")
            choices = options[name].choices
            if choices and "|" in value and not set(value.split("|")) <= set(map(str, choices)):
                problems.append(f"{name} {value}: offered choices are {'|'.join(map(str, choices))}")
    return problems


def test_the_synopsis_check_finds_drift():
    good = "ganforge train --preset NAME [--device auto|cpu] [--set key=value ...]\nganforge presets"
    assert synopsis_problems(good) == []
    bad = "ganforge train --presets NAME\nganforge eval RUN --split train|valid\nganforge fly"
    assert synopsis_problems(bad) == ["`ganforge train` has no option --presets",
                                      "--split train|valid: offered choices are train|test",
                                      "no command `ganforge fly`"]


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "text"], ids=lambda b: b.id)
def test_synopses_in_text_blocks_match_the_parser(block):
    assert synopsis_problems(block.code) == [], block.id


# ----------------------------------------------------------------------------- bash and python blocks


@pytest.fixture(scope="module")
def scratch_roots(tmp_path_factory):
    """One scratch repository root per document, created on first use."""
    roots: dict[Path, Path] = {}

    def root_for(doc: Path) -> Path:
        if doc not in roots:
            base = tmp_path_factory.mktemp(doc.stem.lower())
            if SHARED_DATA.is_dir():
                (base / "shared").symlink_to(SHARED_DATA.parent)
            root = base / "repo"
            root.mkdir()
            for name in LINKED:
                if (REPO / name).exists():
                    (root / name).symlink_to(REPO / name)
            (root / "tmp").mkdir()
            install(root / "bin")
            venv = root / ".venv" / "bin"
            venv.mkdir(parents=True)
            for name in ("ganforge", "python"):
                (venv / name).symlink_to(root / "bin" / name)
            (venv / "activate").write_text(f'export PATH="{venv}:$PATH"\n')
            roots[doc] = root
        return roots[doc]

    return root_for


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO / "src"),
               GANFORGE_CACHE=str(root / "cache"), COLUMNS="100", MPLBACKEND="Agg", OMP_NUM_THREADS="2")
    return env


def _run_bash(root: Path, script: str, what: str) -> None:
    script = script.replace("/tmp/", f"{root}/tmp/")
    result = subprocess.run(["bash", "-e", "-c", script], cwd=root, env=_env(root), capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{script}\n{result.stdout[-3000:]}\n" \
                                   f"{result.stderr[-3000:]}"


_SKIPPED_DOCS: set[Path] = set()  # documents with a block skipped for want of ../shared/data


@pytest.mark.slow  # each block runs real commands, seconds to minutes
@pytest.mark.parametrize("block", RUN, ids=lambda b: b.id)
def test_block_runs(block, scratch_roots):
    # A document's blocks are a walk-through: later ones use the runs earlier ones made.
    if block.path in _SKIPPED_DOCS:
        pytest.skip(f"{block.id} follows a block of the same document that needs ../shared/data ({SHARED_DATA})")
    if "../shared/data" in block.code + " ".join(block.before) and not SHARED_DATA.is_dir():
        _SKIPPED_DOCS.add(block.path)
        pytest.skip(f"{block.id} reads ../shared/data, which is absent here ({SHARED_DATA})")
    root = scratch_roots(block.path)
    for command in block.before:
        _run_bash(root, command, f"{block.id}: before")
    if block.lang == "bash":
        _run_bash(root, block.code, block.id)
    else:
        code = re.sub(r"\b(n|n_real)=\d+", rf"\1={TINY_N}", block.code)
        script = root / "tmp" / f"block_{block.line}.py"
        script.write_text(code)
        result = subprocess.run([sys.executable, str(script)], cwd=root, env=_env(root), capture_output=True,
                                text=True, timeout=1200)
        assert result.returncode == 0, f"{block.id} failed:\n{code}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_the_stand_in_rules_shrink_as_documented(tmp_path):
    from docs_stand_ins import TINY_TRAIN, tiny

    assert tiny(["train", "--preset", "demo"]) == ["train", "--preset", "demo", "--max-steps", "2", *TINY_TRAIN]
    assert tiny(["train", "--resume", "runs/x", "--max-steps", "100"]) == ["train", "--resume", "runs/x",
                                                                           "--max-steps", "4"]
    (tmp_path / "checkpoints" / "step_000000002").mkdir(parents=True)
    wanted = str(tmp_path / "checkpoints" / "step_000012000")
    assert tiny(["eval", "r", "--n-gen=50000", "--checkpoint", wanted]) == [
        "eval", "r", "--n-gen", "16", "--checkpoint", str(tmp_path / "checkpoints" / "step_000000002"),
        "--n-real", "16"]
    assert tiny(["sweep", "--space", "s.yaml", "--trials", "40", "--out", "o"]) == [
        "sweep", "--space", "s.yaml", "--trials", "2", "--out", "o", "--workers", "1", *TINY_TRAIN,
        "--set", "train.epochs=1", "--set", "train.threads=1"]
