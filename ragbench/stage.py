"""The contract every pipeline stage implements.

A stage is built from validated options, does its heavy one-time work in `prepare` (only
called when some of its output is not cached), then maps batches of queries and the
upstream rankings to its own rankings. The pipeline owns batching, caching and order;
a stage never sees another stage, only the data it produced.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ragbench.types import Query, TaskData

if TYPE_CHECKING:
    from ragbench.cache import Cache
    from ragbench.progress import Reporter


class StageOptions(BaseModel):
    """Base for every stage's options: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class StageEnv:
    """What the pipeline lends a stage: the cache (for its own artifacts) and a progress reporter."""

    cache: Cache
    reporter: Reporter
    stage_id: str
    inputs: tuple[str, ...] = ()  # the ids of the stages it reads, in `inputs` order


class Stage(ABC):
    kind: ClassVar[str] = "stage"
    Options: ClassVar[type[StageOptions]] = StageOptions
    #: Bump when the same options would now produce different output: it invalidates caches.
    version: ClassVar[str] = "1"
    #: How many upstream stages it reads: first-stage retrievers 0, rerankers 1, fusion 2+.
    min_inputs: ClassVar[int] = 0
    max_inputs: ClassVar[int] = 0
    #: A stage that reorders a subset of its input (a reranker) cannot ask for more than it gets.
    narrows_input: ClassVar[bool] = False
    #: what `process` returns per query: a Ranking (retrievers, rerankers), an Answer (readers),
    #: a Judgement (judges), a Probe (experiments); "corpus" stages (long_units) build a derived corpus instead
    produces: ClassVar[str] = "rankings"
    #: what it reads from its input stages: rankings, or a reader's answers (judges)
    consumes: ClassVar[str] = "rankings"

    @classmethod
    def reads_query_pool(cls, options: StageOptions) -> bool:
        """Whether its output for a query depends on the split's other questions (few-shot demos),
        so its cache key must include them (TaskData.pool)."""
        return False

    def __init__(self, options: StageOptions, env: StageEnv):
        self.options = options
        self.env = env

    def prepare(self, task: TaskData) -> None:  # noqa: B027 - optional hook
        """Heavy one-time work (build or load an index, load a model)."""

    @abstractmethod
    def process(self, queries: list[Query], inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Rank (answer, judge) one batch of queries. `inputs` holds each upstream stage's output per query."""

    def finish(self) -> None:  # noqa: B027 - optional hook
        """Called after the stage processed its uncached batches (log request counts, free memory)."""

    def identity(self) -> dict[str, Any]:
        """Model names, weight hashes, engine versions: written to config.lock.yaml."""
        return {}

    @classmethod
    def depth(cls, options: StageOptions) -> int | None:
        """How many documents per query this stage outputs (for top-k order checks)."""
        return getattr(options, "top_k", None)

    def artifact_dir(self, key: str, build: Any) -> Path:
        """A directory in the cache built once by `build(tmp_dir)`, atomically."""
        return self.env.cache.artifact(key, build)


@dataclass
class DerivedCorpus:
    """What a corpus stage hands the pipeline: the task as later stages see it, and how it was made."""

    view: TaskData  # the task with the derived corpus and its qrels (fingerprint includes the derivation)
    stats: dict[str, Any] = field(default_factory=dict)  # written to metrics.json `corpora`
    built: bool = True  # made by this run (False: read from the cache)


class CorpusStage(Stage):
    """A stage that derives a corpus from the task's (long_units) instead of answering queries.

    Stages that name it with `corpus:` see `derive(task).view` in place of the task.
    """

    kind = "corpus"
    produces = "corpus"

    @abstractmethod
    def derive(self, task: TaskData) -> DerivedCorpus:
        """Build (or read from the cache) the derived corpus, with the task's qrels mapped onto it."""

    def process(self, queries: list[Query], inputs: list[dict[str, Any]]) -> dict[str, Any]:
        raise TypeError(f"{type(self).__name__} derives a corpus; it does not process queries")
