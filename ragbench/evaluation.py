"""Scores a finished pipeline: IR metrics on its last ranking, answer metrics on its answers.

IR metrics (ir_measures) see the last stage that ranks documents and the task's qrels.
Answer metrics see the reader's answers and each query's gold answers (the card's
`answers_field`); `answer_recall@k` reads the texts of the top-k documents the reader was
given. Breakdowns group the per-query values by the card's `group_by` fields: a numeric
popularity field (PopQA's s_pop) by equal-frequency deciles, a list field (FRAMES' reasoning
types) by each of its values.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ragbench.errors import RagbenchError
from ragbench.metrics.answers import mean_by_group, parse_answer_metric, popularity_deciles
from ragbench.metrics.ir import evaluate as evaluate_ir
from ragbench.pipeline import PipelineResult
from ragbench.types import Query, TaskData


def split_metrics(names: list[str]) -> tuple[list[str], list[str]]:
    """(IR measure names, answer metric names), in the order given."""
    ir, answers = [], []
    for name in names:
        try:
            parse_answer_metric(name)
            answers.append(name)
        except ValueError:
            ir.append(name)
    return ir, answers


def without_retrieval_metrics(names: list[str]) -> list[str]:
    """The metrics a pipeline that retrieves nothing (closed book) can still compute."""
    answers = set(split_metrics(names)[1])
    return [n for n in names if n not in answers or parse_answer_metric(n).needs != "retrieved"]


def gold_answers(query: Query, field: str) -> list[str]:
    value = query.extra.get(field)
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else [value]
    if not value:
        raise RagbenchError.at(f"query {query.id}", f"no gold answers in field '{field}' (set the task card's answers_field)")
    return [str(v) for v in value]


def evaluate_result(result: PipelineResult, task: TaskData, metrics: list[str], answers_field: str = "answers",
                    group_by: list[str] | None = None) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, Any]]:
    """(aggregate, per-query, breakdowns) for the given metric names."""
    ir_names, answer_names = split_metrics(metrics)
    per_query: dict[str, dict[str, float]] = {}
    aggregate: dict[str, float] = {}
    ranking = result.final_ranking
    if ir_names and ranking is not None:
        agg, pq = evaluate_ir(ranking.rankings, task.qrels, ir_names)
        aggregate.update(agg)
        for qid, values in pq.items():
            per_query.setdefault(qid, {}).update(values)
    reader = result.reader
    if answer_names and reader is not None:
        parsed = [parse_answer_metric(n) for n in answer_names]
        values: dict[str, dict[str, float]] = {}
        for q in task.queries:
            answer = reader.answers.get(q.id)
            if answer is None:
                continue
            golds = gold_answers(q, answers_field)
            row = {}
            for m in parsed:
                if m.needs == "retrieved":
                    docids = ranking.ranking(q.id).docids if ranking is not None else []
                    texts = [task.corpus[d].contents(("title", "text")) for d in docids if task.corpus is not None and d in task.corpus]
                    row[m.name] = float(m.score(golds, texts=texts))
                elif m.needs == "prediction":
                    row[m.name] = float(m.score(golds, prediction=answer.text))  # type: ignore[arg-type]
            values[q.id] = row
            per_query.setdefault(q.id, {}).update(row)
        for m in parsed:
            scored = [v[m.name] for v in values.values() if m.name in v]
            if scored:
                aggregate[m.name] = sum(scored) / len(scored)
    return aggregate, per_query, breakdowns(task, per_query, group_by or [])


def breakdowns(task: TaskData, per_query: dict[str, dict[str, float]], fields: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    queries = [q for q in task.queries if q.id in per_query]
    for field in fields:
        present = [q for q in queries if q.extra.get(field) is not None]
        if not present:
            continue
        sample = present[0].extra[field]
        if isinstance(sample, int | float) and not isinstance(sample, bool):
            deciles = popularity_deciles([float(q.extra[field]) for q in present])
            groups: dict[str, Any] = {q.id: f"decile {d}" for q, d in zip(present, deciles, strict=True)}
            name = f"{field} deciles"
        else:
            groups = {q.id: _labels(q.extra[field]) for q in present}
            name = field
        table = mean_by_group({q.id: per_query[q.id] for q in present}, groups)
        out[name] = {str(g): {m: {"mean": (None if math.isnan(v[0]) else v[0]), "n": v[1]} for m, v in ms.items()} for g, ms in table.items()}
    return out


def _labels(value: Any) -> list[str] | str:
    """A list field's values; FRAMES' Hub copy stores its reasoning types as one 'A | B' string."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(" | ")] if " | " in str(value) else str(value)
