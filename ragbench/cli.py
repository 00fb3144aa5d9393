"""Command-line interface: parse, call, print. Bad input exits 2 with one line per problem."""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ragbench.errors import RagbenchError

# Piped or captured output (CI logs, files) gets room for wide tables instead of rich's 80 columns.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)


def _friendly(fn):
    """Turn RagbenchError into exit code 2 and one line per problem; --debug shows tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RagbenchError as e:
            if os.environ.get("RAGBENCH_DEBUG"):
                raise
            for p in e.problems:
                err.print(f"[red]error:[/] {p}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            err.print("interrupted: finished batches are cached; run the same command again to resume")
            sys.exit(130)

    return wrapper


@click.group()
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="ragbench")
def main(debug: bool) -> None:
    """Evaluate retrieval-augmented generation pipelines."""
    if debug:
        os.environ["RAGBENCH_DEBUG"] = "1"


@main.command()
@click.argument("pipeline_file")
@click.option("--task", "task_name", default="popqa-sample", show_default=True, help="Task card name (tasks/) or path.")
@click.option("--data", "data_dir", type=click.Path(), help="Folder with the task's files (queries.jsonl, qrels.tsv, corpus.jsonl.gz).")
@click.option("--split", default=None, help="Task split (default: the card's).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N queries.")
@click.option("--out", "out_dir", type=click.Path(), default=None, help="Run folder (default: results/runs/<task>/<pipeline>-<hash>).")
@click.option("--results", "results_dir", type=click.Path(), default="results", show_default=True, help="Where run folders go.")
@click.option("--no-cache", is_flag=True, help="Recompute every stage (uses a throw-away cache).")
@click.option("--cache-dir", type=click.Path(), default=None, help="Cache location (default: $RAGBENCH_CACHE or ~/.cache/ragbench).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Queries per cached batch.")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.KEY=VALUE",
              help="Override a pipeline field (value parsed as YAML), e.g. --set reader.top_k=10 or "
                   "--set 'reader.llm={backend: openai_server, base_url: http://localhost:8000/v1, model: m}'. Repeatable.")
@click.option("--until", "until", default=None, metavar="STAGE", help="Run the stages up to and including STAGE only (e.g. retrieval without the reader).")
@_friendly
def run(pipeline_file, task_name, data_dir, split, limit, out_dir, results_dir, no_cache, cache_dir, batch_size, overrides, until) -> None:
    """Run PIPELINE_FILE on a task and write a run folder."""
    import tempfile

    from ragbench.cache import Cache
    from ragbench.config import final_depth, load_pipeline
    from ragbench.evaluation import (
        computable_metrics,
        evaluate_result,
        experiment_summaries,
        judge_summaries,
        recall_curve,
        split_metrics,
        stage_metrics,
    )
    from ragbench.metrics.degradation import headline
    from ragbench.metrics.spec import check_metrics
    from ragbench.pipeline import run_pipeline
    from ragbench.progress import Reporter
    from ragbench.runs import config_hash, default_folder, write_run_folder
    from ragbench.tasks import load_task
    from ragbench.tasks.card import load_task_card
    from ragbench.yamlio import LocatedYaml

    start = time.perf_counter()
    reporter = Reporter()
    pipeline = load_pipeline(pipeline_file, overrides)
    if until:
        pipeline = pipeline.until(until)
    card, card_path = load_task_card(task_name)
    has_reader, has_ranking = pipeline.has_reader, pipeline.has_ranking
    # the card's metrics: IR ones for a ranking, answer ones for a reader (answer recall needs only a ranking)
    metrics = list(pipeline.metrics or ((card.metrics if has_ranking else []) + card.answer_metrics
                                        + [m for m in dict.fromkeys(pipeline.judge_metrics) if m not in card.answer_metrics]))
    # the card's defaults shrink to what the pipeline computes; metrics the pipeline itself names are checked below
    metrics = computable_metrics(metrics, has_ranking, has_reader or bool(pipeline.metrics))
    problems = check_metrics(metrics, final_depth(pipeline.stages),
                             LocatedYaml(None, {}, str(pipeline.file if pipeline.metrics else card_path)), ("metrics",), has_reader, pipeline.judge_metrics)
    if problems:
        raise RagbenchError(problems)
    task = load_task(card, split, data_dir, limit, need_corpus=has_ranking, reporter=reporter)
    if not has_reader and not pipeline.metrics and any(q.extra.get(card.answers_field) is None for q in task.queries):
        answer_names = set(split_metrics(metrics)[1])  # answer recall is extra for a retrieval run: skip it, don't fail
        metrics = [m for m in metrics if m not in answer_names]
    reporter.log(f"task {task.name} ({task.split}): {len(task.queries)} queries, "
                 f"{len(task.corpus) if task.corpus is not None else 0} documents from {task.source}")
    with tempfile.TemporaryDirectory(prefix="ragbench-nocache-") as tmp:
        cache = Cache(tmp if no_cache else cache_dir)
        result = run_pipeline(pipeline, task, cache, reporter, batch_size=batch_size)
    aggregate, per_query, breakdown = evaluate_result(result, task, metrics, card.group_by)
    # several ranking stages (a reranker, long units next to passages): each one's retrieval metrics too
    by_stage = stage_metrics(result, task, metrics) if len(result.rankings) > 1 else {}
    experiments = experiment_summaries(result, task)
    for summary in experiments.values():
        aggregate.update(headline(summary))  # HND[...], rel_drop[...], k_star[...], peak_drop[...]: what compare/check read
        for qid, values in summary.pop("per_query").items():
            per_query.setdefault(qid, {}).update(values)
    chash = config_hash(pipeline, task, metrics, limit)
    folder = Path(out_dir) if out_dir else default_folder(Path(results_dir), task, pipeline, chash)
    curves = {"R@k": c} if result.final_ranking is not None and (c := recall_curve(result.final_ranking, task)) else {}
    write_run_folder(folder, pipeline, task, result, metrics, aggregate, per_query, chash, limit, sys.argv, breakdown, by_stage,
                     experiments, curves)

    out.print(f"[bold]{pipeline.name}[/] on [bold]{task.name}[/] ({task.split}, {len(per_query)} queries)")
    table = Table()
    for name in metrics:
        table.add_column(name, justify="right")
    table.add_row(*(f"{aggregate[m]:.4f}" if m in aggregate else "-" for m in metrics))
    out.print(table)
    for sid, j in judge_summaries(result).items():
        line = (f"{sid}: {j['metric']} over {j['judged']} judged answers; {j['unparsed']} of {j['n']} without a parseable verdict "
                f"(left out, not counted wrong)")
        if j.get("sample_values"):
            line += f"; {j['sample_unparsed']} of {j['sample_values']} samples unparseable {j['failures']}"
        if j.get("sd_of_sample_means") is not None:
            means = ", ".join("-" if m is None else f"{m:.4f}" for m in j["sample_means"])
            line += f"; sample means {means} (sd {j['sd_of_sample_means']:.4f}), mean per-answer sd {j['mean_per_answer_sd'] or 0:.4f}"
        out.print(line, highlight=False)
    for c in result.corpora:
        out.print(f"{c.spec.id}: {c.stats.get('summary', '')}", highlight=False)
    for s in result.rankings:
        if s.spec.cls.produces == "relevance":
            from ragbench.judges.relevance import relevance_summary

            r = relevance_summary(s.relevance, s.spec.options.relevant_at)
            out.print(f"{s.spec.id}: {r['graded']} of {r['pairs']} (query, document) pairs graded, {r['unparsed']} unparseable "
                      f"(no label, not non-relevant); grades {r['grades']}; metrics of '{s.spec.id}' use its qrels ({s.spec.options.qrels})", highlight=False)
    for sid, summary in experiments.items():
        _print_experiment(sid, summary, folder)
    if by_stage:
        names = [m for m in metrics if any(m in v["metrics"] for v in by_stage.values())]
        per_stage = Table(title="retrieval metrics by stage", title_justify="left")
        for col in ("stage", "corpus", "qrels", *names):
            per_stage.add_column(col, justify="right" if col in names else "left")
        for sid, v in by_stage.items():
            per_stage.add_row(sid, v["corpus"], v["qrels"], *(f"{v['metrics'][m]:.4f}" if m in v["metrics"] else "-" for m in names))
        out.print(per_stage)
    stages = Table(show_edge=False)
    for col in ("stage", "type", "source", "seconds"):
        stages.add_column(col)
    for s in result.stages:
        source = "cache" if s.cached else (f"computed ({s.batches_cached}/{s.batches_total} batches resumed)" if s.batches_cached else "computed")
        stages.add_row(s.spec.id, s.spec.type, source, f"{s.seconds:.2f}")
    out.print(stages)
    all_cached = all(s.cached for s in result.stages)
    out.print(f"{'every stage came from the cache; ' if all_cached else ''}run folder: {folder}  ({time.perf_counter() - start:.2f}s)")


def _print_experiment(sid: str, summary: dict, folder: Path) -> None:
    """The hard-negative tables: accuracy per (source, m) with HND, and the inverted-U curve per ordering."""
    metric = summary["metric"]
    if "negatives" in summary:
        ms = sorted({int(m) for row in summary["negatives"].values() for m in row})
        t = Table(title=f"{sid}: {metric} with the gold passage + m negatives ({summary['with_gold']} of {summary['queries']} queries have a gold passage)",
                  title_justify="left")
        for col in ("source", *(f"m={m}" for m in ms), "HND", "rel. drop"):
            t.add_column(col, justify="left" if col == "source" else "right")
        for source, row in summary["negatives"].items():
            cells = [f"{row[str(m)]['acc']:.3f}±{row[str(m)]['se']:.3f}" if str(m) in row else "-" for m in ms]
            hnd, drop = summary["HND"].get(source), summary["relative_drop"].get(source)
            t.add_row(source, *cells, "-" if hnd is None else f"{hnd:+.3f}", "-" if drop is None else f"{drop:.1%}")
        out.print(t)
    if "curve" in summary:
        orders = summary["curve"]["orders"]
        ks = sorted({int(k) for o in orders.values() for k in o["acc"]})
        t = Table(title=f"{sid}: {metric} against top-k of {summary['curve']['source']}", title_justify="left")
        for col in ("order", *(f"k={k}" for k in ks), "k*", "peak drop"):
            t.add_column(col, justify="left" if col == "order" else "right")
        for name, o in orders.items():
            t.add_row(name, *(f"{o['acc'][str(k)]['acc']:.3f}" if str(k) in o["acc"] else "-" for k in ks), str(o["k_star"]), f"{o['peak_drop']:+.3f}")
        out.print(t)
    out.print(f"plots: {', '.join(str(folder / p) for p in ('hard_negatives.png', 'inverted_u.png') if (folder / p).exists())}", highlight=False)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@_friendly
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
@_friendly
def list_cmd() -> None:
    """Show components with their options, and the task cards."""
    from ragbench import catalog, registry
    from ragbench.tasks.card import load_task_card

    for name in registry.names():
        cls = registry.get(name)
        table = Table(title=f"type: {name}  ({cls.kind})", title_justify="left", show_edge=False)
        for col in ("option", "type", "default", "description"):
            table.add_column(col, overflow="fold")
        for fname, f in cls.Options.model_fields.items():
            default = f.default_factory() if f.default_factory else f.default
            if hasattr(default, "model_dump"):
                default = default.model_dump()
            table.add_row(fname, _type_name(f.annotation), "(required)" if f.is_required() else repr(default), f.description or "")
        out.print(table)
        out.print()
    tasks = Table(title="tasks", title_justify="left", show_edge=False)
    for col in ("task", "splits", "metrics", "description"):
        tasks.add_column(col, overflow="fold")
    for path in catalog.files("task"):
        card, _ = load_task_card(path)
        tasks.add_row(card.name, ", ".join(card.splits), ", ".join(card.metrics), card.description)
    out.print(tasks)


def _type_name(annotation) -> str:
    """Literal['a', 'b'] -> 'a | b'; plain classes by name."""
    import typing

    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(map(str, typing.get_args(annotation)))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("-x", "--retrieval", "xs", multiple=True, required=True, help="Retrieval metric (per_query.jsonl name), e.g. R@5, T@5. Repeatable.")
@click.option("-y", "--answer", "ys", multiple=True, required=True, help="Answer-quality metric, e.g. popqa_acc, judge_acc. Repeatable.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@_friendly
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
        table.add_column(col, justify="right" if col in ("n", "Kendall tau-b", "Spearman rho", "p") else "left", overflow="fold")
    fmt_v = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        table.add_row(r.level, r.sample, r.x, r.y, str(r.n), fmt_v(r.tau, ".4f"), fmt_v(r.tau_p, ".2g"),
                      fmt_v(r.rho, ".4f"), fmt_v(r.rho_p, ".2g"), r.note)
    out.print(table)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("-m", "--metric", "metrics", multiple=True, help="Metric to compare (repeatable; default: all the runs share).")
@click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True, help="Randomization test resamples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@_friendly
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
        table.add_row(r.run, r.metric, str(r.n), f"{r.mean_baseline:.4f}", f"{r.mean_run:.4f}",
                      f"[{color}]{r.delta:+.4f}[/]" if color else f"{r.delta:+.4f}", f"{r.wins}/{r.ties}/{r.losses}",
                      fmt_p(r.t_p), fmt_p(r.rand_p))
    out.print(table)


@main.command()
@click.argument("run", type=click.Path())
@click.option("--baseline", required=True, type=click.Path(), help="Baseline run folder, or its metrics.json.")
@click.option("--thresholds", "thresholds_file", type=click.Path(), default=None, help="YAML of per-metric rules (min, max_drop, significant).")
@click.option("--junit", "junit_file", type=click.Path(), default=None, help="Also write the result as JUnit XML.")
@_friendly
def check(run, baseline, thresholds_file, junit_file) -> None:
    """CI gate: exit 0 if RUN meets every rule against the baseline, 1 on a quality regression, 2 on bad input."""
    from ragbench.report.check import check as run_check
    from ragbench.report.check import junit, load_thresholds

    verdicts = run_check(Path(run), Path(baseline), load_thresholds(thresholds_file))
    table = Table(title=f"{run} against {baseline}", title_justify="left")
    for col in ("metric", "value", "baseline", "delta", "p", "result"):
        table.add_column(col, justify="left" if col in ("metric", "result") else "right", overflow="fold")
    for v in verdicts:
        table.add_row(v.metric, f"{v.value:.4f}", "-" if v.baseline is None else f"{v.baseline:.4f}",
                      "-" if v.delta is None else f"{v.delta:+.4f}", "-" if v.p is None else f"{v.p:.2g}",
                      "[green]pass[/]" if v.passed else f"[red]FAIL[/] {v.reason}")
    out.print(table)
    if junit_file:
        junit(verdicts, Path(run), Path(junit_file))
    failed = [v for v in verdicts if not v.passed]
    if failed:
        err.print(f"quality regression: {', '.join(f'{v.metric} ({v.reason})' for v in failed)}", highlight=False)
        sys.exit(1)
    out.print(f"pass: {len(verdicts)} metric(s) checked")


@main.command()
@click.argument("results_dir", required=False, default="results", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json", "latex", "html"]), default=None,
              help="Output format (default: from --output's suffix, else md).")
@click.option("-o", "--output", type=click.Path(), default=None, help="Write to this file instead of stdout.")
@click.option("--pick", type=click.Choice(["latest", "best"]), default="latest", show_default=True,
              help="Which run per (pipeline, task): the latest, or the best by --sort.")
@click.option("--sort", "sort", default=None, metavar="METRIC", help="Sort each task's rows by this metric (default: the first column).")
@click.option("-m", "--metric", "metrics", multiple=True, help="Metric column (repeatable; default: every metric the runs have).")
@click.option("--task", "tasks", multiple=True, help="Only these tasks (repeatable).")
@_friendly
def leaderboard(results_dir, fmt, output, pick, sort, metrics, tasks) -> None:
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
    df = lb.frame(chosen, list(metrics) or None, sort, relative_to=root)
    text = lb.render(df, chosen, fmt)
    if output:
        from ragbench.cache import atomic_write_text

        atomic_write_text(Path(output), text)
        err.print(f"{len(df)} rows ({len(entries)} runs found, {pick} per pipeline and task) -> {output}", highlight=False)
    else:
        click.echo(text, nl=False)


@main.command("judge-calibrate")
@click.argument("labels_file", type=click.Path())
@click.option("--run", "run_dir", type=click.Path(), default=None, help="Run folder whose per_query.jsonl holds the judge scores.")
@click.option("--metric", default=None, help="The per-query judge score in --run (e.g. correctness, faithfulness, judge_acc).")
@click.option("--score-field", default=None, help="Or: the field of LABELS_FILE that holds the judge score.")
@click.option("--label-field", default="label", show_default=True, help="Field of LABELS_FILE with the binary human label.")
@click.option("--id-field", default="query_id", show_default=True, help="Field of LABELS_FILE that names the query.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@_friendly
def judge_calibrate(labels_file, run_dir, metric, score_field, label_field, id_field, fmt) -> None:
    """F1-AUC, Spearman and Kendall of judge scores against binary human labels (LABELS_FILE, JSON lines)."""
    import json as _json

    from ragbench.jsonl import json_records
    from ragbench.report.calibration import calibrate
    from ragbench.report.correlate import read_per_query

    if (run_dir is None) == (score_field is None) or (run_dir is not None and metric is None):
        raise RagbenchError.at("judge-calibrate", "give --run RUN --metric NAME, or --score-field FIELD")
    path = Path(labels_file)
    scored = read_per_query(Path(run_dir)) if run_dir else {}
    scores, labels, unmatched = [], [], 0
    for i, row in json_records(path, hint="expected JSON lines with a label per query"):
        label = row.get(label_field)
        if label not in (0, 1, True, False):
            raise RagbenchError.at(str(path), f"expected 0/1 or true/false, got {label!r}", line=i, path=label_field)
        if score_field:
            score = row.get(score_field)
        else:
            score = scored.get(str(row.get(id_field)), {}).get(metric)
        if score is None:
            unmatched += 1
            continue
        scores.append(float(score))
        labels.append(int(label))
    if not scores:
        raise RagbenchError.at(str(path), f"no label matched a score ({'metric ' + metric + ' in ' + run_dir if run_dir else 'field ' + score_field})")
    result = {**calibrate(scores, labels), "unmatched_labels": unmatched, "normalisation": "f1_auc = trapezoidal area over th = 0, 0.1, ..., 1"}
    if fmt == "json":
        click.echo(_json.dumps(result, indent=2))
        return
    out.print(f"{result['n']} labelled scores ({result['positives']} positive, {unmatched} labels without a score)")
    for k in ("f1_auc", "f1_mean", "spearman", "kendall_tau_b"):
        out.print(f"{k:>14}: {'-' if result[k] is None else format(result[k], '.4f')}")


@main.group()
def cache() -> None:
    """Inspect or clear the stage cache."""


@cache.command("clear")
@click.option("--cache-dir", type=click.Path(), default=None)
@_friendly
def cache_clear(cache_dir) -> None:
    from ragbench.cache import Cache

    c = Cache(cache_dir)
    files, size = c.size()
    c.clear()
    click.echo(f"removed {files} files ({size / 1e6:.1f} MB) from {c.root}")


@cache.command("info")
@click.option("--cache-dir", type=click.Path(), default=None)
def cache_info(cache_dir) -> None:
    from ragbench.cache import Cache

    c = Cache(cache_dir)
    files, size = c.size()
    click.echo(f"{c.root}: {files} files, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
