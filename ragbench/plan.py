"""Planning a run: from what the user asked for (`RunRequest`) to what will run (`RunPlan`).

Planning loads and checks everything before any stage runs: the pipeline (with `--set` and
`--until`), the task card, the metrics the run will compute, and the task's data. A bad input
fails here, with one located line per problem, before anything is computed.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ragbench.config import Pipeline, final_depth, load_pipeline, scored_per_document, stable_hash
from ragbench.errors import RagbenchError
from ragbench.executors import LOCAL, ExecutorSpec
from ragbench.metrics.spec import check_metrics, computable, parse_metric
from ragbench.outputs import DerivedCorpus
from ragbench.progress import Reporter
from ragbench.tasks.card import TaskCard, load_task_card
from ragbench.types import TaskData
from ragbench.yamlio import LocatedYaml


@dataclass(frozen=True)
class RunRequest:
    """One `ragbench run`: the pipeline and task, and where its results and cache go."""

    pipeline: str | Path
    task: str | Path = "popqa-sample"
    data: str | Path | None = None
    split: str | None = None
    limit: int | None = None
    overrides: tuple[str, ...] = ()
    until: str | None = None
    out: str | Path | None = None  # the run folder (default: <results>/runs/<task>/<pipeline>-<hash>)
    results: str | Path = "results"
    cache_dir: str | Path | None = None
    no_cache: bool = False
    batch_size: int = 64
    executor: ExecutorSpec | None = None  # --executor/--workers/--ray-address; None: the pipeline's, else local
    argv: tuple[str, ...] = field(default_factory=tuple)  # the command line, for the lock file


@dataclass(frozen=True)
class RunPlan:
    request: RunRequest
    pipeline: Pipeline
    card: TaskCard
    task: TaskData
    metrics: list[str]

    @property
    def executor(self) -> ExecutorSpec:
        """The command line's executor, else the pipeline's `executor:` block, else local."""
        return self.request.executor or self.pipeline.executor or LOCAL

    @property
    def config_hash(self) -> str:
        p, t = self.pipeline, self.task
        return stable_hash([p.as_dict(), t.name, t.split, self.request.limit, self.metrics, t.fingerprint])[:12]

    @property
    def folder(self) -> Path:
        if self.request.out:
            return Path(self.request.out)
        task = self.task.name.replace(":", "-").replace("/", "-")  # irds:beir/scifact/test: one folder
        return Path(self.request.results) / "runs" / task / f"{self.pipeline.name}-{self.config_hash}"


def plan(request: RunRequest, reporter: Reporter) -> RunPlan:
    """Load and check the pipeline, the task card and the metrics, then load the task's data."""
    pipeline = load_pipeline(request.pipeline, request.overrides)
    if request.until:
        pipeline = pipeline.until(request.until)
    card, card_path = load_task_card(request.task)
    metrics = run_metrics(pipeline, card)
    where = LocatedYaml(None, {}, str(pipeline.file if pipeline.metrics else card_path))
    problems = check_metrics(metrics, final_depth(pipeline.stages), where, ("metrics",), pipeline.has_reader,
                             pipeline.judge_metrics, scored_per_document(pipeline.stages))
    if problems:
        raise RagbenchError(problems)
    task = _load(card, request, pipeline.has_ranking or pipeline.produces(DerivedCorpus), reporter)
    if not pipeline.has_reader and not pipeline.metrics and any(q.extra.get(card.answers_field) is None
                                                                for q in task.queries):
        # answer recall is extra for a retrieval run: skip it when some query has no gold answers, don't fail
        metrics = [m for m in metrics if parse_metric(m).family != "answer_recall"]
    reporter.log(f"task {task.name} ({task.split}): {len(task.queries)} queries, "
                 f"{len(task.corpus) if task.corpus is not None else 0} documents from {task.source}")
    return RunPlan(request, pipeline, card, task, metrics)


def run_metrics(pipeline: Pipeline, card: TaskCard) -> list[str]:
    """The pipeline's own metrics, else the card's: IR ones for a ranking, answer ones for a reader (answer
    recall needs only a ranking), and its judges' scores; the card's defaults shrink to what the pipeline computes."""
    if pipeline.metrics:  # what the pipeline names is checked, not shrunk, but answer recall needs a ranking
        return computable(list(pipeline.metrics), pipeline.has_ranking, True)
    judged = [m for m in dict.fromkeys(pipeline.judge_metrics) if m not in card.answer_metrics]
    names = (card.metrics if pipeline.has_ranking else []) + card.answer_metrics + judged
    return computable(names, pipeline.has_ranking, pipeline.has_reader)


def _load(card: TaskCard, request: RunRequest, need_corpus: bool, reporter: Reporter) -> TaskData:
    """The task's data; its corpus is converted into the run's cache (with --no-cache, a throw-away one
    that lasts as long as the process, since the corpus is memory-mapped from it)."""
    from ragbench.cache import Cache
    from ragbench.tasks import load_task

    if request.no_cache:
        folder = tempfile.mkdtemp(prefix="ragbench-corpus-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        cache = Cache(folder)
    else:
        cache = Cache(request.cache_dir)
    return load_task(card, request.split, request.data, request.limit, need_corpus=need_corpus, reporter=reporter,
                     cache=cache)
