"""`ragbench leaderboard`: one row per (pipeline, task) from stored run folders, in five formats.

Runs are found by their metrics.json anywhere under the results folder. Per (pipeline, task) the
latest run is kept (config.lock.yaml `created`), or the best by a metric. Metrics are columns;
rows are grouped by task and sorted by the chosen metric. "Best" (bold in Markdown, LaTeX and
HTML) is per column among the rows of a task scored on the same number of queries; for
degradation measures (HND, relative and peak drop) lower is better, k* has no better direction
and is never bold.

The HTML page is standalone: inline CSS and the plots as PNG data URIs (R@k curves per task from
metrics.json `curves`, hard-negative curves from `experiments`), so it opens without a network.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ragbench import __version__
from ragbench.errors import RagbenchError
from ragbench.metrics.spec import DOC_SUFFIX, direction, level_name, ranks_passages
from ragbench.record import RunRecord

Format = Literal["md", "csv", "json", "latex", "html"]
FORMATS: tuple[str, ...] = ("md", "csv", "json", "latex", "html")
ID_COLUMNS = ("task", "pipeline", "queries")


@dataclass
class RunEntry:
    folder: Path
    task: str
    pipeline: str
    n_queries: int
    created: str
    metrics: dict[str, float]
    curves: dict[str, dict[str, float]] = field(default_factory=dict)
    experiments: dict[str, Any] = field(default_factory=dict)
    #: metrics.json `breakdown`: field -> value -> metric -> {mean, n} (the task card's group_by)
    breakdown: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)

    @property
    def over_passages(self) -> bool:
        """Ranked passages of documents (type: passages): its M is over passages, its M[doc] over documents."""
        return ranks_passages(self.metrics)

    def value(self, name: str, values: dict[str, float] | None = None) -> float:
        """A column's value (of `values`, default the run's metrics): M[doc] of a run over whole documents is
        its M (the same quantity)."""
        return (self.metrics if values is None else values).get(level_name(name, self.over_passages), math.nan)

    def groups(self, by: str) -> dict[str, tuple[int, dict[str, float]]]:
        """Per value of the breakdown field `by`: (queries, metric means)."""
        return {str(value): (max((int(s["n"]) for s in stats.values()), default=0),
                             {m: float(s["mean"]) for m, s in stats.items() if s.get("mean") is not None})
                for value, stats in self.breakdown.get(by, {}).items()}

    def recall_curve(self) -> dict[int, float]:
        """R@k points: the stored curve, else whatever R@k metrics the run has."""
        stored = self.curves.get("R@k")
        if stored:
            return {int(k): float(v) for k, v in stored.items()}
        return {int(m[2:]): v for m, v in self.metrics.items() if m.startswith("R@") and m[2:].isdigit()}


def scan(results_dir: Path) -> list[RunEntry]:
    """Every run folder under results_dir (any depth); a malformed metrics.json is an error, not a silent gap."""
    if not results_dir.is_dir():
        raise RagbenchError.at(str(results_dir), "not a folder (expected a results folder holding run folders)")
    entries = []
    for path in sorted(results_dir.rglob("metrics.json")):
        rec = RunRecord.read(path)
        entries.append(RunEntry(rec.folder, rec.task, rec.pipeline, rec.n_queries, rec.created,
                                {k: float(v) for k, v in rec.metrics.items() if isinstance(v, (int, float))},
                                rec.section("curves"), rec.section("experiments"), rec.section("breakdown")))
    if not entries:
        raise RagbenchError.at(str(results_dir),
                               "no run folders found (no metrics.json below it); run `ragbench run` first")
    return entries


def higher_is_better(metric: str) -> bool | None:
    """From the metric's spec (HND, relative and peak drops: lower; k*: no direction)."""
    return direction(metric)


def select(entries: list[RunEntry], pick: Literal["latest", "best"] = "latest",
           by: str | None = None) -> list[RunEntry]:
    """One run per (pipeline, task): the latest, or the best by `by` (runs without it count as worst)."""
    if pick == "best" and by is None:
        raise RagbenchError.at("--pick", "best needs a metric to pick by (--sort METRIC)")
    groups: dict[tuple[str, str], list[RunEntry]] = {}
    for e in entries:
        groups.setdefault((e.pipeline, e.task), []).append(e)
    chosen = []
    for runs in groups.values():
        if pick == "latest":
            chosen.append(max(runs, key=lambda e: (e.created, str(e.folder))))
        else:
            sign = -1.0 if higher_is_better(by) is False else 1.0  # type: ignore[arg-type]
            chosen.append(max(runs, key=lambda e: (sign * e.metrics[by] if by in e.metrics else -math.inf, e.created)))
    return chosen


