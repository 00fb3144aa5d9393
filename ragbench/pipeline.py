"""Runs a pipeline's stages in order over a task, with caching and resume.

This is the one place where the flow of data is visible: each stage reads its input stages'
outputs and produces its own, batch by batch. A batch's records are cached the moment it is
finished, so an interrupted run loses at most the batches in flight (LLM stages on a server
pool process several at once, `batches_in_flight`; their output is the same as one by one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ragbench.cache import Cache, make_key
from ragbench.config import Pipeline, StageSpec
from ragbench.executors import LOCAL, ExecutorSpec
from ragbench.outputs import Answers, DerivedCorpus, Judgements, Output, Probes, Rankings
from ragbench.progress import Reporter, StageProgress, Stopped
from ragbench.stage import CorpusStage, Stage, StageEnv
from ragbench.types import Query, Ranking, TaskData

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
    return make_key("stage", spec.key_dict(), spec.cls.version, [u.key for u in upstream], corpus, *extra)


def run_pipeline(pipeline: Pipeline, task: TaskData, cache: Cache, reporter: Reporter,
                 batch_size: int = 64, executor: ExecutorSpec = LOCAL,
                 batches_in_flight: int | None = None) -> PipelineResult:
    """Run the stages in order. `batches_in_flight` caps the batches a stage processes at once (None: as many
    as each stage declares; 1: one after another); it never changes an output."""
    results: dict[str, StageResult] = {}
    for spec in pipeline.stages:
        corpus = results[spec.corpus].output if spec.corpus else None
        view = corpus.view if isinstance(corpus, DerivedCorpus) else task
        if issubclass(spec.cls, CorpusStage):  # from the task's corpus, or from an earlier corpus stage's
            results[spec.id] = _build_corpus(spec, view, corpus, cache, reporter, executor)
            continue
        upstream = [results[name] for name in spec.inputs]
        results[spec.id] = _run_stage(spec, upstream, view, cache, reporter, batch_size, executor,
                                       batches_in_flight)
    return PipelineResult(list(results.values()))


def _build_corpus(spec: StageSpec, task: TaskData, source: Output | None, cache: Cache, reporter: Reporter,
                  executor: ExecutorSpec) -> StageResult:
    """A corpus stage's derived view of the task (its corpus cached as an artifact by the stage). Derived from
    passages (`source`), units keep scoring over the task's documents: a unit's are its passages'."""
    start = time.perf_counter()
    stage = spec.cls(spec.options, StageEnv(cache, reporter, spec.id, executor=executor))
    assert isinstance(stage, CorpusStage)
    derived = stage.derive(task)
    if isinstance(source, DerivedCorpus) and source.documents is not None and derived.members is not None:
        derived.documents = source.documents.through(derived.members)
    assert derived.view.corpus is not None
    return StageResult(spec, derived.view.corpus.fingerprint, derived, derived.view, 1, 0 if derived.built else 1,
                       time.perf_counter() - start, stage.identity())


def _run_stage(spec: StageSpec, upstream: list[StageResult], task: TaskData, cache: Cache, reporter: Reporter,
               batch_size: int, executor: ExecutorSpec, batches_in_flight: int | None = None) -> StageResult:
    start = time.perf_counter()
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
    todo = [(b, k) for b, k in zip(batches, batch_keys, strict=True) if done[k] is None]
    n_cached = len(batches) - len(todo)
    search = _searcher(upstream[0], cache, reporter, executor) if spec.cls.contract.searches_input else None
    stage = spec.cls(spec.options, StageEnv(cache, reporter, spec.id, spec.inputs, executor, search))
    if todo:
        if n_cached:
            reporter.log(f"{spec.id}: resuming, {n_cached} of {len(batches)} batches already cached")
        stage.prepare(task)
        in_flight = _in_flight(stage, batch_size, batches_in_flight)
        with reporter.stage(f"{spec.id} ({spec.type})", sum(len(b) for b, _ in todo)) as progress:

            def save(bkey: str, text: str) -> None:
                done[bkey] = text
                cache.put_batch(bkey, text)

            _process_batches(stage, todo, upstream, progress, in_flight, save)
        stage.finish()
    identity = stage.identity()
    text = "".join(done[k] or "" for k in batch_keys)
    cache.put(out_key, text, meta={"stage": spec.as_dict(), "identity": identity, "queries": len(task.queries)})
    return _result(spec, key, text, upstream, task, len(batches), n_cached, start, identity)


