"""The run folder: what `ragbench run` leaves behind and later commands read.

    config.lock.yaml  fully resolved config, data fingerprints, package versions, model identities
    run.trec          the last ranking (TREC run format); absent for a closed-book pipeline
    answers.jsonl     per query: the reader's answer, long answer, context ids, prompts and raw replies
    judgements.jsonl  per judge stage and query: its score (null: unparseable), each sample's, statements, prompts, replies
    relevance.jsonl   per query: an LLM assessor's 0-3 grades of the top documents and its replies (relevance_judge)
    qrels.llm.tsv     the qrels those grades make (TREC format), what the judged ranking was scored against
    experiment.jsonl  per query: an experiment stage's trials (hard negatives: context ids, reply, answer)
    hard_negatives.png, inverted_u.png   the experiment's curves
    metrics.json      {"task", "pipeline", "config_hash", "n_queries", "metrics": {name: mean}, "breakdown": {...},
                       "judges": {judge stage id: {metric, model, n, judged, unparsed[, samples, spread, failures]}},
                       "stages": {ranking stage id: {type, corpus, metrics}} (when several stages rank),
                       "corpora": {corpus stage id: unit statistics} (long_units),
                       "relevance": {relevance judge id: {qrels, pairs, graded, unparsed, relevant, grades}},
                       "experiments": {experiment stage id: accuracy tables, HND, drops, curves},
                       "curves": {"R@k": {k: recall}} (the last ranking at the usual cutoffs, for plots)}
    per_query.jsonl   {"query_id": ..., <metric>: value, ...} per evaluated query
    timings.json      per stage: cache key, whether it came from the cache, seconds
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from ragbench import __version__
from ragbench.cache import atomic_write_text
from ragbench.config import Pipeline, stable_hash
from ragbench.errors import RagbenchError
from ragbench.evaluation import judge_summaries
from ragbench.pipeline import PipelineResult
from ragbench.trec import format_run
from ragbench.types import TaskData

_PACKAGES = ("ir_measures", "pytrec_eval-terrier", "bm25s", "rank-bm25", "pyserini", "numpy", "torch",
             "transformers", "sentence-transformers", "datasets")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def config_hash(pipeline: Pipeline, task: TaskData, metrics: list[str], limit: int | None) -> str:
    return stable_hash([pipeline.as_dict(), task.name, task.split, limit, metrics, task.fingerprint])[:12]


def default_folder(results_dir: Path, task: TaskData, pipeline: Pipeline, chash: str) -> Path:
    return results_dir / "runs" / task.name / f"{pipeline.name}-{chash}"


def write_run_folder(folder: Path, pipeline: Pipeline, task: TaskData, result: PipelineResult, metrics: list[str],
                     aggregate: dict[str, float], per_query: dict[str, dict[str, float]], chash: str,
                     limit: int | None, argv: list[str], breakdown: dict[str, Any] | None = None,
                     by_stage: dict[str, Any] | None = None, experiments: dict[str, Any] | None = None,
                     curves: dict[str, dict[str, float]] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lock: dict[str, Any] = {
        "ragbench": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(argv),
        "config_hash": chash,
        "pipeline": {"file": pipeline.file, **pipeline.as_dict()},
        "task": {
            "name": task.name, "split": task.split, "source": task.source, "limit": limit,
            "n_queries": len(task.queries), "fingerprint": task.fingerprint,
            "corpus": None if task.corpus is None else {"source": task.corpus.source, "documents": len(task.corpus),
                                                        "fingerprint": task.corpus.fingerprint},
        },
        "metrics": metrics,
        "stages": [{"id": s.spec.id, "type": s.spec.type, "cache_key": s.key, "identity": s.identity} for s in result.stages],
        "environment": {"python": sys.version.split()[0], "platform": platform.platform(), "packages": package_versions()},
    }
    atomic_write_text(folder / "config.lock.yaml", yaml.safe_dump(lock, sort_keys=False, allow_unicode=True))
    ranking, reader = result.final_ranking, result.reader
    if ranking is not None:
        atomic_write_text(folder / "run.trec", format_run((ranking.ranking(q.id) for q in task.queries), tag=pipeline.name))
    if reader is not None:
        atomic_write_text(folder / "answers.jsonl", "".join(
            json.dumps({**reader.answers[q.id].to_json(), "llm": reader.identity.get("llm", {}).get("model")}, ensure_ascii=False) + "\n"
            for q in task.queries if q.id in reader.answers))
    if result.judges:
        atomic_write_text(folder / "judgements.jsonl", "".join(
            json.dumps({"stage": judge.spec.id, **judge.judgements[q.id].to_json(), "llm": judge.identity.get("llm", {}).get("model")},
                       ensure_ascii=False) + "\n"
            for judge in result.judges for q in task.queries if q.id in judge.judgements))
    for exp in result.experiments:
        atomic_write_text(folder / "experiment.jsonl", "".join(
            json.dumps({**exp.probes[q.id].to_json(), "llm": exp.identity.get("llm", {}).get("model")}, ensure_ascii=False) + "\n"
            for q in task.queries if q.id in exp.probes))
    judged = [s for s in result.stages if s.spec.cls.produces == "relevance"]
    for rel in judged:
        from ragbench.judges.relevance import relevance_summary

        atomic_write_text(folder / "relevance.jsonl", "".join(
            json.dumps({"stage": rel.spec.id, **rel.relevance[q.id].to_json(), "llm": rel.identity.get("llm", {}).get("model")},
                       ensure_ascii=False) + "\n" for q in task.queries if q.id in rel.relevance))
        assert rel.view is not None
        atomic_write_text(folder / "qrels.llm.tsv", "".join(
            f"{qid}\t0\t{d}\t{g}\n" for qid, row in rel.view.qrels.items() for d, g in row.items()))
    if experiments:
        from ragbench.report.experiment_plots import plot

        for summary in experiments.values():
            plot(summary, folder, title=task.name)
    atomic_write_text(folder / "metrics.json", json.dumps({
        "task": task.name, "pipeline": pipeline.name, "config_hash": chash, "split": task.split,
        "n_queries": len(per_query), "metrics": aggregate, **({"breakdown": breakdown} if breakdown else {}),
        **({"stages": by_stage} if by_stage else {}),
        **({"judges": judge_summaries(result)} if result.judges else {}),
        **({"corpora": {c.spec.id: c.stats for c in result.corpora}} if result.corpora else {}),
        **({"experiments": experiments} if experiments else {}),
        **({"curves": curves} if curves else {}),
        **({"relevance": {r.spec.id: {"qrels": r.spec.options.qrels, **relevance_summary(r.relevance, r.spec.options.relevant_at)}
                          for r in judged}} if judged else {})}, indent=2) + "\n")
    atomic_write_text(folder / "per_query.jsonl", "".join(
        json.dumps({"query_id": qid, **values}) + "\n" for qid, values in per_query.items()))
    atomic_write_text(folder / "timings.json", json.dumps({"stages": [
        {"id": s.spec.id, "cache_key": s.key, "from_cache": s.cached, "batches_cached": s.batches_cached,
         "batches": s.batches_total, "seconds": round(s.seconds, 3)} for s in result.stages]}, indent=2) + "\n")


def read_metrics(path: str | Path) -> dict[str, Any]:
    """metrics.json from a run folder or the file itself, checked against the contract."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    if not p.exists():
        raise RagbenchError.at(str(p), "file not found (expected a run folder or its metrics.json)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RagbenchError.at(str(p), f"not valid JSON ({e.msg})", line=e.lineno) from None
    for fld, typ in (("task", str), ("pipeline", str), ("config_hash", str), ("n_queries", int), ("metrics", dict)):
        if not isinstance(data.get(fld), typ):
            raise RagbenchError.at(str(p), f"expected {typ.__name__}", path=fld)
    return data


def read_per_query(folder: str | Path) -> dict[str, dict[str, float]]:
    """per_query.jsonl of a run folder: query id -> {metric: value}."""
    from ragbench.jsonl import json_records

    rows = json_records(Path(folder) / "per_query.jsonl", hint="expected a run folder with per_query.jsonl")
    return {str(row.pop("query_id")): row for _, row in rows}
