"""Scores a finished pipeline: IR metrics on its last ranking, answer metrics on its answers.

IR metrics (ir_measures) see the last stage that ranks documents and the task's qrels.
Answer metrics see the reader's answers and each query's gold answers (the card's
`answers_field`); `has_answer` reads the long answer where the reader wrote one (LongRAG's
substring match); `answer_recall@k` reads the texts of the top-k documents of the last ranking,
the text field only, as DPR and LongRAG do (`answer_recall_with_title@k`: title and text).
A ranking over passages (a `passages` corpus stage) is also scored over the task's documents: MaxP, each
document at its best passage, against the task's own qrels; those figures are named `M[doc]` after the
measure M asked for (metrics/spec.py), next to M over passages against the qrels mapped onto them.
Breakdowns group the per-query values by the card's `group_by` fields: a numeric popularity field
(PopQA's s_pop) by equal-frequency deciles, a list field (FRAMES' reasoning types) by each of its values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ragbench.metrics.answers import gold_answers, mean_by_group, popularity_deciles, recall_text
from ragbench.metrics.ir import evaluate as evaluate_ir
from ragbench.metrics.spec import MetricSpec, parse_metric
from ragbench.outputs import Answers, DerivedCorpus, Judgements, Rankings
from ragbench.outputs.corpus import DocumentLevel
from ragbench.pipeline import PipelineResult, StageResult
from ragbench.types import TaskData

#: metrics.json's summary sections, in the order they are written
SECTIONS = ("judges", "corpora", "search", "experiments", "curves", "relevance")


@dataclass
class Scores:
    """Everything a finished pipeline is scored to, each part computed once; RunRecord writes it."""

    metrics: list[str]  # the names asked for, in order
    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    breakdown: dict[str, Any] = field(default_factory=dict)  # by the card's group_by fields
    stages: dict[str, Any] = field(default_factory=dict)  # each ranking stage's retrieval metrics (when several)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # judges, corpora, search, experiments, curves, …


def score(result: PipelineResult, task: TaskData, metrics: list[str], group_by: list[str] | None = None) -> Scores:
    """The run's metrics (the last ranking's IR metrics, the reader's answer metrics, the judges' scores),
    each stage's retrieval metrics, and the summaries of judges, corpora, experiments and relevance judges."""
    aggregate, per_query, breakdown = evaluate_result(result, task, metrics, group_by)
    # several ranking stages (a reranker, long units next to passages): each one's retrieval metrics too
    final = result.final_ranking
    scored = {final.spec.id: aggregate} if final is not None else {}
    by_stage = stage_metrics(result, task, metrics, scored) if len(result.rankings) > 1 else {}
    sections: dict[str, dict[str, Any]] = {}
    for stage in result.stages:
        out = stage.output
        if out.section is None:
            continue
        summary, flat, values = out.summarize(task)  # experiments add HND[...], k_star[...] and their per-query values
        if summary is None:
            continue
        aggregate.update(flat)
        for qid, v in values.items():
            per_query.setdefault(qid, {}).update(v)
        sections.setdefault(out.section, {})[stage.spec.id] = summary
    if final is not None and (curve := recall_curve(final, task)):
        sections["curves"] = {"R@k": curve}
    ordered = {name: sections[name] for name in SECTIONS if name in sections}
    return Scores(metrics, aggregate, per_query, breakdown, by_stage, ordered)


def evaluate_result(result: PipelineResult, task: TaskData, metrics: list[str], group_by: list[str] | None = None
                    ) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, Any]]:
    """(aggregate, per-query, breakdowns) for the given metric names: retrieval ones on the last ranking."""
    specs = [parse_metric(n) for n in metrics]
    aggregate: dict[str, float] = {}
    per_query: dict[str, dict[str, float]] = {}
    ranking = result.final_ranking
    if ranking is not None:
        aggregate, per_query = evaluate_ranking(ranking, task, [s.name for s in specs if s.scores_ranking],
                                                document_level(result, ranking))
        metrics = metrics + [n for n in document_names(specs) if n in aggregate and n not in metrics]
    reader = result.reader
    predicted = [s for s in specs if s.family == "answer"]
    if predicted and reader is not None:
        assert isinstance(reader.output, Answers)
        values = answer_scores(reader.output, task, predicted)
        for qid, v in values.items():
            per_query.setdefault(qid, {}).update(v)
        for s in predicted:
            if values:
                aggregate[s.name] = sum(v[s.name] for v in values.values()) / len(values)
    judged = {s.judged_by: s.name for s in specs if s.family == "judge"}
    for judge in result.judges:  # the last judge giving a metric wins
        assert isinstance(judge.output, Judgements)
        name = judged.get(judge.output.metric)
        if name is None:
            continue
        scores = judge.output.scores()
        for qid, v in scores.items():
            per_query.setdefault(qid, {})[name] = v
        if scores:
            aggregate[name] = sum(scores.values()) / len(scores)
    aggregate = {n: aggregate[n] for n in metrics if n in aggregate}  # the order asked for
    return aggregate, per_query, breakdowns(task, per_query, group_by or [])


def answer_scores(answers: Answers, task: TaskData, specs: list[MetricSpec]) -> dict[str, dict[str, float]]:
    """Per query, each answer metric of the reader's answer (has_answer: of the long answer, where written)."""
    values: dict[str, dict[str, float]] = {}
    for q in task.queries:
        answer = answers.records.get(q.id)
        if answer is None:
            continue
        golds = gold_answers(q, task.answers_field)
        long = answer.long_answer or answer.text
        values[q.id] = {s.name: float(s.measure.score(golds, prediction=long if s.measure.kind == "has_answer"
                                                      else answer.text)) for s in specs}
    return values


