"""Evaluation metrics: FID, KID, Inception Score, precision/recall and classifier metrics.

Heusel et al. 2017 (FID), Bińkowski et al. 2018 (KID), Salimans et al. 2016 (Inception Score),
Kynkäänniemi et al. 2019 (precision and recall). See docs/evaluation.md.

    from ganforge.metrics import evaluate, make_generate, METRICS

Names are imported on first use, so `ganforge --help` does not load scipy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on first use
    from ganforge.metrics.definitions import METRICS, MetricSpec
    from ganforge.metrics.evaluation import evaluate, flat_values, make_generate

# `evaluate` is a function; its module is `evaluation` (a submodule named like the function
# would replace the package attribute with the module the first time it is imported).
_EXPORTS = {"METRICS": "definitions", "MetricSpec": "definitions", "evaluate": "evaluation",
            "make_generate": "evaluation", "flat_values": "evaluation"}
__all__ = ["METRICS", "MetricSpec", "evaluate", "flat_values", "make_generate"]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"ganforge.metrics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ganforge.metrics' has no attribute {name!r}")
