"""The table of an experiment: per task, each variant against the baseline, metric by metric, with paired tests
(report/compare.py) and p values adjusted for the number of variants compared (docs/methods.md, "Paired tests
between runs").

The correction is applied per task and metric over the variants compared with the baseline (the family of
hypotheses "variant v differs from the baseline on metric m", v = 1..V), as PyTerrier's `pt.Experiment` does
per measure: Holm's step-down procedure (Holm 1979) by default, Bonferroni, or none. A metric constant over
a pair has no test: its p is None and it does not count in the family.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from ragbench.metrics.spec import direction
from ragbench.record import RunRecord
from ragbench.report.compare import column, compare, shared_names

Correction = Literal["holm", "bonferroni", "none"]
ALPHA = 0.05


def adjust(ps: list[float | None], method: Correction) -> list[float | None]:
    """Adjusted p values, in the given order; None (no test) stays None and is not counted."""
    tested = [(p, i) for i, p in enumerate(ps) if p is not None]
    out: list[float | None] = list(ps)
    m = len(tested)
    if method == "none" or not m:
        return out
    if method == "bonferroni":
        return [None if p is None else min(1.0, p * m) for p in ps]
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):  # Holm: step down, monotone
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


@dataclass
class Cell:
    value: float | None
    delta: float | None = None
    p: float | None = None
    p_adj: float | None = None
    wins: int | None = None
    ties: int | None = None
    losses: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "delta": self.delta, "p": self.p, "p_adj": self.p_adj,
                "wins": self.wins, "ties": self.ties, "losses": self.losses}


@dataclass
class Row:
    pipeline: str
    variant: dict[str, Any]
    name: str
    task: str
    run: str
    baseline: bool
    metrics: dict[str, Cell] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "variant": self.variant, "task": self.task, "run": self.run,
                "baseline": self.baseline, "metrics": {m: c.to_json() for m, c in self.metrics.items()}}


def build(runs: dict[str, list[tuple[Any, str]]], baseline: str, metrics: list[str], test: str,
          correction: Correction, resamples: int = 10_000, seed: int = 0) -> list[Row]:
    """Rows per task: `runs` maps a task to its (variant, run folder) pairs; `baseline` names the baseline variant."""
    rows: list[Row] = []
    for task, pairs in runs.items():
        base = next(((v, f) for v, f in pairs if v.name == baseline), None)
        if base is None:
            continue  # the baseline failed on this task: nothing to compare with (reported by the runner)
        others = [(v, f) for v, f in pairs if v.name != baseline]
        records = [RunRecord.read(base[1]), *(RunRecord.read(f) for _, f in others)]
        names = metrics or shared_names(records)
        deltas = compare([base[1], *(f for _, f in others)], names, resamples, seed) if others else []
        by_run: dict[int, dict[str, Cell]] = {i: {} for i in range(len(others))}
        for m in names:
            ds = [d for d in deltas if d.metric == m]
            ps = [d.rand_p if test == "randomization" else d.t_p for d in ds]
            for i, (d, p, p_adj) in enumerate(zip(ds, ps, adjust(ps, correction), strict=True)):
                rec = records[i + 1]  # the run's own figure; the delta is over the queries both runs scored
                by_run[i][m] = Cell(rec.metrics.get(column(rec, m)), d.delta, p, p_adj, d.wins, d.ties, d.losses)
        base_rec = records[0]
        rows.append(Row(base[0].pipeline, base[0].point, base[0].name, task, str(base[1]), True,
                        {m: Cell(base_rec.metrics.get(column(base_rec, m))) for m in names}))
        rows += [Row(v.pipeline, v.point, v.name, task, str(f), False, by_run[i]) for i, (v, f) in enumerate(others)]
    return rows


def best(rows: list[Row]) -> set[tuple[int, str]]:
    """(row index, metric) of the best value per task and metric (ties all marked; no direction: none)."""
    marked: set[tuple[int, str]] = set()
    for task in dict.fromkeys(r.task for r in rows):
        idx = [i for i, r in enumerate(rows) if r.task == task]
        for m in rows[idx[0]].metrics:
            higher = direction(m)
            values = [(rows[i].metrics[m].value, i) for i in idx if m in rows[i].metrics]
            values = [(v, i) for v, i in values if v is not None and not math.isnan(v)]
            if higher is None or len({v for v, _ in values}) < 2:
                continue
            top = (max if higher else min)(v for v, _ in values)
            marked.update((i, m) for v, i in values if v == top)
    return marked


def significant(cell: Cell) -> bool:
    return cell.p_adj is not None and cell.p_adj < ALPHA


def frame(rows: list[Row]) -> pd.DataFrame:
    """One line per row: value, delta, p, adjusted p and win/tie/loss of each metric (csv, LaTeX, HTML)."""
    lines = []
    for r in rows:
        line: dict[str, Any] = {"task": r.task, "variant": r.name}
        for m, c in r.metrics.items():
            line[m] = c.value
            line[f"{m} delta"] = c.delta
            line[f"{m} p"] = c.p
            line[f"{m} p_adj"] = c.p_adj
            line[f"{m} W/T/L"] = None if c.wins is None else f"{c.wins}/{c.ties}/{c.losses}"
        line["run"] = r.run
        lines.append(line)
    return pd.DataFrame(lines)


def _num(v: float | None, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _p(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def to_markdown(rows: list[Row], correction: str, test: str) -> str:
    marks = best(rows)
    out = []
    for task in dict.fromkeys(r.task for r in rows):
        idx = [i for i, r in enumerate(rows) if r.task == task]
        names = list(rows[idx[0]].metrics)
        out += [f"### {task}", "", "| variant | " + " | ".join(names) + " |",
                "| --- | " + " | ".join("---:" for _ in names) + " |"]
        for i in idx:
            r = rows[i]
            cells = []
            for m in names:
                c = r.metrics.get(m, Cell(None))
                text = _num(c.value)
                text = f"**{text}**" if (i, m) in marks else text
                if not r.baseline:
                    star = "\\*" if significant(c) else ""
                    text += (f" ({_num(c.delta, 4) if c.delta is not None else '-'}{star}, p {_p(c.p)}, "
                             f"adj {_p(c.p_adj)}, {c.wins}/{c.ties}/{c.losses})")
                cells.append(text)
            label = r.name + (" (baseline)" if r.baseline else "")
            out.append(f"| {label.replace('|', '/')} | " + " | ".join(cells) + " |")
        out.append("")
    out.append(f"Each variant against the baseline: delta, paired {test} test p, p adjusted ({correction}) over the "
               f"variants per task and metric, win/tie/loss over queries; \\* adjusted p < {ALPHA}; best in bold.")
    return "\n".join(out) + "\n"


def to_json(rows: list[Row]) -> str:
    return json.dumps({"rows": [r.to_json() for r in rows]}, indent=2) + "\n"


def render(rows: list[Row], fmt: str, correction: str, test: str) -> str:
    """md, csv, json, latex or html (table: the terminal's, printed by the CLI)."""
    if fmt == "json":
        return to_json(rows)
    if fmt == "md":
        return to_markdown(rows, correction, test)
    df = frame(rows)
    if fmt == "csv":
        return df.to_csv(index=False, float_format="%.6g")
    styler = df.drop(columns=["run"]).style.hide(axis="index").format(precision=4, na_rep="-")
    if fmt == "latex":
        styler = styler.format(escape="latex", subset=["task", "variant"]).format_index(escape="latex", axis=1)
        return styler.to_latex(hrules=True, caption=f"ragbench experiment: paired {test} tests, p adjusted "
                                                      f"({correction})")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>ragbench experiment</title></head><body>"
            + styler.to_html() + "</body></html>\n")
