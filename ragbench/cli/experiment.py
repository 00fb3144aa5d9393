"""`ragbench experiment`: several pipelines x grid points x tasks in one command, one table per task."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ragbench.cli.common import friendly, main, out
from ragbench.errors import RagbenchError

FORMATS = ["table", "md", "csv", "json", "latex", "html"]
SUFFIX = {".md": "md", ".csv": "csv", ".json": "json", ".tex": "latex", ".html": "html"}


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--task", "tasks", multiple=True, help="Task card name or path (repeatable).")
@click.option("--grid", "grid", multiple=True, metavar="STAGE.KEY=V1,V2",
              help="Values of one stage option, each a variant of every pipeline with that stage (repeatable).")
@click.option("--baseline", default=None, help="The variant (or pipeline) the others are tested against.")
@click.option("--correction", type=click.Choice(["holm", "bonferroni", "none"]), default=None,
              help="Multiple-comparison correction over the variants, per task and metric [default: holm].")
@click.option("--test", "test", type=click.Choice(["randomization", "t"]), default=None,
              help="Paired test [default: randomization].")
@click.option("-m", "--metric", "metrics", multiple=True, help="Metrics to compare (default: all the runs share).")
@click.option("--split", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N queries of each task.")
@click.option("--name", default=None, help="Names the experiment's folder, results/experiments/NAME.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format (default: -o's suffix, else a terminal table).")
@click.option("-o", "--output", type=click.Path(), default=None, help="Write the table to this file.")
@click.option("--results", "results_dir", type=click.Path(), default="results", show_default=True)
@click.option("--cache-dir", type=click.Path(), default=None)
@friendly
def experiment(sources, tasks, grid, baseline, correction, test, metrics, split, limit, name, fmt, output,
               results_dir, cache_dir) -> None:
    """Run PIPELINES (or one experiments/*.yaml) on every task and grid point, and test each against the baseline."""
    from ragbench import sweep as ex
    from ragbench.report.experiment import build, render

    spec = _spec(sources, tasks, grid, baseline, correction, test, metrics, split, limit, name)
    done = ex.run_experiment(spec, Path(results_dir), cache_dir, argv=tuple(sys.argv))
    combos = done.combos
    rows = build(done.done(), done.baseline.name, list(spec.metrics), spec.test, spec.correction)
    fmt = fmt or (SUFFIX.get(Path(output).suffix, "md") if output else "table")
    if fmt == "table":
        _print(rows, spec.correction, spec.test)
    else:
        text = render(rows, fmt, spec.correction, spec.test)
        if output:
            Path(output).write_text(text, encoding="utf-8")
            out.print(f"wrote {output}")
        else:
            click.echo(text, nl=False)
    status = Table(title="runs", title_justify="left", show_edge=False)
    for col in ("variant", "task", "status", "run folder"):
        status.add_column(col, overflow="fold")
    for c in combos:
        shown = "[red]failed[/]" if c.status == "failed" else c.status
        status.add_row(escape(c.variant.name), escape(c.task), shown, escape(str(c.folder) if c.status == "done"
                                                                              else c.error))
    out.print(status)
    failed = [c for c in combos if c.status == "failed"]
    for c in failed:
        out.print(f"[red]failed:[/] {escape(c.variant.name)} on {c.task}: {escape(c.error)}")
    if failed:
        sys.exit(1)


def _spec(sources, tasks, grid, baseline, correction, test, metrics, split, limit, name):
    """An experiment file (one YAML with `pipelines:`), with the command line's options on top; else pipelines."""
    from ragbench.sweep import ExperimentSpec, load_spec, parse_grid

    given = {"tasks": list(tasks), "grid": parse_grid(grid), "baseline": baseline, "correction": correction,
             "test": test, "metrics": list(metrics), "split": split, "limit": limit, "name": name}
    given = {k: v for k, v in given.items() if v not in (None, [], {})}
    if len(sources) == 1 and _is_experiment_file(sources[0]):
        spec = load_spec(sources[0])
        return spec.model_copy(update=given)
    if "tasks" not in given:
        raise RagbenchError.at("--task", "an experiment needs at least one --task (or an experiment file)")
    return ExperimentSpec(pipelines=list(sources), **given)


def _is_experiment_file(source: str) -> bool:
    import yaml

    path = Path(source)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and "pipelines" in data and "stages" not in data


def _print(rows, correction: str, test: str) -> None:
    from ragbench.report.experiment import best, significant

    marks = best(rows)
    for task in dict.fromkeys(r.task for r in rows):
        idx = [i for i, r in enumerate(rows) if r.task == task]
        names = list(rows[idx[0]].metrics)
        table = Table(title=f"{task}: against {rows[idx[0]].name}", title_justify="left")
        table.add_column("variant")
        for m in names:
            table.add_column(escape(m), justify="right")
        for i in idx:
            r = rows[i]
            cells = []
            for m in names:
                c = r.metrics.get(m)
                value = "-" if c is None or c.value is None else f"{c.value:.4f}"
                value = f"[bold]{value}[/]" if (i, m) in marks else value
                if c is not None and not r.baseline and c.delta is not None:
                    star = "*" if significant(c) else ""
                    p = "-" if c.p_adj is None else f"{c.p_adj:.3g}"
                    value += f"\n{c.delta:+.4f}{star} p_adj {p}\n{c.wins}/{c.ties}/{c.losses}"
                cells.append(value)
            table.add_row(escape(r.name) + (" (baseline)" if r.baseline else ""), *cells)
        out.print(table)
    out.print(f"delta against the baseline; paired {test} test, p adjusted ({correction}) over the variants per task "
              "and metric; * adjusted p < 0.05; win/tie/loss over queries; best in bold", highlight=False)
