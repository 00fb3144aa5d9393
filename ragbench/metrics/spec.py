"""Metric names parsed once into typed specs, the way ir_measures parses its measures.

Three grammars meet in a pipeline's `metrics:` list: ir_measures' (`nDCG@10`, `R@100`), the
recall-free measures' (`T@5`, `E_0.3@10x2`, `nDCG_rf@10`) and the answer metrics' (`EM`,
`answer_recall@5`, `judge_acc`); experiment stages add their headline figures (`HND[bm25]`).
`parse_metric` turns any of them into a `MetricSpec` that says what the metric needs (a ranking
and qrels, the reader's answer, a judge, an experiment), how deep a ranking it reads and whether
higher is better. Validation, evaluation, `check` and the leaderboard all read that spec.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ragbench.errors import Problem
from ragbench.yamlio import Loc, LocatedYaml, format_loc

Family = Literal["ir", "recall_free", "answer_recall", "answer", "judge", "experiment"]
#: what a metric is computed from
Need = Literal["ranking", "qrels", "gold_answers", "prediction", "judge", "probes"]

_EXPERIMENT = re.compile(r"(?P<kind>HND|rel_drop|peak_drop|k_star)\[(?P<of>[^\]]+)\]")
_EXPERIMENT_DIRECTION = {"HND": False, "rel_drop": False, "peak_drop": False, "k_star": None}
#: a ranking metric over the task's documents when the ranking is over passages (MaxP, outputs.corpus.DocumentLevel)
DOC_SUFFIX = "[doc]"


def ranks_passages(names: Iterable[str]) -> bool:
    """Whether a run's figures (their names) come from a ranking over passages: it has M[doc] figures."""
    return any(n.endswith(DOC_SUFFIX) for n in names)


def level_name(name: str, passages: bool) -> str:
    """A run's name for a figure: M[doc] of a run over whole documents is its M (the same quantity)."""
    return name[:-len(DOC_SUFFIX)] if name.endswith(DOC_SUFFIX) and not passages else name


@dataclass(frozen=True)
class MetricSpec:
    """One metric name, parsed: its family, what it needs, how deep it reads, which way is better."""

    name: str
    family: Family
    needs: frozenset[Need]
    depth: int | None = None  # the ranking depth it reads (a cutoff), None: the whole ranking or none
    higher_is_better: bool | None = True  # None: no direction (k*, the best number of passages)
    measure: Any = None  # the parsed measure: ir_measures' Measure, a RecallFreeMeasure or an AnswerMetric
    judged_by: str | None = None  # judge family: the score a judge stage gives (judge_acc, faithfulness, correctness)
    level: Literal["ranked", "document"] = "ranked"  # document: `M[doc]`, a passage ranking scored over documents

    @property
    def scores_ranking(self) -> bool:
        """Computed on a ranking (IR measures, recall-free measures, answer recall)."""
        return "ranking" in self.needs

    @property
    def requestable(self) -> bool:
        """Whether a pipeline or task card may ask for it (experiment figures come with their stage)."""
        return self.family != "experiment"


@functools.lru_cache(maxsize=4096)
def parse_metric(name: str) -> MetricSpec:
    """The spec of a metric name; ValueError (one line, with the known syntax) when it is none."""
    from ragbench.metrics import recall_free
    from ragbench.metrics.answers import parse_answer_metric
    from ragbench.metrics.ir import cutoff, parse_measure

    if name.endswith(DOC_SUFFIX) and len(name) > len(DOC_SUFFIX):
        base = parse_metric(name[:-len(DOC_SUFFIX)])
        if base.family not in ("ir", "recall_free") or base.level == "document":
            raise ValueError(f"'{name}': only IR measures have a document level (e.g. R@10{DOC_SUFFIX})")
        return dataclasses.replace(base, name=name, level="document")
    if m := _EXPERIMENT.fullmatch(name.strip()):
        return MetricSpec(name, "experiment", frozenset({"probes"}), higher_is_better=_EXPERIMENT_DIRECTION[m["kind"]])
    try:
        answer = parse_answer_metric(name)
    except ValueError:
        answer = None
    if answer is not None:
        if answer.needs == "retrieved":
            return MetricSpec(name, "answer_recall", frozenset({"ranking", "gold_answers"}), answer.k, measure=answer)
        if answer.needs == "judge":
            return MetricSpec(name, "judge", frozenset({"judge"}), measure=answer, judged_by=answer.kind)
        return MetricSpec(name, "answer", frozenset({"prediction", "gold_answers"}), measure=answer)
    free = recall_free.parse(name)
    if free is not None:
        return MetricSpec(name, "recall_free", frozenset({"ranking", "qrels"}), free.depth, measure=free)
    measure = parse_measure(name)
    return MetricSpec(name, "ir", frozenset({"ranking", "qrels"}), cutoff(measure), measure=measure)


def direction(name: str) -> bool | None:
    """Higher is better (True), lower (False), no direction or an unknown name (None)."""
    try:
        return parse_metric(name).higher_is_better
    except ValueError:
        return None


def computable(names: list[str], has_ranking: bool, has_reader: bool, judged: list[str] | None = None) -> list[str]:
    """Drop the answer metrics a pipeline has nothing for: answer recall without a ranking (closed
    book), answer scores without a reader (a retrieval-only run), with `judged` (the scores its judges
    give) a judge's score without that judge."""
    keep = []
    for n in names:
        spec = parse_metric(n)
        if spec.family == "answer_recall" and not has_ranking:
            continue
        if spec.family in ("answer", "judge") and not has_reader:
            continue
        if spec.family == "judge" and judged is not None and spec.judged_by not in judged:
            continue
        keep.append(n)
    return keep


def check_metrics(names: tuple[str, ...] | list[str], depth: int | None, doc: LocatedYaml, loc: Loc,
                  has_reader: bool | None = None, judged: list[str] | None = None,
                  per_document: bool | None = None) -> list[Problem]:
    """Unknown measures, cutoffs deeper than the final ranking, answer metrics without a reader and document-level
    measures (M[doc]) of a ranking that is not over passages (`per_document` False) are errors."""
    problems = []
    for j, name in enumerate(names):
        where = (doc.line((*loc, j)), format_loc((*loc, j)))
        try:
            spec = parse_metric(name)
        except ValueError as e:
            problems.append(Problem(doc.file, str(e), *where))
            continue
        if not spec.requestable:
            problems.append(Problem(doc.file, f"{name} is reported by its experiment stage, not requested", *where))
        elif spec.level == "document" and per_document is False:
            problems.append(Problem(doc.file, f"{name} scores a ranking over passages per document, but the last "
                                    "ranking is not over a passages corpus (corpus: <a type: passages stage>)", *where))
        elif spec.family in ("answer", "judge") and has_reader is False:
            problems.append(Problem(doc.file, f"{name} scores answers, but the pipeline has no reader stage", *where))
        elif spec.family == "judge" and judged is not None and spec.judged_by not in judged:
            method = {"judge_acc": "rating"}.get(str(spec.judged_by), spec.judged_by)
            problems.append(Problem(
                doc.file, f"{name} needs a judge: add a 'type: judge' stage with method: {method} after the reader",
                *where))
        elif (spec.family in ("ir", "recall_free") and depth is not None and spec.depth is not None
              and spec.depth > depth):
            problems.append(Problem(
                doc.file, f"{name} needs rankings of depth {spec.depth} but the last stage returns top_k={depth}",
                *where))
    return problems