def _searcher(source: StageResult, cache: Cache, reporter: Reporter,
              executor: ExecutorSpec) -> Callable[[list[Query]], dict[str, Ranking]]:
    """The search function of a first-stage retriever, for a stage that runs queries of its own through it
    (multi_step): a second instance of that stage on the corpus it ranked, indexed (from the cache) on the
    first call. Calls take turns: retrievers are not all safe to call from several threads."""
    lock = threading.Lock()
    built: list[Stage] = []

    def search(queries: list[Query]) -> dict[str, Ranking]:
        with lock:
            if not built:
                spec = source.spec
                retriever = spec.cls(spec.options, StageEnv(cache, reporter, spec.id, spec.inputs, executor))
                retriever.prepare(source.view)
                built.append(retriever)
            return built[0].process(queries, [])

    return search


def _in_flight(stage: Stage, batch_size: int, cap: int | None) -> int:
    """Batches the stage has processed at once: what it declares (LLM stages on a server pool: several; the
    rest: one), at most `cap`."""
    n = stage.batches_in_flight(batch_size)
    return max(1, min(n, cap or n))


def _process_batches(stage: Stage, todo: list[tuple[list[Query], str]], upstream: list[StageResult],
                     progress: StageProgress, in_flight: int, save: Callable[[str, str], None]) -> None:
    """Process the batches, `save(batch key, cache text)` each the moment it is done (in this thread).

    With `in_flight` > 1, that many batches run at once in threads, so the requests of all of
    them meet in the LLM backend's one bounded queue; each batch's output is the same as alone.
    When one fails (or on Ctrl-C), no new batch starts, those running stop at their next request
    (what they had finished stays in the request cache), those that complete are still saved,
    and the first error is raised.
    """
    produces = stage.contract.produces

    def one(batch: list[Query]) -> str:
        inputs = [{q.id: u.output.get(q.id) for q in batch} for u in upstream]
        with progress.batch(len(batch)):
            out = stage.process(batch, inputs)
        return produces.dump([out[q.id] for q in batch if q.id in out])

    if in_flight == 1:
        for batch, bkey in todo:
            save(bkey, one(batch))
        return
    error: BaseException | None = None
    waiting = iter(todo)
    running: dict[Future[str], str] = {}
    pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="ragbench-batch")
    try:
        while True:
            while error is None and len(running) < in_flight and (item := next(waiting, None)) is not None:
                running[pool.submit(one, item[0])] = item[1]
            if not running:
                break
            try:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
            except BaseException as e:  # Ctrl-C: the running batches stop at their next request; a second one quits
                if error is not None:
                    raise
                error = e
                progress.stop()
                continue
            for fut in finished:
                bkey = running.pop(fut)
                try:
                    save(bkey, fut.result())
                except Stopped:
                    pass
                except BaseException as e:
                    error = error or e
                    progress.stop()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # nothing is left running, unless we quit
    if error is not None:
        raise error


def _result(spec: StageSpec, key: str, text: str, upstream: list[StageResult], task: TaskData, n_batches: int,
            n_cached: int, start: float, identity: dict[str, Any]) -> StageResult:
    """The stage's records, read back from the cache text, as its declared output type."""
    output = spec.cls.output(spec.options, spec.cls.contract.produces.parse(text), [u.output for u in upstream], task)
    output.model = identity.get("llm", {}).get("model")
    return StageResult(spec, key, output, task, n_batches, n_cached, time.perf_counter() - start, identity)
