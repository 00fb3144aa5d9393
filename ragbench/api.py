"""The Python API, for notebooks: `ragbench.run` and `ragbench.experiment` go through the command line's code
path (plan, execute, score, record; sweep.py for experiments) and return Python values.

    import ragbench
    r = ragbench.run("bm25", task="scifact", set={"bm25.k1": 1.2})
    r.metrics["nDCG@10"], r.per_query.head()
    table = ragbench.experiment(["bm25", "hybrid"], tasks=["scifact"], grid={"bm25.k1": [0.9, 1.2]})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ragbench.progress import Reporter
from ragbench.record import RunRecord


@dataclass(frozen=True)
class Run:
    """A finished run: its folder, its metrics and its per-query values."""

    record: RunRecord

    @property
    def folder(self) -> Path:
        return self.record.folder

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.record.metrics)

    @property
    def per_query(self) -> pd.DataFrame:
        """One row per evaluated query (index `query_id`), one column per metric."""
        frame = pd.DataFrame.from_dict(self.record.per_query, orient="index")
        frame.index.name = "query_id"
        return frame

    def __repr__(self) -> str:
        return f"Run({self.record.name!r}, {len(self.record.per_query)} queries, folder={str(self.folder)!r})"


def _overrides(values: Mapping[str, Any] | Sequence[str] | None) -> tuple[str, ...]:
    """{"bm25.k1": 1.2} or ["bm25.k1=1.2"] -> the command line's --set values."""
    from ragbench.sweep import yaml_value

    if values is None:
        return ()
    if isinstance(values, Mapping):
        return tuple(f"{k}={yaml_value(v)}" for k, v in values.items())
    return tuple(values)


def run(pipeline: str | Path, task: str | Path = "popqa-sample", *, data: str | Path | None = None,
        split: str | None = None, limit: int | None = None, set: Mapping[str, Any] | Sequence[str] | None = None,
        until: str | None = None, out: str | Path | None = None, results: str | Path = "results",
        cache_dir: str | Path | None = None, quiet: bool = True) -> Run:
    """`ragbench run` from Python: the same plan, cache, scoring and run folder."""
    from ragbench.plan import RunRequest
    from ragbench.runner import run as run_service

    request = RunRequest(pipeline, task, data, split, limit, _overrides(set), until, out, results, cache_dir)
    return Run(run_service(request, Reporter(quiet=quiet)))


def experiment(pipelines: Sequence[str | Path], tasks: Sequence[str | Path], *,
               grid: Mapping[str, Sequence[Any]] | None = None, baseline: str | None = None,
               metrics: Sequence[str] = (), correction: str = "holm", test: str = "randomization",
               split: str | None = None, limit: int | None = None, name: str = "experiment",
               results: str | Path = "results", cache_dir: str | Path | None = None,
               quiet: bool = True) -> pd.DataFrame:
    """`ragbench experiment` from Python: every combination run, then the table (one row per variant and task:
    value, delta, p, adjusted p and win/tie/loss per metric) as a DataFrame."""
    from ragbench import sweep
    from ragbench.report.experiment import build, frame

    spec = sweep.ExperimentSpec(name=name, pipelines=[str(p) for p in pipelines], tasks=[str(t) for t in tasks],
                                grid={k: list(v) for k, v in (grid or {}).items()}, baseline=baseline,
                                metrics=list(metrics), correction=correction, test=test, split=split, limit=limit)
    done = sweep.run_experiment(spec, Path(results), cache_dir, Reporter(quiet=quiet))
    rows = build(done.done(), done.baseline.name, list(spec.metrics), spec.test, spec.correction)
    return frame(rows)
