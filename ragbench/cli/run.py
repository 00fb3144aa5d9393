"""`ragbench run`, `validate` and `list`: running a pipeline and checking or listing the catalogue."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.table import Table

from ragbench.cli.common import executor_options, friendly, main, out
from ragbench.errors import RagbenchError


@main.command()
@click.argument("pipeline_file")
@click.option("--task", "task_name", default="popqa-sample", show_default=True, help="Task card name (tasks/) or path.")
@click.option("--data", "data_dir", type=click.Path(),
              help="Folder with the task's files (queries.jsonl, qrels.tsv, corpus.jsonl.gz).")
@click.option("--split", default=None, help="Task split (default: the card's).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N queries.")
@click.option("--out", "out_dir", type=click.Path(), default=None,
              help="Run folder (default: results/runs/<task>/<pipeline>-<hash>).")
@click.option("--results", "results_dir", type=click.Path(), default="results", show_default=True,
              help="Where run folders go.")
@click.option("--no-cache", is_flag=True, help="Recompute every stage (uses a throw-away cache).")
@click.option("--cache-dir", type=click.Path(), default=None,
              help="Cache location (default: $RAGBENCH_CACHE or ~/.cache/ragbench).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Queries per cached batch.")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.KEY=VALUE",
              help="Override a pipeline field (value parsed as YAML), e.g. --set reader.top_k=10 or "
                   "--set 'reader.llm={backend: openai_server, base_url: http://localhost:8000/v1, model: m}'. "
                   "Repeatable.")
@click.option("--until", "until", default=None, metavar="STAGE",
              help="Run the stages up to and including STAGE only (e.g. retrieval without the reader).")
@executor_options
@friendly
def run(pipeline_file, task_name, data_dir, split, limit, out_dir, results_dir, no_cache, cache_dir, batch_size,
        overrides, until, executor, workers, ray_address) -> None:
    """Run PIPELINE_FILE on a task and write a run folder."""
    from ragbench.executors import from_options
    from ragbench.plan import RunRequest
    from ragbench.report.terminal import print_run
    from ragbench.runner import run as run_pipeline

    start = time.perf_counter()
    request = RunRequest(pipeline_file, task_name, data_dir, split, limit, tuple(overrides), until, out_dir,
                         results_dir, cache_dir, no_cache, batch_size, from_options(executor, workers, ray_address),
                         tuple(sys.argv))
    record = run_pipeline(request)
    print_run(record, out, time.perf_counter() - start)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@friendly
def validate(files) -> None:
    """Check pipeline or task-card YAML files; print every problem as FILE:LINE: path: message."""
    from ragbench.config import validate_file

    problems = []
    for f in files:
        try:
            problems += validate_file(f)
        except RagbenchError as e:
            problems += e.problems
    for p in problems:
        click.echo(str(p))
    if problems:
        sys.exit(2)
    click.echo(f"ok: {len(files)} file(s) valid")


@main.command("list")
@friendly
def list_cmd() -> None:
    """Show components with their options, the task cards and the named pipelines, each with its folder."""
    import yaml

    from ragbench import catalog, registry
    from ragbench.tasks.card import load_task_card

    for name in registry.names():
        cls = registry.get(name)
        table = Table(title=f"type: {name}  ({cls.contract.kind})", title_justify="left", show_edge=False)
        for col in ("option", "type", "default", "description"):
            table.add_column(col, overflow="fold")
        for fname, f in cls.Options.model_fields.items():
            default = f.default_factory() if f.default_factory else f.default
            if hasattr(default, "model_dump"):
                default = default.model_dump()
            shown = "(required)" if f.is_required() else repr(default)
            table.add_row(fname, _type_name(f.annotation), shown, f.description or "")
        out.print(table)
        out.print()
    tasks = Table(title="tasks", title_justify="left", show_edge=False)
    for col in ("task", "splits", "metrics", "description", "folder"):
        tasks.add_column(col, overflow="fold")
    for path in catalog.files("task"):
        card, _ = load_task_card(path)
        tasks.add_row(card.name, ", ".join(card.splits), ", ".join(card.metrics), card.description, _folder(path))
    out.print(tasks)
    out.print()
    pipelines = Table(title="pipelines", title_justify="left", show_edge=False)
    for col in ("pipeline", "description", "folder"):
        pipelines.add_column(col, overflow="fold")
    for path in catalog.files("pipeline"):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            data = None  # `ragbench validate` says where; the listing still names the file
        pipelines.add_row(path.stem, str(data.get("description", "")) if isinstance(data, dict) else "", _folder(path))
    out.print(pipelines)


def _folder(path: Path) -> str:
    """A catalogue file's folder, relative to the working directory when inside it."""
    try:
        return str(path.parent.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path.parent)


def _type_name(annotation) -> str:
    """Literal['a', 'b'] -> 'a | b'; plain classes by name."""
    import typing

    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(map(str, typing.get_args(annotation)))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
