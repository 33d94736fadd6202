"""The privacy ledger of a DP run (training/privacy.py): the plan (sigma computed by Opacus for the planned
D steps at the target epsilon, and the most steps the budget allows), the accountant that counts one
subsampled Gaussian mechanism per D step (Abadi et al. 2016; Mironov 2017 for RDP, Gopi et al. 2021 for
PRV; Opacus's implementations, none written here), and `privacy.json`, the record beside config.yaml
that every other command (eval, sample, export, report, serve) reads to say epsilon, delta and the
accountant.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ganforge import fsutil
from ganforge.config import Config
from ganforge.errors import ConfigError

RECORD = "privacy.json"
LABELS = ("labels are private like the images (each rides with its image in the clipped per-sample gradient); "
          "generation draws labels uniformly, a public distribution")


def epsilon_after(accountant: str, *, sigma: float, q: float, steps: int, delta: float,
                  history: Optional[list] = None) -> float:
    """Opacus's epsilon after `history` and then `steps` steps at (sigma, q)."""
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = [*(history or []), *([(sigma, q, steps)] if steps else [])]
    if not acc.history:
        return 0.0
    with warnings.catch_warnings():  # RDP's "optimal order is the largest alpha": the bound holds, only looser
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta=delta))


@dataclass(frozen=True)
class Plan:
    """What the run was planned for; privacy.json holds it, with the privacy spent so far."""

    epsilon_budget: float
    delta: float
    accountant: str
    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    dataset_size: int
    expected_batch_size: int
    planned_steps: int       # train.epochs x steps per epoch, when the run started
    budget_steps: int        # the most D steps whose epsilon stays within the budget


