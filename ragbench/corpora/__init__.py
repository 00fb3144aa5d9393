"""Derived corpora: a corpus built from the task's corpus (or another derived one), cached like an index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def distribution(values: np.ndarray | Sequence[int], percentiles: bool = False) -> dict[str, float]:
    """min, median, mean (1 decimal), max of sizes, with p10 and p90 when `percentiles`: a corpus' statistics."""
    keys = ("min", "p10", "median", "mean", "p90", "max") if percentiles else ("min", "median", "mean", "max")
    if not len(values):
        return dict.fromkeys(keys, 0.0)
    a = np.asarray(values, dtype=np.float64)
    stats = {"min": float(a.min()), "p10": float(np.percentile(a, 10)), "median": float(np.median(a)),
             "mean": round(float(a.mean()), 1), "p90": float(np.percentile(a, 90)), "max": float(a.max())}
    return {k: stats[k] for k in keys}
