"""IR metrics through ir_measures: any measure string it accepts.

ir_measures picks a provider per measure: pytrec_eval for everything trec_eval computes,
the msmarco provider for what it lacks (RR@k).

Aggregates are means over every evaluated query (queries with qrels); a query the run
returned nothing for scores 0 rather than silently dropping out of the mean (trec_eval -c).
"""

from __future__ import annotations

from collections.abc import Iterable

import ir_measures
from ir_measures import Measure

from ragbench.types import Qrels, Ranking


def parse_measure(name: str) -> Measure:
    try:
        measure = ir_measures.parse_measure(name)
    except (NameError, ValueError, SyntaxError, TypeError, AttributeError) as e:
        raise ValueError(f"unknown metric '{name}' (ir_measures syntax, e.g. nDCG@10, R@100, RR@10, AP): {e}") from None
    if not any(_supports(p, measure) for p in ir_measures.providers.registry.values()):
        raise ValueError(f"metric '{name}' is not computed by any installed ir_measures provider")
    return measure


def _supports(provider, measure: Measure) -> bool:
    try:
        return bool(provider.supports(measure))
    except Exception:  # a provider whose optional dependency is missing
        return False


def cutoff(measure: Measure) -> int | None:
    return measure.params.get("cutoff") if hasattr(measure, "params") else None


def to_run(rankings: dict[str, Ranking]) -> dict[str, dict[str, float]]:
    return {qid: dict(zip(r.docids, r.scores, strict=True)) for qid, r in rankings.items()}


def evaluate(rankings: dict[str, Ranking], qrels: Qrels,
             names: Iterable[str]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(aggregate, per-query) values keyed by the measure names as given: ir_measures computes its
    own, metrics.recall_free the recall-free ones (T@k, E@k, nDCG_rf@k, ...)."""
    from ragbench.metrics import recall_free

    names = list(names)
    free = {n: m for n in names if (m := recall_free.parse(n)) is not None}
    standard = [n for n in names if n not in free]
    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(standard, 0.0) for qid in qrels}
    if standard:
        measures = {str(parse_measure(n)): n for n in standard}
        run = {qid: docs for qid, docs in to_run(rankings).items() if docs}
        for m in ir_measures.iter_calc([parse_measure(n) for n in standard], qrels, run):
            if m.query_id in per_query:
                per_query[m.query_id][measures[str(m.measure)]] = float(m.value)
    if free:
        _, by_query = recall_free.evaluate({q: r.docids for q, r in rankings.items()}, qrels, free.values())
        for qid, values in by_query.items():
            per_query[qid].update(values)
    n = len(per_query)
    aggregate = {name: (sum(q[name] for q in per_query.values()) / n if n else 0.0) for name in names}
    return aggregate, per_query
