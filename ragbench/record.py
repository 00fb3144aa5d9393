"""The run folder: what `ragbench run` leaves behind, and the one reader later commands use.

    config.lock.yaml  fully resolved config, data fingerprints, package versions, model identities
    run.trec          the last ranking (TREC run format); absent for a closed-book pipeline
    answers.jsonl     per query: the reader's answer, long answer, context ids, prompts and raw replies
    judgements.jsonl  per judge stage and query: its score (null: unparseable), each sample's, statements,
                      prompts, replies
    relevance.jsonl   per query: an LLM assessor's 0-3 grades of the top documents and its replies (relevance_judge)
    qrels.llm.tsv     the qrels those grades make (TREC format), what the judged ranking was scored against
    experiment.jsonl  per query: an experiment stage's trials (hard negatives: context ids, reply, answer)
    hard_negatives.png, inverted_u.png   the experiment's curves
    metrics.json      {"task", "pipeline", "config_hash", "split", "n_queries", "metrics": {name: mean}, "breakdown",
                       "stages": {ranking stage id: {type, corpus, qrels, metrics}} (when several stages rank),
                       "judges": {judge stage id: {metric, model, n, judged, unparsed[, samples, spread, failures]}},
                       "corpora": {corpus stage id: unit statistics} (long_units),
                       "experiments": {experiment stage id: accuracy tables, HND, drops, curves},
                       "curves": {"R@k": {k: recall}} (the last ranking at the usual cutoffs, for plots),
                       "relevance": {relevance judge id: {qrels, pairs, graded, unparsed, relevant, grades}}}
    per_query.jsonl   {"query_id": ..., <metric>: value, ...} per evaluated query
    timings.json      per stage: cache key, whether it came from the cache, seconds

Each stage output type writes its own files (`Output.write`); `RunRecord` writes the rest and reads
a folder back for `compare`, `check`, `leaderboard` and `correlate`.
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from ragbench import __version__
from ragbench.cache import atomic_write_text
from ragbench.errors import RagbenchError
from ragbench.evaluation import Scores
from ragbench.outputs.base import Output, Produced
from ragbench.pipeline import PipelineResult
from ragbench.plan import RunPlan
from ragbench.yamlio import redact

_PACKAGES = ("ir_measures", "pytrec_eval-terrier", "bm25s", "rank-bm25", "pyserini", "numpy", "torch",
             "transformers", "sentence-transformers", "datasets")
#: what metrics.json must hold, and of which type
_REQUIRED = (("task", str), ("pipeline", str), ("config_hash", str), ("n_queries", int), ("metrics", dict))


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


@dataclass
class RunRecord:
    """One run folder: its metrics.json, read eagerly and checked; the rest read when asked for."""

    folder: Path
    data: dict[str, Any]  # metrics.json
    source: Path = field(default=Path())  # the metrics.json file it was read from

    # -- reading ---------------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        """A run folder, or its metrics.json, checked against the contract (one located line if not)."""
        p = Path(path)
        if p.is_dir():
            p = p / "metrics.json"
        if not p.exists():
            raise RagbenchError.at(str(p), "file not found (expected a run folder or its metrics.json)")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RagbenchError.at(str(p), f"not valid JSON ({e.msg})", line=e.lineno) from None
        for fld, typ in _REQUIRED:
            if not isinstance(data.get(fld), typ):
                raise RagbenchError.at(str(p), f"expected {typ.__name__}", path=fld)
        return cls(p.parent, data, p)

    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def pipeline(self) -> str:
        return self.data["pipeline"]

    @property
    def n_queries(self) -> int:
        return self.data["n_queries"]

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's aggregate metrics (name -> mean)."""
        return self.data["metrics"]

    @property
    def name(self) -> str:
        """How tables name the run: its task folder and its own folder."""
        return f"{self.folder.parent.name}/{self.folder.name}" if self.folder.parent.name else self.folder.name

    def section(self, name: str) -> dict[str, Any]:
        """A summary section of metrics.json (judges, corpora, experiments, curves, relevance, stages, breakdown)."""
        return self.data.get(name) or {}

    @property
    def has_per_query(self) -> bool:
        return (self.folder / "per_query.jsonl").exists()

    @cached_property
    def per_query(self) -> dict[str, dict[str, float]]:
        """per_query.jsonl: query id -> {metric: value}."""
        return self.read_per_query(self.folder)

    @staticmethod
    def read_per_query(folder: str | Path) -> dict[str, dict[str, float]]:
        """A run folder's per-query values alone (commands that need only those check them first)."""
        from ragbench.jsonl import json_records

        rows = json_records(Path(folder) / "per_query.jsonl", hint="expected a run folder with per_query.jsonl")
        return {str(row.pop("query_id")): row for _, row in rows}

    @cached_property
    def lock(self) -> dict[str, Any]:
        """config.lock.yaml ({} when the folder has none)."""
        path = self.folder / "config.lock.yaml"
        return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}

    @property
    def created(self) -> str:
        """When the run was made: the lock file's stamp, else metrics.json's modification time."""
        stamp = self.lock.get("created")
        return str(stamp) if stamp else datetime.fromtimestamp(self.source.stat().st_mtime, timezone.utc).isoformat(
            timespec="seconds")

    @cached_property
    def requested(self) -> list[str]:
        """The metric names the run was asked for, in order (the lock file's; else those it has)."""
        return list(self.lock.get("metrics") or self.metrics)

    @cached_property
    def timings(self) -> list[dict[str, Any]]:
        path = self.folder / "timings.json"
        return json.loads(path.read_text(encoding="utf-8"))["stages"] if path.exists() else []

    # -- writing ---------------------------------------------------------------------------------
    @classmethod
    def write(cls, plan: RunPlan, result: PipelineResult, scores: Scores) -> RunRecord:
        """Write the run folder: the lock file, each output type's files, metrics, per-query values, timings."""
        folder, task = plan.folder, plan.task
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "config.lock.yaml", yaml.safe_dump(_lock(plan, result), sort_keys=False,
                                                                       allow_unicode=True))
        for kind, produced in _by_output_type(result).items():
            kind.write(folder, task, produced, tag=plan.pipeline.name)
        if scores.sections.get("experiments"):
            from ragbench.report.experiment_plots import plot

            for summary in scores.sections["experiments"].values():
                plot(summary, folder, title=task.name)
        data = {"task": task.name, "pipeline": plan.pipeline.name, "config_hash": plan.config_hash, "split": task.split,
                "n_queries": len(scores.per_query), "metrics": scores.aggregate,
                **({"breakdown": scores.breakdown} if scores.breakdown else {}),
                **({"stages": scores.stages} if scores.stages else {}), **scores.sections}
        atomic_write_text(folder / "metrics.json", json.dumps(data, indent=2) + "\n")
        atomic_write_text(folder / "per_query.jsonl", "".join(
            json.dumps({"query_id": qid, **values}) + "\n" for qid, values in scores.per_query.items()))
        atomic_write_text(folder / "timings.json", json.dumps({"stages": [
            {"id": s.spec.id, "cache_key": s.key, "from_cache": s.cached, "batches_cached": s.batches_cached,
             "batches": s.batches_total, "seconds": round(s.seconds, 3)} for s in result.stages]}, indent=2) + "\n")
        record = cls(folder, data, folder / "metrics.json")
        record.requested = list(scores.metrics)
        return record


