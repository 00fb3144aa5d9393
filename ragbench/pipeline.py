"""Runs a pipeline's stages in order over a task, with caching and resume.

This is the one place where the flow of data is visible: each stage reads its input stages'
outputs and produces its own, batch by batch. A batch's records are cached the moment it is
finished, so an interrupted run loses at most the batch in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ragbench.cache import Cache, make_key
from ragbench.config import Pipeline, StageSpec
from ragbench.executors import LOCAL, ExecutorSpec
from ragbench.outputs import Answers, DerivedCorpus, Judgements, Output, Probes, Rankings
from ragbench.progress import Reporter
from ragbench.stage import CorpusStage, StageEnv
from ragbench.types import Query, TaskData

OutputT = TypeVar("OutputT", bound=Output)


@dataclass
class StageResult:
    spec: StageSpec
    key: str
    output: Output
    view: TaskData  # the task as this stage saw it (a derived corpus and its qrels, for corpus: stages)
    batches_total: int
    batches_cached: int
    seconds: float
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def cached(self) -> bool:
        return self.batches_cached == self.batches_total


@dataclass
class PipelineResult:
    stages: list[StageResult]

    def of(self, kind: type[OutputT]) -> list[StageResult]:
        """Every stage whose output is a `kind` (a judged ranking is a ranking), in pipeline order."""
        return [s for s in self.stages if isinstance(s.output, kind)]

    def last(self, kind: type[OutputT]) -> StageResult | None:
        found = self.of(kind)
        return found[-1] if found else None

    @property
    def final(self) -> StageResult:
        return self.stages[-1]

    @property
    def rankings(self) -> list[StageResult]:
        return self.of(Rankings)

    @property
    def final_ranking(self) -> StageResult | None:
        """The last stage that ranks documents (what IR metrics and run.trec see)."""
        return self.last(Rankings)

    @property
    def reader(self) -> StageResult | None:
        """The last stage that answers (what answer metrics see)."""
        return self.last(Answers)

    @property
    def judges(self) -> list[StageResult]:
        return self.of(Judgements)

    @property
    def experiments(self) -> list[StageResult]:
        return self.of(Probes)


def _fingerprint(queries: list[Query]) -> list[tuple[str, str]]:
    return [(q.id, q.text) for q in queries]


def stage_key(spec: StageSpec, upstream: list[StageResult], task: TaskData) -> str:
    """Everything that determines a stage's output, except which queries it is asked about."""
    corpus = task.corpus.fingerprint if task.corpus is not None else None
    # few-shot demonstrations come from the whole split
    extra = [task.pool_fingerprint] if spec.cls.reads_query_pool(spec.options) else []
    return make_key("stage", spec.as_dict(), spec.cls.version, [u.key for u in upstream], corpus, *extra)


def run_pipeline(pipeline: Pipeline, task: TaskData, cache: Cache, reporter: Reporter,
                 batch_size: int = 64, executor: ExecutorSpec = LOCAL) -> PipelineResult:
    results: dict[str, StageResult] = {}
    for spec in pipeline.stages:
        if issubclass(spec.cls, CorpusStage):
            results[spec.id] = _build_corpus(spec, task, cache, reporter, executor)
            continue
        corpus = results[spec.corpus].output if spec.corpus else None
        view = corpus.view if isinstance(corpus, DerivedCorpus) else task
        upstream = [results[name] for name in spec.inputs]
        results[spec.id] = _run_stage(spec, upstream, view, cache, reporter, batch_size, executor)
    return PipelineResult(list(results.values()))


def _build_corpus(spec: StageSpec, task: TaskData, cache: Cache, reporter: Reporter,
                  executor: ExecutorSpec) -> StageResult:
    """A corpus stage's derived view of the task (its corpus cached as an artifact by the stage)."""
    start = time.perf_counter()
    stage = spec.cls(spec.options, StageEnv(cache, reporter, spec.id, executor=executor))
    assert isinstance(stage, CorpusStage)
    derived = stage.derive(task)
    assert derived.view.corpus is not None
    return StageResult(spec, derived.view.corpus.fingerprint, derived, derived.view, 1, 0 if derived.built else 1,
                       time.perf_counter() - start, stage.identity())


def _run_stage(spec: StageSpec, upstream: list[StageResult], task: TaskData, cache: Cache,
               reporter: Reporter, batch_size: int, executor: ExecutorSpec) -> StageResult:
    start = time.perf_counter()
    produces = spec.cls.contract.produces
    key = stage_key(spec, upstream, task)
    batches = [task.queries[i:i + batch_size] for i in range(0, len(task.queries), batch_size)]
    out_key = make_key(key, _fingerprint(task.queries))
    whole = cache.get(out_key)
    if whole is not None:
        meta = cache.get_meta(out_key) or {}
        reporter.log(f"{spec.id}: {len(task.queries)} queries from cache")
        return _result(spec, key, whole, upstream, task, len(batches), len(batches), start, meta.get("identity", {}))

    batch_keys = [make_key(key, _fingerprint(b)) for b in batches]
    done = {k: cache.get_batch(k) for k in batch_keys}
    missing = [b for b, k in zip(batches, batch_keys, strict=True) if done[k] is None]
    n_cached = len(batches) - len(missing)
    stage = spec.cls(spec.options, StageEnv(cache, reporter, spec.id, spec.inputs, executor))
    if missing:
        if n_cached:
            reporter.log(f"{spec.id}: resuming, {n_cached} of {len(batches)} batches already cached")
        stage.prepare(task)
        with reporter.task(f"{spec.id} ({spec.type})", sum(map(len, missing)), "queries") as advance:
            for batch, bkey in zip(batches, batch_keys, strict=True):
                if done[bkey] is not None:
                    continue
                inputs = [{q.id: u.output.get(q.id) for q in batch} for u in upstream]
                out = stage.process(batch, inputs)
                done[bkey] = produces.dump([out[q.id] for q in batch if q.id in out])
                cache.put_batch(bkey, done[bkey])
                advance(len(batch))
        stage.finish()
    identity = stage.identity()
    text = "".join(done[k] or "" for k in batch_keys)
    cache.put(out_key, text, meta={"stage": spec.as_dict(), "identity": identity, "queries": len(task.queries)})
    return _result(spec, key, text, upstream, task, len(batches), n_cached, start, identity)


def _result(spec: StageSpec, key: str, text: str, upstream: list[StageResult], task: TaskData, n_batches: int,
            n_cached: int, start: float, identity: dict[str, Any]) -> StageResult:
    """The stage's records, read back from the cache text, as its declared output type."""
    output = spec.cls.output(spec.options, spec.cls.contract.produces.parse(text), [u.output for u in upstream], task)
    output.model = identity.get("llm", {}).get("model")
    return StageResult(spec, key, output, task, n_batches, n_cached, time.perf_counter() - start, identity)
