"""A run in the terminal: the metrics table and what each stage reported, read from its RunRecord."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ragbench.metrics.spec import DOC_SUFFIX
from ragbench.record import RunRecord


def print_run(record: RunRecord, out: Console, seconds: float) -> None:
    """What `ragbench run` prints once the run folder is written."""
    aggregate = record.metrics
    # a ranking over passages is also scored per article (M[doc]): shown beside the figure asked for
    metrics = [n for m in record.requested for n in (m, m + DOC_SUFFIX) if n == m or n in aggregate]
    out.print(f"[bold]{record.pipeline}[/] on [bold]{record.task}[/] ({record.data.get('split')}, "
              f"{record.n_queries} queries)")
    table = Table()
    for name in metrics:
        table.add_column(escape(name), justify="right")  # HND[bm25]: brackets are not markup
    table.add_row(*(f"{aggregate[m]:.4f}" if m in aggregate else "-" for m in metrics))
    out.print(table)
    for sid, j in record.section("judges").items():
        line = (f"{sid}: {j['metric']} over {j['judged']} judged answers; {j['unparsed']} of {j['n']} without a "
                f"parseable verdict (left out, not counted wrong)")
        if j.get("sample_values"):
            line += f"; {j['sample_unparsed']} of {j['sample_values']} samples unparseable {j['failures']}"
        if j.get("sd_of_sample_means") is not None:
            means = ", ".join("-" if m is None else f"{m:.4f}" for m in j["sample_means"])
            line += (f"; sample means {means} (sd {j['sd_of_sample_means']:.4f}), mean per-answer sd "
                     f"{j['mean_per_answer_sd'] or 0:.4f}")
        out.print(line, highlight=False)
    for sid, stats in record.section("corpora").items():
        out.print(f"{sid}: {stats.get('summary', '')}", highlight=False)
    for sid, r in record.section("search").items():
        steps = "; ".join(f"step {s['step']}: {s['queries_written']:.1f} queries, {s['new_documents']:.1f} new "
                          "documents" + (f", {s['no_query']} replies with no query" if s["no_query"] else "")
                          for s in r["steps"])
        out.print(f"{sid}: per question, {steps} (queries.generated.jsonl)", highlight=False)
    for sid, r in record.section("relevance").items():
        out.print(f"{sid}: {r['graded']} of {r['pairs']} (query, document) pairs graded, {r['unparsed']} unparseable "
                  f"(no label, not non-relevant); grades {r['grades']}; "
                  f"metrics of '{sid}' use its qrels ({r['qrels']})",
                  highlight=False)
    for sid, summary in record.section("experiments").items():
        _print_experiment(sid, summary, record.folder, out)
    by_stage = record.section("stages")
    if by_stage:
        names = [m for m in metrics if any(m in v["metrics"] for v in by_stage.values())]
        per_stage = Table(title="retrieval metrics by stage", title_justify="left")
        for col in ("stage", "corpus", "qrels", *names):
            per_stage.add_column(escape(col), justify="right" if col in names else "left")
        for sid, v in by_stage.items():
            per_stage.add_row(sid, v["corpus"], v["qrels"],
                              *(f"{v['metrics'][m]:.4f}" if m in v["metrics"] else "-" for m in names))
        out.print(per_stage)
    stages = Table(show_edge=False)
    for col in ("stage", "type", "source", "seconds"):
        stages.add_column(col)
    types = {s["id"]: s["type"] for s in record.lock.get("stages", [])}
    for s in record.timings:
        resumed = (f"computed ({s['batches_cached']}/{s['batches']} batches resumed)" if s["batches_cached"]
                   else "computed")
        stages.add_row(s["id"], types.get(s["id"], ""), "cache" if s["from_cache"] else resumed, f"{s['seconds']:.2f}")
    out.print(stages)
    all_cached = all(s["from_cache"] for s in record.timings)
    cached = "every stage came from the cache; " if all_cached else ""
    out.print(f"{cached}run folder: {record.folder}  ({seconds:.2f}s)")


def _print_experiment(sid: str, summary: dict, folder: Path, out: Console) -> None:
    """The hard-negative tables: accuracy per (source, m) with HND, and the inverted-U curve per ordering."""
    metric = summary["metric"]
    if "negatives" in summary:
        ms = sorted({int(m) for row in summary["negatives"].values() for m in row})
        t = Table(title=f"{sid}: {metric} with the gold passage + m negatives "
                        f"({summary['with_gold']} of {summary['queries']} queries have a gold passage)",
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
            accs = (f"{o['acc'][str(k)]['acc']:.3f}" if str(k) in o["acc"] else "-" for k in ks)
            t.add_row(name, *accs, str(o["k_star"]), f"{o['peak_drop']:+.3f}")
        out.print(t)
    plots = [str(folder / p) for p in ("hard_negatives.png", "inverted_u.png") if (folder / p).exists()]
    out.print(f"plots: {', '.join(plots)}", highlight=False)