def _by_output_type(result: PipelineResult) -> dict[type[Output], list[Produced]]:
    """Every output type in the run (a judged ranking also counts as a ranking), with the stages that produced it."""
    out: dict[type[Output], list[Produced]] = {}
    for s in result.stages:
        for kind in type(s.output).__mro__:
            if isinstance(kind, type) and issubclass(kind, Output) and kind is not Output:
                out.setdefault(kind, []).append(Produced(s.spec.id, s.output))
    return out


def _platform() -> str:
    """platform.platform() as Linux prints it, without the `uname -p` subprocess it starts: a run should not fork
    (a forked child shares the run's memory until it execs, and /proc counts those pages twice)."""
    u = platform.uname()  # its processor field, the subprocess, is only computed when read
    libc = "".join(platform.libc_ver())
    return "-".join(p for p in (u.system, u.release, u.machine, f"with-{libc}" if libc else "") if p)


def _lock(plan: RunPlan, result: PipelineResult) -> dict[str, Any]:
    task, corpus = plan.task, plan.task.corpus
    return {
        "ragbench": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": redact(" ".join(plan.request.argv)),
        "config_hash": plan.config_hash,
        "executor": plan.executor.describe(),
        "pipeline": {"file": plan.pipeline.file, **plan.pipeline.as_dict()},
        "task": {
            "name": task.name, "split": task.split, "source": task.source, "limit": plan.request.limit,
            "n_queries": len(task.queries), "fingerprint": task.fingerprint,
            "corpus": None if corpus is None else {"source": corpus.source, "documents": len(corpus),
                                                   "fingerprint": corpus.fingerprint},
        },
        "metrics": plan.metrics,
        "stages": [{"id": s.spec.id, "type": s.spec.type, "cache_key": s.key, "identity": s.identity}
                   for s in result.stages],
        "environment": {"python": sys.version.split()[0], "platform": _platform(),
                        "packages": package_versions()},
    }