def frame(entries: list[RunEntry], metrics: list[str] | None = None, sort: str | None = None,
          relative_to: Path | None = None, by: str | None = None) -> pd.DataFrame:
    """The leaderboard table: task, pipeline, queries, one column per metric, run folder and date.

    `by`: a breakdown field of the runs (FRAMES' reasoning_types): one row per (task, pipeline, value),
    each with its queries and means, ranked among the rows of the same value."""
    if by is not None and not any(by in e.breakdown for e in entries):
        fields = sorted({f for e in entries for f in e.breakdown})
        raise RagbenchError.at("--by", f"no run has a breakdown by '{by}' (runs have: {', '.join(fields) or 'none'};"
                                       " a task card's group_by makes one)")
    available = list(dict.fromkeys(m for e in entries for m in e.metrics))
    names = metrics or available
    unknown = [m for m in names if m not in available]
    if unknown:
        raise RagbenchError.at("--metric", f"no run has {', '.join(unknown)} (runs have: {', '.join(available)})")
    if sort is not None and sort not in names:
        if sort not in available:
            raise RagbenchError.at("--sort", f"no run has '{sort}'")
        names = [sort, *names]
    rows, passage_runs = [], set()
    for e in entries:
        run = e.folder.relative_to(relative_to) if relative_to and e.folder.is_relative_to(relative_to) else e.folder
        if e.over_passages:
            passage_runs.add(str(run))
        parts = [(e.n_queries, e.metrics, {})] if by is None else \
            [(n, values, {by: value}) for value, (n, values) in e.groups(by).items()]
        for n, values, group in parts:
            rows.append({"task": e.task, **group, "pipeline": e.pipeline, "queries": n,
                         **{m: e.value(m, values) for m in names}, "run": str(run), "created": e.created})
    ids = ["task", by, *ID_COLUMNS[1:]] if by else list(ID_COLUMNS)
    df = pd.DataFrame(rows, columns=[*ids, *names, "run", "created"])
    df.attrs["over_passages"] = sorted(passage_runs)
    df.attrs["by"] = by
    order = ["task", by] if by else ["task"]
    key = sort or (names[0] if names else None)
    if key is None:
        return df.sort_values([*order, "pipeline"], ignore_index=True)
    ascending = higher_is_better(key) is False
    return df.sort_values([*order, key, "pipeline"], ascending=[True] * len(order) + [ascending, True],
                          na_position="last", ignore_index=True)


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in (*ID_COLUMNS, df.attrs.get("by"), "run", "created")]


def best_mask(df: pd.DataFrame) -> pd.DataFrame:
    """True where a value is the best of its column among the rows of the same task scored on the same
    number of queries (a --limit run is not ranked against full runs). Ties are all marked; a column
    with no two distinct values in the group has no best."""
    mask = pd.DataFrame(False, index=df.index, columns=df.columns)
    # M over passages and M over whole documents are different quantities: ranked apart (M[doc] compares all)
    level = df["run"].isin(df.attrs.get("over_passages", [])).rename("over_passages")
    for m in metric_columns(df):
        direction = higher_is_better(m)
        if direction is None:
            continue
        by = [df.attrs["by"]] if df.attrs.get("by") else []
        groups = df.groupby(["task", *by, "queries", *([level] if f"{m}{DOC_SUFFIX}" in df.columns else [])])
        best = groups[m].transform("max" if direction else "min")
        distinct = groups[m].transform("nunique")
        mask[m] = df[m].notna() & (df[m] == best) & (distinct > 1)
    return mask


def _cell(value: Any, bold: bool, wrap: tuple[str, str]) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        text = f"{value:.4f}"
        return f"{wrap[0]}{text}{wrap[1]}" if bold else text
    return str(value)


def notes(df: pd.DataFrame) -> list[str]:
    """Caveats a reader of the table needs: rows of one task scored on different numbers of queries
    (each count is ranked on its own)."""
    out = []
    if df.attrs.get("over_passages"):
        out.append(f"M{DOC_SUFFIX}: a ranking over passages scored per document (each at its best passage); for a "
                   f"run over whole documents M{DOC_SUFFIX} is its M. M of a run over passages is ranked apart.")
    by = df.attrs.get("by")
    if by:
        out.append(f"One row per run and value of '{by}', over that value's queries; best values are marked among "
                   "the rows of one value.")
    for key, group in df.groupby(["task", by] if by else "task", sort=True):
        counts = sorted(set(group["queries"]))
        if len(counts) > 1:
            task = " / ".join(map(str, key)) if isinstance(key, tuple) else key
            out.append(f"{task}: rows cover different numbers of queries ({', '.join(map(str, counts))}); "
                       "best values are marked within each count; "
                       "compare across them on shared queries with `ragbench compare`.")
    return out


def to_markdown(df: pd.DataFrame) -> str:
    mask = best_mask(df)
    shown = df.drop(columns=["created"])
    cells = [[_cell(v, bool(mask.at[i, c]), ("**", "**")) for c, v in row.items()] for i, row in shown.iterrows()]
    header = list(shown.columns)
    align = ["---" if c in ("task", "pipeline", "run", df.attrs.get("by")) else "---:" for c in header]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    caveats = notes(df)
    lines += ["", *(f"Note: {n}" for n in caveats)] if caveats else []
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6g")


def to_json(df: pd.DataFrame) -> str:
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in df.to_dict(orient="records")]
    return json.dumps(rows, indent=2) + "\n"


