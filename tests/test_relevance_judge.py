"""The LLM relevance assessor: its grade parser, and the qrels its grades make (llm / fill)."""

from __future__ import annotations

from ragbench.metrics.relevance import RelevanceJudge as RJ
from ragbench.metrics.relevance import RelevanceOptions, parse_grade, relevance_summary
from ragbench.types import Assessment, TaskData


def test_grade_is_the_last_final_score_line() -> None:
    assert parse_grade("M: 2\nT: 3\n##final score: 2") == 2
    assert parse_grade("##final score: 1 ... on reflection ##Final Score: **3**") == 3
    assert parse_grade("the passage is relevant") is None
    assert parse_grade("##final score: 7") is None  # outside the scale


def test_llm_qrels_replace_and_fill_keeps_the_task_labels() -> None:
    task = TaskData("t", "test", [], {"q": {"d1": 1, "d9": 1}}, None, "", "fp")
    graded = {"q": Assessment("q", {"d1": 0, "d2": 3, "d3": 1, "d4": None})}
    llm = RJ.judged_view(task, graded, RelevanceOptions())
    assert llm.qrels == {"q": {"d1": 0, "d2": 3, "d3": 0}}  # below relevant_at (2) -> 0; unparseable -> no label
    assert llm.fingerprint != task.fingerprint and task.qrels == {"q": {"d1": 1, "d9": 1}}
    fill = RJ.judged_view(task, graded, RelevanceOptions(qrels="fill"))
    assert fill.qrels == {"q": {"d1": 1, "d9": 1, "d2": 3, "d3": 0}}
    assert relevance_summary(graded, 2) == {"pairs": 4, "graded": 3, "unparsed": 1, "relevant": 1, "grades": {"0": 1, "1": 1, "2": 0, "3": 1}}
