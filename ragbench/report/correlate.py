"""Which retrieval metric predicts answer quality: rank correlations between metrics of stored runs.

The way Schwartz et al. (docs/methods.md, "Recall-free retrieval measures") judge a retrieval measure: correlate it
with the graded answer. Two levels:
- queries: within each run, over its queries (the per-query values in per_query.jsonl), and
  pooled over all runs given;
- runs: over runs, between their aggregate values (metrics.json), when there are at least 3.
Kendall's tau-b and Spearman's rho from scipy, with their two-sided p-values. A metric that is
constant over the sample has no rank correlation: reported as None, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy import stats

from ragbench.errors import RagbenchError
from ragbench.record import RunRecord


@dataclass(frozen=True)
class Correlation:
    level: str  # "queries" | "runs"
    sample: str  # a run's name, "pooled", or "runs"
    x: str
    y: str
    n: int
    tau: float | None
    tau_p: float | None
    rho: float | None
    rho_p: float | None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def correlation(level: str, sample: str, x: str, y: str, xs: list[float], ys: list[float]) -> Correlation:
    n = len(xs)
    if n < 3:
        return Correlation(level, sample, x, y, n, None, None, None, None, "fewer than 3 pairs")
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        which = x if len(set(xs)) < 2 else y
        return Correlation(level, sample, x, y, n, None, None, None, None, f"{which} is constant")
    tau = stats.kendalltau(xs, ys)  # tau-b: ties in either variable accounted for
    rho = stats.spearmanr(xs, ys)
    clean = lambda v: None if v is None or math.isnan(v) else float(v)  # noqa: E731
    return Correlation(level, sample, x, y, n, clean(tau.statistic), clean(tau.pvalue), clean(rho.statistic),
                       clean(rho.pvalue))


def correlate(runs: list[Path], xs: list[str], ys: list[str]) -> list[Correlation]:
    """Every (x, y) pair at the query level (each run, then pooled) and, with >= 3 runs, at the run level."""
    per_query = {run: RunRecord.read_per_query(run) for run in runs}  # the values it correlates, checked first
    records = {run: RunRecord.read(run) for run in runs}
    aggregates = {run: rec.metrics for run, rec in records.items()}
    names = {run: rec.name for run, rec in records.items()}
    out: list[Correlation] = []
    for x in xs:
        for y in ys:
            pooled_x: list[float] = []
            pooled_y: list[float] = []
            for run, rows in per_query.items():
                pairs = [(r[x], r[y]) for r in rows.values() if r.get(x) is not None and r.get(y) is not None]
                if not pairs and rows:
                    missing = [m for m in (x, y) if not any(m in r for r in rows.values())]
                    if missing:
                        has = ", ".join(sorted({k for r in rows.values() for k in r}))
                        raise RagbenchError.at(str(run / "per_query.jsonl"),
                                               f"no per-query values for {', '.join(missing)} (it has: {has})")
                a, b = [p[0] for p in pairs], [p[1] for p in pairs]
                out.append(correlation("queries", names[run], x, y, a, b))
                pooled_x += a
                pooled_y += b
            if len(runs) > 1:
                out.append(correlation("queries", "pooled", x, y, pooled_x, pooled_y))
            if len(runs) >= 3:
                have = [run for run in runs if x in aggregates[run] and y in aggregates[run]]
                out.append(correlation("runs", "runs", x, y, [aggregates[r][x] for r in have],
                                       [aggregates[r][y] for r in have]))
    return out
