"""One trial of a sweep as a `ganforge train` process, followed through the run's metrics.jsonl.

The periodic evaluation (`ganforge.training.periodic_eval`) appends `{"step", "epoch", "eval/<metric>"}`
lines to metrics.jsonl right after the log line of the same step, which carries `kimg`; the sweep
reads them from outside the process, so training needs no hook for it. A stopped trial gets SIGTERM,
which `ganforge train` answers by checkpointing at the end of its log window and exiting with 143.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

POLL_S = 1.0          # how often metrics.jsonl is read while a trial runs
STOP_WAIT_S = 300.0   # a stopped trial that has not exited after this long is killed


@dataclass(frozen=True)
class Evaluation:
    images: int       # images seen when it was made: Optuna's step
    value: float


def read_evaluations(metrics: Path, metric: str, *, grid: int = 0) -> list[Evaluation]:
    """The evaluations of `metric` in a run's metrics.jsonl, in order. Images seen come from the log
    line of the same step; `grid` (images, from train.eval_every_kimg) rounds them down to the multiple
    the evaluation was due at, so trials of different batch sizes report at the same steps."""
    try:
        lines = metrics.read_text().splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return []
    out, images, key = [], 0, f"eval/{metric}"
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the line being written
            continue
        if not isinstance(record, dict):
            continue
        if "kimg" in record:
            images = round(float(record["kimg"]) * 1000)
        value = record.get(key)
        if isinstance(value, (int, float)):
            out.append(Evaluation(images // grid * grid if grid else images, float(value)))
    return out


class TrialProcess:
    """`argv` (a `ganforge train`) started with its output in `log`; its evaluations as they appear."""

    def __init__(self, argv: list[str], *, metrics: Path, metric: str, log: Path, threads: int, grid: int = 0):
        self.argv, self.metrics, self.metric, self.log, self.grid = argv, metrics, metric, log, grid
        # The child imports the ganforge this sweep runs, wherever it was imported from.
        source = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
        self.proc: Optional[subprocess.Popen] = None
        self._wake = threading.Event()

    def start(self) -> TrialProcess:
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         stdin=subprocess.DEVNULL)
        return self

    def follow(self) -> Iterator[Evaluation]:
        """Each new evaluation while the process runs, and those written just before it exited."""
        assert self.proc is not None
        done = 0
        while True:
            running = self.proc.poll() is None
            found = read_evaluations(self.metrics, self.metric, grid=self.grid)
            yield from found[done:]
            done = max(done, len(found))
            if not running:
                return
            self._wake.wait(POLL_S)

    def stop(self) -> Optional[int]:
        """SIGTERM (training checkpoints and exits), then SIGKILL if it has not exited in STOP_WAIT_S."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        self._wake.set()
        try:
            return self.proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def signal(self) -> None:
        """Ask the process to stop without waiting for it (from a signal handler)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait()

    def last_line(self) -> str:
        """The last line the process printed: for a failed trial, its reason."""
        try:
            lines = [s for s in self.log.read_text(errors="replace").splitlines() if s.strip()]
        except OSError:
            return ""
        errors = [s for s in lines if s.startswith("ganforge: error:")]
        return (errors or lines or [""])[-1].strip()
