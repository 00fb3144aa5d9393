"""Commands that read run folders: `compare`, `check`, `leaderboard`, `correlate`, `judge-calibrate`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ragbench.cli.common import err, friendly, main, out
from ragbench.errors import RagbenchError


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("-x", "--retrieval", "xs", multiple=True, required=True,
              help="Retrieval metric (per_query.jsonl name), e.g. R@5, T@5. Repeatable.")
@click.option("-y", "--answer", "ys", multiple=True, required=True,
              help="Answer-quality metric, e.g. popqa_acc, judge_acc. Repeatable.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@friendly
def correlate(runs, xs, ys, fmt) -> None:
    """Kendall tau-b and Spearman rho between retrieval and answer metrics of RUNS, over queries and over runs."""
    import json as _json

    from ragbench.report.correlate import correlate as compute

    rows = compute([Path(r) for r in runs], list(xs), list(ys))
    if fmt == "json":
        click.echo(_json.dumps([r.to_json() for r in rows], indent=2))
        return
    table = Table(title="rank correlation between retrieval and answer metrics", title_justify="left")
    for col in ("level", "sample", "x", "y", "n", "Kendall tau-b", "p", "Spearman rho", "p", "note"):
        justify = "right" if col in ("n", "Kendall tau-b", "Spearman rho", "p") else "left"
        table.add_column(col, justify=justify, overflow="fold")
    fmt_v = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        table.add_row(r.level, r.sample, r.x, r.y, str(r.n), fmt_v(r.tau, ".4f"), fmt_v(r.tau_p, ".2g"),
                      fmt_v(r.rho, ".4f"), fmt_v(r.rho_p, ".2g"), r.note)
    out.print(table)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("-m", "--metric", "metrics", multiple=True,
              help="Metric to compare (repeatable; default: all the runs share).")
@click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Randomization test resamples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@friendly
def compare(runs, metrics, resamples, seed, fmt) -> None:
    """Per-metric deltas of RUNS against the first, with paired t and randomization tests over queries."""
    import json as _json

    from ragbench.report.compare import compare as compute

    rows = compute([Path(r) for r in runs], list(metrics) or None, resamples, seed)
    if fmt == "json":
        click.echo(_json.dumps([r.to_json() for r in rows], indent=2))
        return
    table = Table(title=f"against {rows[0].baseline} (paired, two-sided)", title_justify="left")
    for col in ("run", "metric", "n", "baseline", "run value", "delta", "win/tie/loss", "p (t)", "p (rand)"):
        table.add_column(col, justify="left" if col in ("run", "metric") else "right", overflow="fold")
    fmt_p = lambda v: "-" if v is None else f"{v:.2g}"  # noqa: E731
    for r in rows:
        color = "green" if r.delta > 0 else "red" if r.delta < 0 else ""
        table.add_row(escape(r.run), escape(r.metric), str(r.n), f"{r.mean_baseline:.4f}", f"{r.mean_run:.4f}",
                      f"[{color}]{r.delta:+.4f}[/]" if color else f"{r.delta:+.4f}", f"{r.wins}/{r.ties}/{r.losses}",
                      fmt_p(r.t_p), fmt_p(r.rand_p))
    out.print(table)


@main.command()
@click.argument("run", type=click.Path())
@click.option("--baseline", required=True, type=click.Path(), help="Baseline run folder, or its metrics.json.")
@click.option("--thresholds", "thresholds_file", type=click.Path(), default=None,
              help="YAML of per-metric rules (min, max_drop, significant).")
@click.option("--junit", "junit_file", type=click.Path(), default=None, help="Also write the result as JUnit XML.")
@friendly
def check(run, baseline, thresholds_file, junit_file) -> None:
    """CI gate: exit 0 if RUN meets every rule against the baseline, 1 on a quality regression, 2 on bad input."""
    from ragbench.report.check import check as run_check
    from ragbench.report.check import junit, load_thresholds

    verdicts = run_check(Path(run), Path(baseline), load_thresholds(thresholds_file))
    table = Table(title=f"{run} against {baseline}", title_justify="left")
    for col in ("metric", "value", "baseline", "delta", "p", "result"):
        table.add_column(col, justify="left" if col in ("metric", "result") else "right", overflow="fold")
    for v in verdicts:
        table.add_row(escape(v.metric), f"{v.value:.4f}", "-" if v.baseline is None else f"{v.baseline:.4f}",
                      "-" if v.delta is None else f"{v.delta:+.4f}", "-" if v.p is None else f"{v.p:.2g}",
                      "[green]pass[/]" if v.passed else f"[red]FAIL[/] {v.reason}")
    out.print(table)
    if junit_file:
        junit(verdicts, Path(run), Path(junit_file))
    failed = [v for v in verdicts if not v.passed]
    if failed:
        err.print(f"quality regression: {', '.join(f'{v.metric} ({v.reason})' for v in failed)}", highlight=False,
                  markup=False)
        sys.exit(1)
    out.print(f"pass: {len(verdicts)} metric(s) checked")


@main.command()
@click.argument("results_dir", required=False, default="results", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json", "latex", "html"]), default=None,
              help="Output format (default: from --output's suffix, else md).")
@click.option("-o", "--output", type=click.Path(), default=None, help="Write to this file instead of stdout.")
@click.option("--pick", type=click.Choice(["latest", "best"]), default="latest", show_default=True,
              help="Which run per (pipeline, task): the latest, or the best by --sort.")
@click.option("--sort", "sort", default=None, metavar="METRIC",
              help="Sort each task's rows by this metric (default: the first column).")
@click.option("-m", "--metric", "metrics", multiple=True,
              help="Metric column (repeatable; default: every metric the runs have).")
@click.option("--task", "tasks", multiple=True, help="Only these tasks (repeatable).")
@click.option("--by", metavar="FIELD", help="One row per value of a breakdown field (a card's group_by).")
@friendly
def leaderboard(results_dir, fmt, output, pick, sort, metrics, tasks, by) -> None:
    """One row per (pipeline, task) from the run folders under RESULTS_DIR, as md, csv, json, latex or html."""
    from ragbench.report import leaderboard as lb

    suffixes = {".md": "md", ".csv": "csv", ".json": "json", ".tex": "latex", ".html": "html", ".htm": "html"}
    fmt = fmt or (suffixes.get(Path(output).suffix.lower()) if output else None) or "md"
    root = Path(results_dir)
    entries = lb.scan(root)
    if tasks:
        entries = [e for e in entries if e.task in tasks]
        if not entries:
            raise RagbenchError.at("--task", f"no runs of {', '.join(tasks)} under {root}")
    chosen = lb.select(entries, pick, sort)
    df = lb.frame(chosen, list(metrics) or None, sort, relative_to=root, by=by)
    text = lb.render(df, chosen, fmt)
    if output:
        from ragbench.cache import atomic_write_text
        atomic_write_text(Path(output), text)
        err.print(f"{len(df)} rows ({len(entries)} runs found, {pick} per pipeline and task) -> {output}",
                  highlight=False)
    else:
        click.echo(text, nl=False)


@main.command("judge-calibrate")
@click.argument("labels_file", type=click.Path())
@click.option("--run", "run_dir", type=click.Path(), default=None,
              help="Run folder whose per_query.jsonl holds the judge scores.")
@click.option("--metric", default=None,
              help="The per-query judge score in --run (e.g. correctness, faithfulness, judge_acc).")
@click.option("--score-field", default=None, help="Or: the field of LABELS_FILE that holds the judge score.")
@click.option("--label-field", default="label", show_default=True,
              help="Field of LABELS_FILE with the binary human label.")
@click.option("--id-field", default="query_id", show_default=True, help="Field of LABELS_FILE that names the query.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@friendly
def judge_calibrate(labels_file, run_dir, metric, score_field, label_field, id_field, fmt) -> None:
    """F1-AUC, Spearman and Kendall of judge scores against binary human labels (LABELS_FILE, JSON lines)."""
    import json as _json

    from ragbench.jsonl import json_records
    from ragbench.record import RunRecord
    from ragbench.report.calibration import calibrate

    if (run_dir is None) == (score_field is None) or (run_dir is not None and metric is None):
        raise RagbenchError.at("judge-calibrate", "give --run RUN --metric NAME, or --score-field FIELD")
    path = Path(labels_file)
    scored = RunRecord.read_per_query(run_dir) if run_dir else {}
    scores, labels, unmatched = [], [], 0
    for i, row in json_records(path, hint="expected JSON lines with a label per query"):
        label = row.get(label_field)
        if label not in (0, 1, True, False):
            raise RagbenchError.at(str(path), f"expected 0/1 or true/false, got {label!r}", line=i, path=label_field)
        score = row.get(score_field) if score_field else scored.get(str(row.get(id_field)), {}).get(metric)
        if score is None:
            unmatched += 1
            continue
        scores.append(float(score))
        labels.append(int(label))
    if not scores:
        source = "metric " + metric + " in " + run_dir if run_dir else "field " + score_field
        raise RagbenchError.at(str(path), f"no label matched a score ({source})")
    result = {**calibrate(scores, labels), "unmatched_labels": unmatched,
              "normalisation": "f1_auc = trapezoidal area over th = 0, 0.1, ..., 1"}
    if fmt == "json":
        click.echo(_json.dumps(result, indent=2))
        return
    out.print(f"{result['n']} labelled scores ({result['positives']} positive, {unmatched} labels without a score)")
    for k in ("f1_auc", "f1_mean", "spearman", "kendall_tau_b"):
        out.print(f"{k:>14}: {'-' if result[k] is None else format(result[k], '.4f')}")
