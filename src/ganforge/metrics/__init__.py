"""Evaluation metrics: FID, KID, Inception Score, precision/recall and classifier metrics.

Heusel et al. 2017 (FID), Bińkowski et al. 2018 (KID), Salimans et al. 2016 (Inception Score),
Kynkäänniemi et al. 2019 (precision and recall). See docs/evaluation.md.

    from ganforge.metrics import evaluate, make_generate, METRICS
"""

from ganforge.metrics.definitions import METRICS, MetricSpec
from ganforge.metrics.evaluate import evaluate, make_generate

__all__ = ["METRICS", "MetricSpec", "evaluate", "make_generate"]