def make_plan(cfg: Config, n: int, run_dir: Path) -> Plan:
    """sigma from Opacus for the planned D steps at q = batch_size / N (or as configured), and the budget in steps."""
    p, b = cfg.privacy, cfg.train.batch_size
    q, steps = b / n, cfg.train.epochs * (n // b)
    old = _read(run_dir)
    if old and (old["noise_multiplier"], old["sample_rate"]) == (p.noise_multiplier, q):
        return Plan(**{k: old[k] for k in Plan.__dataclass_fields__})  # a resume: planned once, kept
    sigma = p.noise_multiplier
    if not sigma:
        from opacus.accountants.utils import get_noise_multiplier

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                sigma = float(get_noise_multiplier(target_epsilon=p.epsilon, target_delta=p.delta, sample_rate=q,
                                                   steps=steps, accountant=p.accountant))
        except ValueError:
            raise ConfigError(f"privacy.epsilon={p.epsilon:g}: no noise multiplier reaches it over {steps:,} D steps "
                              f"at q={q:.3g}; raise privacy.epsilon or train fewer epochs") from None
    eps = epsilon_after(p.accountant, sigma=sigma, q=q, steps=steps, delta=p.delta)
    if eps > p.epsilon:
        raise ConfigError(f"privacy.noise_multiplier={sigma:g} spends epsilon={eps:.3g} over the {steps:,} planned D "
                          f"steps, more than privacy.epsilon={p.epsilon:g}; set privacy.noise_multiplier=0 (computed)")
    lo, hi = steps, 2 * steps + 1  # bisect for the last step within the budget (epsilon grows with steps)
    while epsilon_after(p.accountant, sigma=sigma, q=q, steps=hi, delta=p.delta) <= p.epsilon:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if epsilon_after(p.accountant, sigma=sigma, q=q, steps=mid, delta=p.delta) <= p.epsilon \
            else (lo, mid)
    return Plan(p.epsilon, p.delta, p.accountant, sigma, q, p.max_grad_norm, n, b, steps, lo)


class Ledger:
    """The privacy spent: Opacus's accountant, one subsampled Gaussian mechanism per D step, and the secret
    seed of the noise and the batches."""

    def __init__(self, plan: Plan, *, secret: int):
        from opacus.accountants import create_accountant

        self.plan, self.secret = plan, secret
        self.accountant = create_accountant(plan.accountant)
        self._cached = (0, 0.0)

    @property
    def steps(self) -> int:
        return sum(int(n) for _, _, n in self.accountant.history)

    def step(self) -> None:
        self.accountant.step(noise_multiplier=self.plan.noise_multiplier, sample_rate=self.plan.sample_rate)

    def epsilon(self) -> float:
        """epsilon spent so far at the configured delta (cached per step count: PRV takes a second)."""
        if self._cached[0] != self.steps:
            p = self.plan
            self._cached = (self.steps, epsilon_after(p.accountant, sigma=p.noise_multiplier, q=p.sample_rate,
                                                      steps=0, delta=p.delta, history=self.accountant.history))
        return self._cached[1]

    def seed(self, stream: int) -> int:
        """The seed of `stream` for the next step: a function of the secret and the steps counted."""
        return int(np.random.SeedSequence([self.secret, stream, self.steps]).generate_state(1, np.uint64)[0] >> 1)

    def state_dict(self) -> dict:
        return {"accountant": dict(self.accountant.state_dict({})), "secret": self.secret}

    def load_state_dict(self, state: dict) -> None:
        from opacus.accountants import create_accountant

        loaded = create_accountant(self.plan.accountant)
        loaded.load_state_dict(state["accountant"])
        self.secret = int(state["secret"])
        # Privacy once spent stays spent: a rollback to an older checkpoint keeps the steps taken since.
        if sum(int(n) for _, _, n in loaded.history) >= self.steps:
            self.accountant = loaded


def write_record(run_dir: Path, plan: Plan, ledger: Ledger, *, step: int) -> None:
    """privacy.json beside config.yaml: the plan and the privacy spent by training step `step`."""
    spent = {"epsilon": ledger.epsilon(), "steps": ledger.steps, "step": step}
    fsutil.write_text(run_dir / RECORD, json.dumps({**asdict(plan), **spent, "labels": LABELS}, indent=1))


# ----------------------------------------------------------------------------- what other commands read


def _read(run_dir: Path) -> Optional[dict]:
    try:
        record = json.loads((Path(run_dir) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "noise_multiplier" in record else None


def summary(run_dir: Path) -> Optional[dict]:
    """What eval records, sample folders, exports, the report and the serve page say of a private run
    (epsilon spent by its latest checkpoint, delta, accountant, ...), or None for a run that is not private."""
    r = _read(run_dir)
    if r is None:
        return None
    keys = ("epsilon", "delta", "accountant", "epsilon_budget", "noise_multiplier", "sample_rate", "max_grad_norm",
            "steps", "labels")
    return {"mechanism": "DP-SGD on the discriminator (Opacus); the generator by post-processing",
            **{k: r.get(k) for k in keys}}


def describe(info: dict) -> str:
    """One line for a page: "differentially private: epsilon 9.98, delta 1e-05 (rdp accountant)"."""
    return (f"differentially private: epsilon {info['epsilon']:.3g}, delta {info['delta']:g} "
            f"({info['accountant']} accountant, DP-SGD on the discriminator)")


def check_resume(run_dir: Path, cfg: Config) -> None:
    """A resume whose remaining D steps would spend more than the budget: one line, before any work."""
    r = _read(run_dir)
    if r is None:
        raise ConfigError(f"--resume {run_dir}: a private run without a readable {RECORD}; its budget cannot be "
                          f"checked (start a new run)")
    t = cfg.train
    total = t.epochs * (r["dataset_size"] // t.batch_size)
    total = min(total, t.max_steps) if t.max_steps else total
    need = r["steps"] + max(0, total - r["step"])
    if need > r["budget_steps"]:
        eps = epsilon_after(r["accountant"], sigma=r["noise_multiplier"], q=r["sample_rate"], steps=need,
                            delta=r["delta"])
        raise ConfigError(f"--resume {run_dir}: {total:,} D steps would spend epsilon={eps:.3g}, beyond "
                          f"privacy.epsilon={r['epsilon_budget']:g} (the budget allows {r['budget_steps']:,} steps at "
                          f"sigma={r['noise_multiplier']:.3g}; {r['steps']:,} spent); lower train.epochs or "
                          f"train.max_steps")
