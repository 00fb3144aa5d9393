"""The run service: plan -> execute -> score -> record, the sequence every `ragbench run` follows.

The command line, the Python API and experiments all call `run`; each step is also usable alone
(re-scoring a cached run, planning without running).
"""

from __future__ import annotations

import tempfile

from ragbench.cache import Cache
from ragbench.evaluation import Scores, score
from ragbench.pipeline import PipelineResult, run_pipeline
from ragbench.plan import RunPlan, RunRequest, plan
from ragbench.progress import Reporter
from ragbench.record import RunRecord


def execute(run_plan: RunPlan, reporter: Reporter) -> PipelineResult:
    """Run the pipeline's stages over the task, reading and filling the cache (a throw-away one with no_cache)."""
    request = run_plan.request
    with tempfile.TemporaryDirectory(prefix="ragbench-nocache-") as tmp:
        cache = Cache(tmp if request.no_cache else request.cache_dir, warn=reporter.warn)
        return run_pipeline(run_plan.pipeline, run_plan.task, cache, reporter, batch_size=request.batch_size,
                            executor=run_plan.executor)


def score_run(run_plan: RunPlan, result: PipelineResult) -> Scores:
    return score(result, run_plan.task, run_plan.metrics, run_plan.card.group_by)


def run(request: RunRequest, reporter: Reporter | None = None) -> RunRecord:
    """Plan, execute, score and record one run; returns the run folder's record."""
    reporter = reporter or Reporter()
    run_plan = plan(request, reporter)
    result = execute(run_plan, reporter)
    return RunRecord.write(run_plan, result, score_run(run_plan, result))


__all__ = ["RunRequest", "execute", "plan", "run", "score_run"]
