"""`ragbench compare`: per-metric deltas between runs, with paired significance tests over queries.

Every run is compared with the first (the baseline) on the queries both evaluated (per_query.jsonl).
Per metric: both means, the delta, win / tie / loss counts per query, and two paired tests from
scipy: Student's paired t-test (`ttest_rel`) and a paired randomization test (`permutation_test`
with `permutation_type="samples"`: the sign of each query's difference is flipped at random,
10,000 resamples, seeded), both two-sided. A metric constant in both runs has no test (None).
A run over passages (`type: passages`) is compared with a run over whole documents at the document
level: its M[doc] (each article at its best passage) against the other's M.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ragbench.errors import RagbenchError
from ragbench.metrics.spec import DOC_SUFFIX, level_name, ranks_passages
from ragbench.record import RunRecord


@dataclass(frozen=True)
class Delta:
    baseline: str
    run: str
    metric: str
    n: int  # queries in both runs
    mean_baseline: float
    mean_run: float
    delta: float
    wins: int  # queries where the run is higher
    ties: int
    losses: int
    t_p: float | None  # paired t-test, two-sided
    rand_p: float | None  # paired randomization test, two-sided

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def paired_tests(a: np.ndarray, b: np.ndarray, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float | None, float | None]:
    """(paired t-test p, paired randomization test p), two-sided; None when the differences are all equal."""
    d = b - a
    if len(d) < 2 or np.all(d == d[0]):
        return None, None
    t = stats.ttest_rel(b, a)
    perm = stats.permutation_test((b, a), lambda x, y: np.mean(x - y), permutation_type="samples",
                                  n_resamples=resamples, alternative="two-sided", random_state=seed)
    clean = lambda v: None if v is None or math.isnan(v) else float(v)  # noqa: E731
    return clean(t.pvalue), clean(perm.pvalue)


def paired(base: dict[str, dict[str, float]], run: dict[str, dict[str, float]],
           metric: str, run_metric: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The metric's per-query values of the queries both runs scored (baseline, run), in query-id order.

    `run_metric`: the run's name for the same figure when it differs from the baseline's."""
    other = run_metric or metric
    qids = sorted(q for q in base.keys() & run.keys()
                  if base[q].get(metric) is not None and run[q].get(other) is not None)
    return np.array([base[q][metric] for q in qids], float), np.array([run[q][other] for q in qids], float)


def column(rec: RunRecord, name: str) -> str:
    """The run's name for a figure (M[doc] of a run over whole documents is its M)."""
    return level_name(name, ranks_passages(rec.metrics))


def shared_names(records: list[RunRecord]) -> list[str]:
    """The figures every run has, in the baseline's order. When runs over passages meet runs over whole
    documents, retrieval figures compare at the document level only (R@10 over passages is another
    quantity than over documents): M[doc] of the former against M of the latter. Figures with no
    document-level variant (answer metrics, judges) compare as they are."""
    if len({ranks_passages(rec.metrics) for rec in records}) == 1:
        return [m for m in records[0].metrics if all(m in rec.metrics for rec in records)]
    names = []
    for m in records[0].metrics:
        if not m.endswith(DOC_SUFFIX) and any(m + DOC_SUFFIX in rec.metrics for rec in records):
            m += DOC_SUFFIX
        if all(column(rec, m) in rec.metrics for rec in records):
            names.append(m)
    return list(dict.fromkeys(names))


def compare(runs: list[Path], metrics: list[str] | None = None, resamples: int = 10_000, seed: int = 0) -> list[Delta]:
    """Each run against runs[0], metric by metric (default: the metrics all runs share, in the baseline's order)."""
    if len(runs) < 2:
        raise RagbenchError.at("RUNS", "compare needs at least two run folders (the first is the baseline)")
    records = {r: RunRecord.read(r) for r in runs}
    tasks = {rec.task for rec in records.values()}
    if len(tasks) > 1:
        raise RagbenchError.at("RUNS", f"runs are on different tasks ({', '.join(sorted(tasks))}); "
                                       "per-query tests need the same queries")
    per_query = {r: records[r].per_query for r in runs}
    base = runs[0]
    names = metrics or shared_names([records[r] for r in runs])
    out = []
    for run in runs[1:]:
        for m in names:
            a, b = paired(per_query[base], per_query[run], column(records[base], m), column(records[run], m))
            if not len(a):
                raise RagbenchError.at(str(run / "per_query.jsonl"),
                                       f"no per-query values of '{m}' shared with {records[base].name}")
            t_p, rand_p = paired_tests(a, b, resamples, seed)
            out.append(Delta(records[base].name, records[run].name, m, len(a), float(a.mean()), float(b.mean()),
                             float(b.mean() - a.mean()), int((b > a).sum()), int((b == a).sum()), int((b < a).sum()),
                             t_p, rand_p))
    return out
