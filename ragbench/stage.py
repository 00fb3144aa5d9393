"""The contract every pipeline stage implements.

A stage is built from validated options, does its heavy one-time work in `prepare` (only
called when some of its output is not cached), then maps batches of queries and its input
stages' outputs to its own records. What it reads and produces is declared once, as types
(`contract`); the pipeline owns batching, caching and order; a stage never sees another
stage, only the typed output it produced (and, for a stage that searches through its input,
that retriever's `search` function, lent by the pipeline as `StageEnv.search`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, get_args

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from ragbench.executors import LOCAL, ExecutorSpec
from ragbench.outputs import DerivedCorpus, Output, Rankings
from ragbench.types import Query, Ranking, TaskData

if TYPE_CHECKING:
    from ragbench.cache import Cache
    from ragbench.progress import Reporter


#: Marks an option that cannot change a stage's output, only how fast or where it is computed (threads, device,
#: batch sizes, servers, timeouts): `Field(..., json_schema_extra=EXECUTION)`. Cache keys see its default instead
#: (StageSpec.key_dict), so changing it reuses every cached result; the lock file still records the real value.
EXECUTION: dict[str, Any] = {"execution": True}


def is_execution(field: FieldInfo) -> bool:
    """Whether an option field is declared an execution setting (EXECUTION)."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("execution") is True


def execution_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of the execution settings of an options class, nested models (an `llm:` block, `hnsw`,
    every member of a union, the items of a list) included: what the docs table and the tests enumerate."""
    found: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if is_execution(field):
            found.append(path)
            continue
        for sub in _models_in(field.annotation):
            found += [p for p in execution_fields(sub, f"{path}.") if p not in found]
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (X, X | None, tuple[X, ...], Annotated[A | B, ...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


class StageOptions(BaseModel):
    """Base for every stage's options: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Contract:
    """What a stage is, declared once per class (in the manner of scikit-learn's estimator tags)."""

    kind: str  # how `ragbench list` describes it: retriever, reranker, reader, judge, corpus, experiment
    produces: type[Output]  # the output type its records make
    consumes: type[Output] | None = None  # the output type it reads from its input stages (None: none)
    inputs: tuple[int, int] = (0, 0)  # how many input stages it takes, (min, max)
    narrows_input: bool = False  # reorders a subset of its input (a reranker): cannot ask for more than it gets
    searches_input: bool = False  # runs queries of its own through its input, a first-stage retriever (multi_step)
    regroups: bool = False  # ranks a corpus made from the one its input ranks (units of passages: maxp)


@dataclass
class StageEnv:
    """What the pipeline lends a stage: the cache (for its own artifacts) and a progress reporter."""

    cache: Cache
    reporter: Reporter
    stage_id: str
    inputs: tuple[str, ...] = ()  # the ids of the stages it reads, in `inputs` order
    executor: ExecutorSpec = LOCAL  # where its heavy work runs (corpus encoding, exact search)
    #: for a stage whose contract `searches_input`: its input retriever's search, indexed on first call
    search: Callable[[list[Query]], dict[str, Ranking]] | None = None


class Stage(ABC):
    Options: ClassVar[type[StageOptions]] = StageOptions
    contract: ClassVar[Contract] = Contract("retriever", Rankings)
    #: Bump when the same options would now produce different output: it invalidates caches.
    version: ClassVar[str] = "1"

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
        """Rank (answer, judge) one batch of queries. `inputs` holds, per input stage, what it gives each query
        (`Output.get`); the result maps query ids to records of its output type."""

    def batches_in_flight(self, batch_size: int) -> int:
        """How many of its batches the pipeline may process at once: one, unless its work waits on a server."""
        return 1

    def finish(self) -> None:  # noqa: B027 - optional hook
        """Called after the stage processed its uncached batches (log request counts, free memory)."""

    def identity(self) -> dict[str, Any]:
        """Model names, weight hashes, engine versions: written to config.lock.yaml."""
        return {}

    @classmethod
    def depth(cls, options: StageOptions) -> int | None:
        """How many documents per query this stage outputs (for top-k order checks; None: its input's)."""
        return getattr(options, "top_k", None)

    @classmethod
    def output(cls, options: StageOptions, records: dict[str, Any], upstream: list[Output], task: TaskData) -> Output:
        """Its records (computed or read from the cache) as its declared output type."""
        return cls.contract.produces(records)

    @classmethod
    def metrics(cls, options: StageOptions) -> list[str]:
        """The per-query scores its output gives the run (a judge's judge_acc, faithfulness, correctness)."""
        return []

    def artifact_dir(self, key: str, build: Any) -> Path:
        """A directory in the cache built once by `build(tmp_dir)`, atomically."""
        return self.env.cache.artifact(key, build)


class CorpusStage(Stage):
    """A stage that derives a corpus from the task's (long_units) instead of answering queries.

    Stages that name it with `corpus:` see `derive(task).view` in place of the task.
    """

    contract = Contract("corpus", DerivedCorpus)
    #: whether rankings over this corpus are also scored over the task's documents (M[doc]: passages)
    document_level: ClassVar[bool] = False

    @abstractmethod
    def derive(self, task: TaskData) -> DerivedCorpus:
        """Build (or read from the cache) the derived corpus, with the task's qrels mapped onto it."""

    def process(self, queries: list[Query], inputs: list[dict[str, Any]]) -> dict[str, Any]:
        raise TypeError(f"{type(self).__name__} derives a corpus; it does not process queries")
