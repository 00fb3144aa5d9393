"""`ragbench show` and `ragbench report`: one run, query by query, in the terminal or as an HTML explorer."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ragbench.cli.common import friendly, main, out
from ragbench.errors import RagbenchError


@main.command()
@click.argument("run", type=click.Path())
@click.option("--query", "qid", default=None, help="One query: its metrics, documents, answer and verdicts.")
@click.option("--worst", "worst_metric", default=None, metavar="METRIC", help="The queries lowest on METRIC first.")
@click.option("-n", "count", type=click.IntRange(min=1), default=20, show_default=True, help="Queries listed.")
@click.option("--depth", type=click.IntRange(min=1), default=10, show_default=True, help="Documents shown.")
@friendly
def show(run, qid, worst_metric, count, depth) -> None:
    """Per-query metrics of RUN, or one query's ranking (relevance marked), answer, gold answers and verdicts."""
    from ragbench.report.explore import query_views, worst

    record, views = query_views(run, depth)
    if qid is not None:
        match = [v for v in views if v.qid == qid]
        if not match:
            raise RagbenchError.at("--query", f"no query '{qid}' in {record.folder / 'per_query.jsonl'}")
        _one(match[0])
        return
    if worst_metric is not None:
        if not any(worst_metric in v.metrics for v in views):
            raise RagbenchError.at("--worst", f"the run has no per-query '{worst_metric}' "
                                              f"(it has: {', '.join(record.metrics)})")
        views = worst(views, worst_metric, count)
    metrics = list(record.metrics)
    table = Table(title=f"{record.pipeline} on {record.task}: {len(record.per_query)} queries", title_justify="left")
    for col in ("query", "text", *metrics):
        table.add_column(escape(col), justify="right" if col in metrics else "left", overflow="fold")
    for v in views[:count]:
        table.add_row(escape(v.qid), escape(v.text[:60]),
                      *(f"{v.metrics[m]:.4f}" if isinstance(v.metrics.get(m), int | float) else "-" for m in metrics))
    out.print(table)


def _one(v) -> None:
    out.print(f"[bold]query {escape(v.qid)}[/]: {escape(v.text)}")
    out.print("  ".join(f"{escape(m)} {x:.4f}" for m, x in v.metrics.items() if isinstance(x, int | float)),
              highlight=False)
    table = Table(show_edge=False)
    for col in ("rank", "rel", "document", "score", "snippet"):
        table.add_column(col, overflow="fold")
    for rank, d in enumerate(v.docs, start=1):
        mark = "-" if d.relevant is None else ("[green]✓[/]" if d.relevant > 0 else "✗")
        table.add_row(str(rank), mark, escape(f"{d.title} ({d.docid})" if d.title else d.docid), f"{d.score:.4g}",
                      escape(d.snippet[:160]))
    out.print(table)
    if v.gold:
        out.print(f"gold: {escape(' | '.join(v.gold))}", highlight=False)
    if v.answer is not None:
        out.print(f"answer: {escape(v.answer)}", highlight=False)
    for j in v.judgements:
        out.print(f"{escape(str(j['stage']))}: {j['value']} ({escape(str(j['reply'])[:200])})", highlight=False)


@main.command()
@click.argument("run", type=click.Path())
@click.option("--against", type=click.Path(), default=None, help="A second run: per-query deltas, sortable.")
@click.option("-o", "--output", type=click.Path(), default="run.html", show_default=True)
@click.option("--depth", type=click.IntRange(min=1), default=10, show_default=True, help="Documents per query.")
@friendly
def report(run, against, output, depth) -> None:
    """A standalone HTML explorer of RUN: every query, sortable by any metric, opening to its documents."""
    from ragbench.record import RunRecord
    from ragbench.report.explore import query_views, to_html

    record, views = query_views(run, depth)
    other = RunRecord.read(against) if against else None
    text = to_html(record, views, other.per_query if other else None, other.name if other else "")
    Path(output).write_text(text, encoding="utf-8")
    out.print(f"wrote {output} ({len(views)} queries)")
