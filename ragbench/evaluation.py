"""Scores a finished pipeline: IR metrics on its last ranking, answer metrics on its answers.

IR metrics (ir_measures) see the last stage that ranks documents and the task's qrels.
Answer metrics see the reader's answers and each query's gold answers (the card's
`answers_field`); `has_answer` reads the long answer where the reader wrote one (LongRAG's
substring match); `answer_recall@k` reads the texts of the top-k documents of the last ranking,
the text field only, as DPR and LongRAG do (`answer_recall_with_title@k`: title and text).
Breakdowns group the per-query values by the card's `group_by` fields: a numeric popularity field (PopQA's s_pop) by equal-frequency deciles, a list field (FRAMES' reasoning
types) by each of its values.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any

from ragbench.metrics.answers import (
    gold_answers,
    mean_by_group,
    parse_answer_metric,
    popularity_deciles,
    recall_text,
)
from ragbench.metrics.ir import evaluate as evaluate_ir
from ragbench.pipeline import PipelineResult, StageResult
from ragbench.types import TaskData


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


def computable_metrics(names: list[str], has_ranking: bool, has_reader: bool) -> list[str]:
    """Drop the answer metrics a pipeline has nothing for: answer recall without a ranking (closed
    book), answer scores without a reader (a retrieval-only run)."""
    answers = set(split_metrics(names)[1])
    keep = []
    for n in names:
        retrieved = n in answers and parse_answer_metric(n).needs == "retrieved"
        if n in answers and not (has_ranking if retrieved else has_reader):
            continue
        keep.append(n)
    return keep


def evaluate_result(result: PipelineResult, task: TaskData, metrics: list[str], group_by: list[str] | None = None) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, Any]]:
    """(aggregate, per-query, breakdowns) for the given metric names: retrieval ones on the last ranking."""
    ir_names, answer_names = split_metrics(metrics)
    parsed = [parse_answer_metric(n) for n in answer_names]
    retrieval = [m.name for m in parsed if m.needs == "retrieved"]
    aggregate, per_query = {}, {}
    ranking = result.final_ranking
    if ranking is not None:
        aggregate, per_query = evaluate_ranking(ranking, task, ir_names + retrieval)
    reader = result.reader
    predicted = [m for m in parsed if m.needs == "prediction"]
    if predicted and reader is not None:
        values: dict[str, dict[str, float]] = {}
        for q in task.queries:
            answer = reader.answers.get(q.id)
            if answer is None:
                continue
            golds = gold_answers(q, task.answers_field)
            long = answer.long_answer or answer.text
            values[q.id] = {m.name: float(m.score(golds, prediction=long if m.kind == "has_answer" else answer.text))  # type: ignore[arg-type]
                            for m in predicted}
            per_query.setdefault(q.id, {}).update(values[q.id])
        for m in predicted:
            if values:
                aggregate[m.name] = sum(v[m.name] for v in values.values()) / len(values)
    judged = {m.kind: m.name for m in parsed if m.needs == "judge"}
    for judge in result.judges:  # the last judge giving a metric wins
        name = judged.get(judge.spec.cls.metric(judge.spec.options))  # type: ignore[attr-defined]
        if name is None:
            continue
        scores = {qid: j.value for qid, j in judge.judgements.items() if j.value is not None}
        for qid, v in scores.items():
            per_query.setdefault(qid, {})[name] = v
        if scores:
            aggregate[name] = sum(scores.values()) / len(scores)
    aggregate = {n: aggregate[n] for n in metrics if n in aggregate}  # the order asked for
    return aggregate, per_query, breakdowns(task, per_query, group_by or [])


def experiment_summaries(result: PipelineResult, task: TaskData) -> dict[str, dict[str, Any]]:
    """Per experiment stage (hard negatives): accuracy tables, HND, drops and curve peaks."""
    from ragbench.metrics.degradation import summarize

    return {s.spec.id: summarize(s.probes, task, s.spec.options.metric, s.spec.options.m) for s in result.experiments}


def judge_summaries(result: PipelineResult) -> dict[str, dict[str, Any]]:
    """Per judge: answers seen, how many got a score, how many replies were unparseable (and why),
    for statement judges how many answers were empty (`empty`: scored 0 by correctness, left
    unscored by faithfulness, never counted as unparsed), and, with several samples, the spread:
    the standard deviation of each sample's run mean and the mean over answers of the per-answer
    standard deviation."""
    out = {}
    for judge in result.judges:
        values = [j.value for j in judge.judgements.values()]
        samples = [j.samples for j in judge.judgements.values()]
        n_samples = max((len(s) for s in samples), default=0)
        empty = {qid for qid, j in judge.judgements.items() if any(d.get("empty") or d.get("failure") == "empty answer" for d in j.details)}
        unparsed = sum(j.value is None and qid not in empty for qid, j in judge.judgements.items())
        summary: dict[str, Any] = {"metric": judge.spec.cls.metric(judge.spec.options), "model": judge.identity.get("llm", {}).get("model"),  # type: ignore[attr-defined]
                                   "n": len(values), "judged": sum(v is not None for v in values), "unparsed": unparsed}
        if judge.spec.options.method != "rating":  # type: ignore[attr-defined]  # a rating judge reads empty answers like any other
            summary["empty"] = len(empty)
        failures = Counter(d.get("failure") for j in judge.judgements.values() for d in j.details if d.get("failure"))
        if n_samples > 1 or failures:
            flat = [v for s in samples for v in s]
            none = sum(v is None for v in flat) - failures.get("empty answer", 0)  # an empty answer is not a parse failure
            summary.update(samples=n_samples, sample_values=len(flat), sample_unparsed=none,
                           unparsed_share=none / len(flat) if flat else None, failures=dict(failures))
        if n_samples > 1:
            means = []
            for i in range(n_samples):
                col = [s[i] for s in samples if len(s) > i and s[i] is not None]
                means.append(statistics.fmean(col) if col else None)
            per_answer = [statistics.pstdev(p) for p in ([v for v in s if v is not None] for s in samples) if len(p) > 1]
            present = [m for m in means if m is not None]
            summary.update(sample_means=means, sd_of_sample_means=statistics.stdev(present) if len(present) > 1 else None,
                           mean_per_answer_sd=statistics.fmean(per_answer) if per_answer else None)
        out[judge.spec.id] = summary
    return out


def evaluate_ranking(stage: StageResult, task: TaskData, metrics: list[str]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """IR measures and answer recall of one ranking stage, against the corpus and qrels it ranked
    (a long-units stage: units and qrels mapped onto them)."""
    view = stage.view or task
    ir_names, answer_names = split_metrics(metrics)
    aggregate: dict[str, float] = {}
    per_query: dict[str, dict[str, float]] = {}
    if ir_names:
        agg, pq = evaluate_ir(stage.rankings, view.qrels, ir_names)
        aggregate.update(agg)
        for qid, values in pq.items():
            per_query.setdefault(qid, {}).update(values)
    recall = [m for m in map(parse_answer_metric, answer_names) if m.needs == "retrieved"]
    if recall:
        scored: dict[str, list[float]] = {m.name: [] for m in recall}
        for q in task.queries:
            golds = gold_answers(q, task.answers_field)
            docids = stage.ranking(q.id).docids
            docs = [view.corpus[d] for d in docids if view.corpus is not None and d in view.corpus]
            for m in recall:
                value = float(m.score(golds, texts=[recall_text(doc.title, doc.text, m.with_title) for doc in docs]))
                scored[m.name].append(value)
                per_query.setdefault(q.id, {})[m.name] = value
        aggregate.update({name: sum(v) / len(v) for name, v in scored.items() if v})
    return aggregate, per_query


CURVE_KS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500, 1000)


def recall_curve(stage: StageResult, task: TaskData) -> dict[str, float]:
    """R@k of a ranking at the usual cutoffs up to its depth: the leaderboard's recall curves.

    Stored in metrics.json `curves`, apart from `metrics`, so compare and check gate only what was asked for."""
    view = stage.view or task
    if not view.qrels:
        return {}
    depth = max((len(stage.ranking(q.id).docids) for q in task.queries), default=0)
    ks = [k for k in CURVE_KS if k <= depth]
    if not ks:
        return {}
    aggregate, _ = evaluate_ir(stage.rankings, view.qrels, [f"R@{k}" for k in ks])
    return {str(k): aggregate[f"R@{k}"] for k in ks if f"R@{k}" in aggregate}


def stage_metrics(result: PipelineResult, task: TaskData, metrics: list[str]) -> dict[str, dict[str, Any]]:
    """Retrieval metrics of every ranking stage (first stage, reranker, units...), to compare them within one run."""
    ir_names, answer_names = split_metrics(metrics)
    retrieval = ir_names + [n for n in answer_names if parse_answer_metric(n).needs == "retrieved"]
    out: dict[str, dict[str, Any]] = {}
    for stage in result.rankings:
        aggregate, _ = evaluate_ranking(stage, task, retrieval)
        corpus = stage.spec.corpus
        qrels = stage.spec.options.qrels if stage.spec.cls.produces == "relevance" else "task"  # type: ignore[attr-defined]
        out[stage.spec.id] = {"type": stage.spec.type, "corpus": corpus or "task", "qrels": qrels,
                              "metrics": {n: aggregate[n] for n in retrieval if n in aggregate}}
    return out


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
