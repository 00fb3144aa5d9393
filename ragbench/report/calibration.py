"""How well a continuous judge score agrees with binary human labels.

See docs/methods.md, "Rank correlation of measures, and judge calibration".

F1-AUC (Ispas et al.): binarise the scores at th_i = i/10, i = 0..10 (1 when score >= th), take the
F1 of each binarisation against the human labels, and summarise the 11 values. The paper prints
(1/10) * sum over the 11 values, which can exceed 1; ragbench reports instead
- `f1_auc`: the trapezoidal area under F1(th) over [0, 1] (end points weighted 1/2), in [0, 1];
- `f1_mean`: the plain mean of the 11 values.
Spearman's rho and Kendall's tau-b between scores and labels (scipy) go alongside, as in the paper.
F1 is scikit-learn's, with 0 when a binarisation predicts no positive and there is none to find.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scipy import stats
from sklearn.metrics import f1_score

THRESHOLDS = tuple(i / 10 for i in range(11))


def f1_curve(scores: Sequence[float], labels: Sequence[int]) -> list[float]:
    return [float(f1_score(labels, [int(s >= th) for s in scores], zero_division=0)) for th in THRESHOLDS]


def calibrate(scores: Sequence[float], labels: Sequence[int]) -> dict[str, Any]:
    if len(scores) != len(labels) or not scores:
        raise ValueError(f"need as many scores as labels, at least one (got {len(scores)} and {len(labels)})")
    curve = f1_curve(scores, labels)
    trapezoid = sum((a + b) / 2 for a, b in zip(curve, curve[1:], strict=False)) / 10
    out: dict[str, Any] = {"n": len(scores), "positives": int(sum(labels)), "f1_auc": trapezoid,
                           "f1_mean": sum(curve) / len(curve),
                           "f1_by_threshold": dict(zip(map(str, THRESHOLDS), curve, strict=True))}
    constant = len(set(scores)) < 2 or len(set(labels)) < 2
    rho = None if constant else stats.spearmanr(scores, labels)
    tau = None if constant else stats.kendalltau(scores, labels)
    clean = lambda v: None if v is None or math.isnan(v) else float(v)  # noqa: E731
    out.update({"spearman": clean(rho.statistic) if rho else None, "spearman_p": clean(rho.pvalue) if rho else None,
                "kendall_tau_b": clean(tau.statistic) if tau else None,
                "kendall_p": clean(tau.pvalue) if tau else None})
    return out
