"""Runs a pipeline's stages in order over a task, with caching and resume.

This is the one place where the flow of data is visible: each stage reads its upstream
stages' rankings and produces its own, batch by batch. A batch's output is cached the
moment it is finished, so an interrupted run loses at most the batch in flight.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ragbench.cache import Cache, make_key
from ragbench.config import Pipeline, StageSpec
from ragbench.progress import Reporter
from ragbench.stage import CorpusStage, StageEnv
from ragbench.trec import dump_rankings, load_rankings
from ragbench.types import Answer, Assessment, Judgement, Probe, Query, Ranking, TaskData


@dataclass
class StageResult:
    spec: StageSpec
    key: str
    rankings: dict[str, Ranking]
    batches_total: int
    batches_cached: int
    seconds: float
    identity: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, Answer] = field(default_factory=dict)  # readers only
    judgements: dict[str, Judgement] = field(default_factory=dict)  # judges only
    probes: dict[str, Probe] = field(default_factory=dict)  # experiments only
    relevance: dict[str, Assessment] = field(default_factory=dict)  # relevance judges only (their rankings: the input's)
    view: TaskData | None = None  # the task as this stage saw it (a derived corpus and its qrels, for corpus: stages)
    stats: dict[str, Any] = field(default_factory=dict)  # corpus stages: the derived corpus' statistics

    @property
    def cached(self) -> bool:
        return self.batches_cached == self.batches_total

    def ranking(self, qid: str) -> Ranking:
        return self.rankings.get(qid) or Ranking(qid, [], [])

    def output(self, qid: str) -> Ranking | Answer | Judgement | Probe | None:
        """What this stage produced for a query, as a downstream stage reads it."""
        kind = self.spec.cls.produces
        if kind in _RECORDS and kind != "relevance":
            return getattr(self, kind).get(qid)
        return self.ranking(qid)


@dataclass
class PipelineResult:
    stages: list[StageResult]

    @property
    def rankings(self) -> list[StageResult]:
        """Every stage that ranks documents, in pipeline order (a relevance judge: its input's ranking, its own qrels)."""
        return [s for s in self.stages if s.spec.cls.produces in RANKS]

    @property
    def corpora(self) -> list[StageResult]:
        return [s for s in self.stages if s.spec.cls.produces == "corpus"]

    @property
    def final(self) -> StageResult:
        return self.stages[-1]

    @property
    def final_ranking(self) -> StageResult | None:
        """The last stage that ranks documents (what IR metrics and run.trec see)."""
        return next((s for s in reversed(self.stages) if s.spec.cls.produces in RANKS), None)

    @property
    def reader(self) -> StageResult | None:
        """The last stage that answers (what answer metrics see)."""
        return next((s for s in reversed(self.stages) if s.spec.cls.produces == "answers"), None)

    @property
    def experiments(self) -> list[StageResult]:
        return [s for s in self.stages if s.spec.cls.produces == "probes"]

    @property
    def judges(self) -> list[StageResult]:
        """Every judge, in pipeline order (each gives its own metric: judge_acc, faithfulness, correctness)."""
        return [s for s in self.stages if s.spec.cls.produces == "judgements"]


_RECORDS: dict[str, type[Answer] | type[Judgement] | type[Probe] | type[Assessment]] = {
    "answers": Answer, "judgements": Judgement, "probes": Probe, "relevance": Assessment}
#: what stages ranking documents produce (what IR metrics and downstream rankers read)
RANKS = ("rankings", "relevance")


def _dump(outputs: list[Any]) -> str:
    """Rankings as TREC run lines; answers and judgements as JSON lines."""
    if outputs and isinstance(outputs[0], Answer | Judgement | Probe | Assessment):
        return "".join(json.dumps(o.to_json(), ensure_ascii=False) + "\n" for o in outputs)
    return dump_rankings(outputs)


def _result(spec: StageSpec, key: str, text: str, *args: Any) -> StageResult:
    record = _RECORDS.get(spec.cls.produces)
    if record is None:
        return StageResult(spec, key, load_rankings(text), *args)
    rows = {r.qid: r for r in (record.from_json(json.loads(line)) for line in text.splitlines() if line.strip())}
    return StageResult(spec, key, {}, *args, **{spec.cls.produces: rows})


def _fingerprint(queries: list[Query]) -> list[tuple[str, str]]:
    return [(q.id, q.text) for q in queries]


def stage_key(spec: StageSpec, upstream: list[StageResult], task: TaskData) -> str:
    """Everything that determines a stage's output, except which queries it is asked about."""
    corpus = task.corpus.fingerprint if task.corpus is not None else None
    extra = [task.pool_fingerprint] if spec.cls.reads_query_pool(spec.options) else []  # few-shot demos come from the whole split
    return make_key("stage", spec.as_dict(), spec.cls.version, [u.key for u in upstream], corpus, *extra)


def run_pipeline(pipeline: Pipeline, task: TaskData, cache: Cache, reporter: Reporter, batch_size: int = 64) -> PipelineResult:
    results: dict[str, StageResult] = {}
    for spec in pipeline.stages:
        if spec.cls.produces == "corpus":
            results[spec.id] = _build_corpus(spec, task, cache, reporter)
            continue
        view = results[spec.corpus].view if spec.corpus else task
        assert view is not None
        upstream = [results[name] for name in spec.inputs]
        results[spec.id] = r = _run_stage(spec, upstream, view, cache, reporter, batch_size)
        r.view = view
        if spec.cls.produces == "relevance":  # the input's ranking, scored against the judge's qrels
            r.rankings = upstream[0].rankings
            r.view = spec.cls.judged_view(view, r.relevance, spec.options)  # type: ignore[attr-defined]
    return PipelineResult(list(results.values()))


def _build_corpus(spec: StageSpec, task: TaskData, cache: Cache, reporter: Reporter) -> StageResult:
    """A corpus stage's derived view of the task (its corpus cached as an artifact by the stage)."""
    start = time.perf_counter()
    stage = spec.cls(spec.options, StageEnv(cache, reporter, spec.id))
    assert isinstance(stage, CorpusStage)
    derived = stage.derive(task)
    assert derived.view.corpus is not None
    return StageResult(spec, derived.view.corpus.fingerprint, {}, 1, 0 if derived.built else 1, time.perf_counter() - start,
                       stage.identity(), view=derived.view, stats=derived.stats)


def _run_stage(spec: StageSpec, upstream: list[StageResult], task: TaskData, cache: Cache,
               reporter: Reporter, batch_size: int) -> StageResult:
    start = time.perf_counter()
    key = stage_key(spec, upstream, task)
    batches = [task.queries[i:i + batch_size] for i in range(0, len(task.queries), batch_size)]
    out_key = make_key(key, _fingerprint(task.queries))
    whole = cache.get(out_key)
    if whole is not None:
        meta = cache.get_meta(out_key) or {}
        reporter.log(f"{spec.id}: {len(task.queries)} queries from cache")
        return _result(spec, key, whole, len(batches), len(batches), time.perf_counter() - start, meta.get("identity", {}))

    batch_keys = [make_key(key, _fingerprint(b)) for b in batches]
    done = {k: cache.get_batch(k) for k in batch_keys}
    missing = [b for b, k in zip(batches, batch_keys, strict=True) if done[k] is None]
    n_cached = len(batches) - len(missing)
    stage = spec.cls(spec.options, StageEnv(cache, reporter, spec.id, spec.inputs))
    if missing:
        if n_cached:
            reporter.log(f"{spec.id}: resuming, {n_cached} of {len(batches)} batches already cached")
        stage.prepare(task)
        with reporter.task(f"{spec.id} ({spec.type})", sum(map(len, missing)), "queries") as advance:
            for batch, bkey in zip(batches, batch_keys, strict=True):
                if done[bkey] is not None:
                    continue
                inputs = [{q.id: u.output(q.id) for q in batch} for u in upstream]
                out = stage.process(batch, inputs)
                done[bkey] = _dump([out[q.id] for q in batch if q.id in out])
                cache.put_batch(bkey, done[bkey])
                advance(len(batch))
        stage.finish()
    identity = stage.identity()
    text = "".join(done[k] or "" for k in batch_keys)
    cache.put(out_key, text, meta={"stage": spec.as_dict(), "identity": identity, "queries": len(task.queries)})
    return _result(spec, key, text, len(batches), n_cached, time.perf_counter() - start, identity)