def _ranked(stage: StageResult) -> tuple[Rankings, TaskData, dict[str, dict[str, int]]]:
    """A ranking stage's rankings, the task view it ranked (a derived corpus) and the qrels it is scored
    against (a judged ranking's own, else the view's)."""
    out = stage.output
    assert isinstance(out, Rankings)
    return out, stage.view, out.qrels if out.qrels is not None else stage.view.qrels


def document_level(result: PipelineResult, stage: StageResult) -> DocumentLevel | None:
    """How a ranking stage's ranking is also scored over the task's documents (it ranks passages), else None."""
    for s in result.stages:
        if s.spec.id == stage.spec.corpus and isinstance(s.output, DerivedCorpus):
            return s.output.documents
    return None


def document_names(specs: list[MetricSpec]) -> list[str]:
    """The document-level names of the IR measures asked for (`R@10` -> `R@10[doc]`), in order, once each."""
    names = [s.name if s.level == "document" else s.name + DocumentLevel.SUFFIX
             for s in specs if s.family in ("ir", "recall_free")]
    return list(dict.fromkeys(names))


def evaluate_ranking(stage: StageResult, task: TaskData, metrics: list[str], documents: DocumentLevel | None = None
                     ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """IR measures and answer recall of one ranking stage, against the corpus and qrels it ranked
    (a long-units stage: units and qrels mapped onto them; a relevance judge: its grades); with `documents`
    (a ranking over passages) its IR measures over documents too, as `M[doc]`."""
    rankings, view, qrels = _ranked(stage)
    specs = [parse_metric(n) for n in metrics]
    ir_names = [s.name for s in specs if s.family in ("ir", "recall_free") and s.level == "ranked"]
    aggregate: dict[str, float] = {}
    per_query: dict[str, dict[str, float]] = {}
    if ir_names:
        agg, pq = evaluate_ir(rankings.records, qrels, ir_names)
        aggregate.update(agg)
        for qid, values in pq.items():
            per_query.setdefault(qid, {}).update(values)
    if documents is not None and (doc_names := document_names(specs)):
        suffix = DocumentLevel.SUFFIX
        ranked = {qid: documents.rank(r) for qid, r in rankings.records.items()}
        agg, pq = evaluate_ir(ranked, documents.qrels, [n[:-len(suffix)] for n in doc_names])
        aggregate.update((n + suffix, v) for n, v in agg.items())
        for qid, values in pq.items():
            per_query.setdefault(qid, {}).update((n + suffix, v) for n, v in values.items())
    recall = [s.measure for s in specs if s.family == "answer_recall"]
    if recall:
        scored: dict[str, list[float]] = {m.name: [] for m in recall}
        for q in task.queries:
            golds = gold_answers(q, task.answers_field)
            docids = rankings.get(q.id).docids
            docs = list(view.corpus.fetch(docids).values()) if view.corpus is not None else []
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
    rankings, _, qrels = _ranked(stage)
    if not qrels:
        return {}
    depth = max((len(rankings.get(q.id).docids) for q in task.queries), default=0)
    ks = [k for k in CURVE_KS if k <= depth]
    if not ks:
        return {}
    aggregate, _ = evaluate_ir(rankings.records, qrels, [f"R@{k}" for k in ks])
    return {str(k): aggregate[f"R@{k}"] for k in ks if f"R@{k}" in aggregate}


def stage_metrics(result: PipelineResult, task: TaskData, metrics: list[str],
                  scored: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, Any]]:
    """Retrieval metrics of every ranking stage (first stage, reranker, units...), to compare them within one run;
    `scored`: aggregates already computed, by stage id (the final ranking's, by the run's own scoring)."""
    retrieval = [n for n in metrics if parse_metric(n).scores_ranking]
    out: dict[str, dict[str, Any]] = {}
    for stage in result.rankings:
        documents = document_level(result, stage)
        names = retrieval + [n for n in document_names([parse_metric(n) for n in retrieval]) if n not in retrieval] \
            if documents is not None else retrieval
        known = (scored or {}).get(stage.spec.id)
        aggregate = known if known is not None else evaluate_ranking(stage, task, retrieval, documents)[0]
        assert isinstance(stage.output, Rankings)
        out[stage.spec.id] = {"type": stage.spec.type, "corpus": stage.spec.corpus or "task",
                              "qrels": stage.output.qrels_source,
                              "metrics": {n: aggregate[n] for n in names if n in aggregate}}
    return out


def breakdowns(task: TaskData, per_query: dict[str, dict[str, float]], fields: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    queries = [q for q in task.queries if q.id in per_query]
    for by in fields:
        present = [q for q in queries if q.extra.get(by) is not None]
        if not present:
            continue
        sample = present[0].extra[by]
        if isinstance(sample, int | float) and not isinstance(sample, bool):
            deciles = popularity_deciles([float(q.extra[by]) for q in present])
            groups: dict[str, Any] = {q.id: f"decile {d}" for q, d in zip(present, deciles, strict=True)}
            name = f"{by} deciles"
        else:
            groups = {q.id: _labels(q.extra[by]) for q in present}
            name = by
        table = mean_by_group({q.id: per_query[q.id] for q in present}, groups)
        out[name] = {str(g): {m: {"mean": (None if math.isnan(v[0]) else v[0]), "n": v[1]} for m, v in ms.items()}
                     for g, ms in table.items()}
    return out


def _labels(value: Any) -> list[str] | str:
    """A list field's values; FRAMES' Hub copy stores its reasoning types as one 'A | B' string."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(" | ")] if " | " in str(value) else str(value)
