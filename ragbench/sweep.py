"""Experiments: several pipelines, grid points and tasks in one command (in the manner of PyTerrier's
`pt.Experiment`), each combination a normal run through the run service, all of them on one cache.

A combination is a variant (a pipeline with one point of the grid applied as `--set` overrides) on a task.
Stages with the same cache key are computed once, however many variants share them, because every run
reads and fills the same cache. A combination that fails is reported and the others still run; the
table (report/experiment.py) is made from the run folders that exist.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from ragbench.config import load_pipeline
from ragbench.errors import RagbenchError
from ragbench.progress import Reporter
from ragbench.yamlio import Strict, load_yaml, validate_mapping


class ExperimentSpec(Strict):
    """What `ragbench experiment` runs: from the command line or an experiments/*.yaml file."""

    name: str = Field("experiment", description="names the folder the runs go to")
    pipelines: list[str] = Field(min_length=1, description="pipeline names or files")
    tasks: list[str] = Field(min_length=1, description="task card names or files")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="STAGE.KEY: values, each a variant")
    baseline: str | None = Field(None, description="a variant's name or a pipeline's (its first grid point); "
                                                   "default: the first variant")
    metrics: list[str] = Field(default_factory=list, description="default: the metrics every run shares")
    correction: Literal["holm", "bonferroni", "none"] = "holm"
    test: Literal["randomization", "t"] = "randomization"
    split: str | None = None
    limit: int | None = Field(None, ge=1)


@dataclass(frozen=True)
class Variant:
    """A pipeline with one grid point: `point` maps STAGE.KEY to the value it takes."""

    pipeline: str  # the pipeline's name
    file: str  # how it was given (name or path)
    point: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return " ".join([self.pipeline, *(f"{k}={yaml_value(v)}" for k, v in self.point.items())])

    @property
    def overrides(self) -> tuple[str, ...]:
        return tuple(f"{k}={yaml_value(v)}" for k, v in self.point.items())

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.name.replace(" ", "__"))


def yaml_value(v: Any) -> str:
    """A grid value as `--set` reads it back (YAML flow style)."""
    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def parse_grid(items: tuple[str, ...] | list[str]) -> dict[str, list[Any]]:
    """`--grid STAGE.KEY=V1,V2` (values parsed as YAML) -> {STAGE.KEY: [V1, V2]}."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or "." not in key or not values:
            raise RagbenchError.at("--grid", f"expected STAGE.KEY=V1,V2,... (got '{item}')")
        grid[key.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def load_spec(path: str | Path) -> ExperimentSpec:
    doc = load_yaml(path)
    spec, problems = validate_mapping(doc, ExperimentSpec, "an experiment must be a YAML mapping with 'pipelines' "
                                                            "and 'tasks'")
    if problems:
        raise RagbenchError(problems)
    assert spec is not None
    return spec


def variants(spec: ExperimentSpec) -> list[Variant]:
    """Each pipeline crossed with the grid keys whose stage it has (values in the order given)."""
    out: list[Variant] = []
    used: set[str] = set()
    for file in spec.pipelines:
        pipeline = load_pipeline(file)
        ids = {s.id for s in pipeline.stages}
        keys = [k for k in spec.grid if k.split(".", 1)[0] in ids]
        used.update(keys)
        for values in itertools.product(*(spec.grid[k] for k in keys)):
            out.append(Variant(pipeline.name, file, dict(zip(keys, values, strict=True))))
    unused = [k for k in spec.grid if k not in used]
    if unused:
        raise RagbenchError.at("grid", f"{', '.join(unused)}: no pipeline has that stage "
                                       f"(stage ids: the pipelines' `id:`, else their `type:`)")
    names = [v.name for v in out]
    if len(set(names)) < len(names):
        raise RagbenchError.at("pipelines", "two variants have the same name (a pipeline given twice?)")
    return out


def baseline_of(spec: ExperimentSpec, found: list[Variant]) -> Variant:
    """The variant named `baseline`, else the first variant of the pipeline of that name, else the first."""
    if spec.baseline is None:
        return found[0]
    for match in ([v for v in found if v.name == spec.baseline], [v for v in found if v.pipeline == spec.baseline]):
        if match:
            return match[0]
    raise RagbenchError.at("baseline", f"'{spec.baseline}' is no variant or pipeline of the experiment "
                                       f"(variants: {', '.join(v.name for v in found)})")


@dataclass
class Combination:
    variant: Variant
    task: str
    folder: Path
    status: str = "waiting"  # waiting | running | done | cached | failed
    error: str = ""


def plan_combinations(spec: ExperimentSpec, found: list[Variant], results: Path) -> list[Combination]:
    root = results / "experiments" / spec.name
    return [Combination(v, task, root / Path(task).stem / v.slug) for task in spec.tasks for v in found]


@dataclass
class ExperimentRun:
    """What running an experiment gives: every combination with its status, and the baseline variant."""

    combos: list[Combination]
    baseline: Variant

    def done(self) -> dict[str, list[tuple[Variant, Path]]]:
        """The finished combinations' run folders, by task."""
        runs: dict[str, list[tuple[Variant, Path]]] = {}
        for c in self.combos:
            if c.status == "done":
                runs.setdefault(c.task, []).append((c.variant, c.folder))
        return runs


def run_experiment(spec: ExperimentSpec, results: Path, cache_dir: str | Path | None = None,
                   reporter: Reporter | None = None, argv: tuple[str, ...] = ()) -> ExperimentRun:
    """Run every combination into its run folder (one cache for all); a failure is recorded, not raised."""
    from ragbench.plan import RunRequest
    from ragbench.runner import run

    reporter = reporter or Reporter()
    found = variants(spec)
    baseline = baseline_of(spec, found)  # a bad baseline fails before anything runs
    combos = plan_combinations(spec, found, results)
    for i, c in enumerate(combos, start=1):
        c.status = "running"
        reporter.log(f"experiment {spec.name}: [{i}/{len(combos)}] {c.variant.name} on {c.task}")
        request = RunRequest(c.variant.file, c.task, split=spec.split, limit=spec.limit,
                             overrides=c.variant.overrides, out=c.folder, results=results, cache_dir=cache_dir,
                             argv=argv)
        try:
            run(request, reporter)
            c.status = "done"
        except (RagbenchError, RuntimeError, ValueError, OSError) as e:
            c.status, c.error = "failed", str(e).splitlines()[0] if str(e) else type(e).__name__
            reporter.warn(f"experiment {spec.name}: {c.variant.name} on {c.task} failed: {c.error}")
    return ExperimentRun(combos, baseline)
