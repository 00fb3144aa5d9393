"""Scores the hard-negative experiment: accuracy per condition, HND, drops, k*.

See docs/methods.md, "Hard negatives and the inverted U".

- Acc_R(m): the share of queries with a gold passage answered right when reading the gold
  passage and m negatives from source R (m = 0: the gold passage alone, shared by all sources).
- HND_R = mean over m in M+ (m > 0) of Acc_random(m) - Acc_R(m): how much more R's negatives
  hurt than random ones of the same number, i.e. hardness beyond the effect of length alone.
- relative drop_R = (Acc(0) - Acc_R(m_max)) / Acc(0).
- Inverted U, per ordering: Acc(k) for the top-k of plain retrieval, k* = argmax_k Acc(k)
  (the smallest k on ties) and peak drop = Acc(k*) - Acc(k_max).

Each accuracy comes with its standard error (`standard_error`: binomial sqrt(p(1-p)/n) when every
value is 0 or 1, as popqa_acc and EM give; the sample SD over sqrt(n) otherwise, as F1 and
token_recall give) because the curves are read by eye and the differences between sources can
be smaller than the noise.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from ragbench.metrics.answers import gold_answers, parse_answer_metric
from ragbench.types import Probe, TaskData

RANDOM = "random"


def standard_error(values: list[float]) -> float:
    """Standard error of the mean of per-query values (docs/methods.md, standard errors of accuracies).

    Binary values (every one 0 or 1): the binomial sqrt(p(1-p)/n). Otherwise the sample standard
    deviation (ddof = 1) over sqrt(n), which is the binomial formula's generalisation; the binomial
    formula applied to graded scores such as F1 would overstate the spread. nan for n = 0, and for
    n = 1 with non-binary values (no spread to estimate).
    """
    n = len(values)
    if n == 0:
        return float("nan")
    if all(v in (0.0, 1.0) for v in values):
        p = sum(values) / n
        return math.sqrt(p * (1 - p) / n)
    return statistics.stdev(values) / math.sqrt(n) if n > 1 else float("nan")


def _cell(values: list[float], used: list[int]) -> dict[str, Any]:
    n = len(values)
    acc = sum(values) / n if n else float("nan")
    return {"acc": acc, "se": standard_error(values), "n": n,
            "used_mean": sum(used) / n if n else float("nan"), "capped": None}


def summarize(probes: dict[str, Probe], task: TaskData, metric: str, grid_m: tuple[int, ...]) -> dict[str, Any]:
    """Accuracy tables, HND and drops from the trials (answers scored here, against the task's gold answers)."""
    scorer = parse_answer_metric(metric)
    neg: dict[tuple[str, int], tuple[list[float], list[int]]] = defaultdict(lambda: ([], []))
    curve: dict[tuple[bool, int], tuple[list[float], list[int]]] = defaultdict(lambda: ([], []))
    queries = {q.id: q for q in task.queries}
    per_query: dict[str, dict[str, float]] = {}
    curve_source = None
    for qid, probe in probes.items():
        golds = gold_answers(queries[qid], task.answers_field)
        for t in probe.trials:
            value = float(scorer.score(golds, prediction=t["answer"]))  # type: ignore[arg-type]
            if t["probe"] == "negatives":
                cell = neg[(t["source"], t["m"])]
                cell[0].append(value)
                cell[1].append(t["m_used"])
                per_query.setdefault(qid, {})[f"acc[{t['source']},m={t['m']}]"] = value
            else:
                curve_source = t["source"]
                cell = curve[(t["reorder"], t["k"])]
                cell[0].append(value)
                cell[1].append(t["k_used"])
                per_query.setdefault(qid, {})[f"acc[top{t['k']}{',reordered' if t['reorder'] else ''}]"] = value
    out: dict[str, Any] = {"metric": metric, "queries": len(probes),
                           "with_gold": sum(p.gold is not None for p in probes.values())}
    if neg:
        base = _cell(*neg[("none", 0)]) if ("none", 0) in neg else None
        sources = sorted({s for s, _ in neg if s != "none"}, key=lambda s: (s == RANDOM, s))
        table: dict[str, dict[str, Any]] = {}
        for s in sources:
            row = {str(m): _cell(*neg[(s, m)]) for m in grid_m if (s, m) in neg}
            for m, c in row.items():
                c["capped"] = sum(u < int(m) for u in neg[(s, int(m))][1])
            table[s] = {"0": base, **row} if base else row
        out["negatives"] = table
        plus = [m for m in grid_m if m > 0]
        hnd, drop = {}, {}
        for s in sources:
            if base and plus and (s, max(plus)) in neg and base["acc"] > 0:
                drop[s] = (base["acc"] - table[s][str(max(plus))]["acc"]) / base["acc"]
            if s != RANDOM and RANDOM in table and plus:
                diffs = [table[RANDOM][str(m)]["acc"] - table[s][str(m)]["acc"] for m in plus
                         if str(m) in table[s] and str(m) in table[RANDOM]]
                if diffs:
                    hnd[s] = sum(diffs) / len(diffs)
        out["HND"], out["relative_drop"] = hnd, drop
    if curve:
        ks = sorted({k for _, k in curve})
        out["curve"] = {"source": curve_source, "orders": {}}
        for reorder in sorted({r for r, _ in curve}):
            cells = {str(k): _cell(*curve[(reorder, k)]) for k in ks if (reorder, k) in curve}
            accs = [(cells[str(k)]["acc"], k) for k in ks if str(k) in cells]
            k_star = min(accs, key=lambda a: (-a[0], a[1]))[1]
            out["curve"]["orders"]["reordered" if reorder else "score"] = {
                "acc": cells, "k_star": k_star, "peak_drop": cells[str(k_star)]["acc"] - cells[str(ks[-1])]["acc"]}
    out["per_query"] = per_query
    return out


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """The experiment's numbers as flat metrics (metrics.json `metrics`, what compare/check read)."""
    out: dict[str, float] = {}
    for s, v in summary.get("HND", {}).items():
        out[f"HND[{s}]"] = v
    for s, v in summary.get("relative_drop", {}).items():
        out[f"rel_drop[{s}]"] = v
    for name, order in summary.get("curve", {}).get("orders", {}).items():
        out[f"k_star[{name}]"] = float(order["k_star"])
        out[f"peak_drop[{name}]"] = order["peak_drop"]
    return out