def to_latex(df: pd.DataFrame, caption: str = "ragbench leaderboard. Best per task and query count in bold.") -> str:
    """A booktabs table ready to paste (needs \\usepackage{booktabs}); best per task in bold.
    pandas' Styler writes it and escapes the names (pipelines and metrics hold _ and &)."""
    mask = best_mask(df)
    shown = df.drop(columns=["run", "created"])
    styler = shown.style.hide(axis="index").format(precision=4, na_rep="--")
    styler = styler.format(escape="latex", subset=["task", "pipeline"]).format_index(escape="latex", axis=1)
    styler = styler.apply(lambda col: ["textbf:--rwrap;" if b else "" for b in mask[col.name]],
                          subset=metric_columns(shown))
    body = styler.to_latex(hrules=True, column_format="ll" + "r" * (len(shown.columns) - 2), environment="table",
                           position="t", position_float="centering", caption=caption, convert_css=False)
    return "% ragbench leaderboard; needs \\usepackage{booktabs}\n" + body


def png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def recall_figures(entries: list[RunEntry]) -> dict[str, Any]:
    """Per task, R@k against k (log scale), one line per pipeline: where the pipelines' recall separates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    out = {}
    for task in sorted({e.task for e in entries}):
        curves = [(e.pipeline, e.recall_curve()) for e in entries if e.task == task]
        curves = [(p, c) for p, c in curves if len(c) >= 2]
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        for pipeline, curve in sorted(curves):
            ks = sorted(curve)
            ax.plot(ks, [curve[k] for k in ks], marker="o", markersize=3, linewidth=1.8, label=pipeline)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set(xlabel="k (documents retrieved)", ylabel="R@k", title=f"{task}: recall at k", ylim=(0, 1.02))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        out[task] = fig
    return out


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem; color: #1a1a1a; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table#leaderboard { border-collapse: collapse; font-size: 0.9rem; }
#leaderboard th, #leaderboard td { border-bottom: 1px solid #ccc; padding: 0.3rem 0.7rem; white-space: nowrap; }
#leaderboard thead th { background: #1f3b57; color: #fff; text-align: left; position: sticky; top: 0; }
#leaderboard td.num { text-align: right; font-variant-numeric: tabular-nums; }
#leaderboard td.best { font-weight: 700; background: #e5f2e5; }
#leaderboard tr.first td { border-top: 2px solid #1f3b57; }
.plots { display: flex; flex-wrap: wrap; gap: 1.5rem; }
figure.plot { margin: 0; } figure.plot img { display: block; max-width: 100%; }
figcaption, .meta { font-size: 0.8rem; color: #555; }
"""


def to_html(df: pd.DataFrame, entries: list[RunEntry], title: str = "ragbench leaderboard") -> str:
    """A standalone page: the table (best per task highlighted) and the plots as embedded PNGs."""
    from ragbench.report.experiment_plots import figures

    mask = best_mask(df)
    shown = df.drop(columns=["created"])
    numeric = {*metric_columns(df), "queries"}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
    rows, previous = [], None
    for i, row in shown.iterrows():
        cells = []
        for c, v in row.items():
            cls = ["num"] if c in numeric else []
            if mask.at[i, c]:
                cls.append("best")
            cells.append(f"<td class=\"{' '.join(cls)}\">{html.escape(_cell(v, False, ('', '')))}</td>")
        first = ' class="first"' if previous is not None and row["task"] != previous else ""
        previous = row["task"]
        rows.append(f"<tr{first}>{''.join(cells)}</tr>")
    plots = [(f"{task}: R@k per pipeline", f"recall-{task}", png(fig))
             for task, fig in recall_figures(entries).items()]
    for e in sorted(entries, key=lambda e: (e.task, e.pipeline)):
        for sid, summary in e.experiments.items():
            for name, fig in figures(summary, title=e.pipeline).items():
                caption = f"{e.task} / {e.pipeline} / {sid}: {name.replace('_', ' ')}"
                plots.append((caption, f"{name}-{e.task}-{e.pipeline}", png(fig)))
    figs = "".join(f'<figure class="plot" id="{html.escape(fid)}"><img alt="{html.escape(cap)}" src="{src}">'
                   f"<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, fid, src in plots)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"<p class=\"meta\">{len(df)} runs; best value per task and query count highlighted; "
            f"generated {generated} by ragbench {__version__}</p>\n"
            f"<div class=\"table-wrap\"><table id=\"leaderboard\"><thead><tr>{head}</tr></thead><tbody>\n"
            + "\n".join(rows) + "\n</tbody></table></div>\n"
            + "".join(f"<p class=\"meta\">Note: {html.escape(n)}</p>\n" for n in notes(df))
            + f"<h2>Plots</h2>\n<div class=\"plots\">{figs}</div>\n</body></html>\n")


def render(df: pd.DataFrame, entries: list[RunEntry], fmt: Format) -> str:
    if fmt == "md":
        return to_markdown(df)
    if fmt == "csv":
        return to_csv(df)
    if fmt == "json":
        return to_json(df)
    if fmt == "latex":
        return to_latex(df)
    return to_html(df, entries)
