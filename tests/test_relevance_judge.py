"""The LLM relevance assessor: its grade parser, and the qrels its grades make (llm / fill)."""

from __future__ import annotations

from ragbench.judges.relevance import RelevanceJudge as RJ
from ragbench.judges.relevance import RelevanceOptions, parse_grade
from ragbench.outputs import Rankings
from ragbench.types import Assessment, TaskData


def test_grade_is_the_last_final_score_line() -> None:
    assert parse_grade("M: 2\nT: 3\n##final score: 2") == 2
    assert parse_grade("##final score: 1 ... on reflection ##Final Score: **3**") == 3
    assert parse_grade("the passage is relevant") is None
    assert parse_grade("##final score: 7") is None  # outside the scale
    assert parse_grade("##final score: 2.0") == 2 and parse_grade("##final score: 0.5") is None  # not an integer grade


def test_llm_qrels_replace_and_fill_keeps_the_task_labels() -> None:
    task = TaskData("t", "test", [], {"q": {"d1": 1, "d9": 1}}, None, "", "fp")
    graded = {"q": Assessment("q", {"d1": 0, "d2": 3, "d3": 1, "d4": None})}
    ranked = Rankings({})
    llm = RJ.output(RelevanceOptions(), graded, [ranked], task)  # the ranking passed on, scored against its own qrels
    assert llm.qrels == {"q": {"d1": 0, "d2": 3, "d3": 0}}  # below relevant_at (2) -> 0; unparseable -> no label
    assert llm.qrels_source == "llm" and task.qrels == {"q": {"d1": 1, "d9": 1}}
    fill = RJ.output(RelevanceOptions(qrels="fill"), graded, [ranked], task)
    assert fill.qrels == {"q": {"d1": 1, "d9": 1, "d2": 3, "d3": 0}}
    assert llm.summary(task) == {"qrels": "llm", "pairs": 4, "graded": 3, "unparsed": 1, "relevant": 1,
                                 "grades": {"0": 1, "1": 1, "2": 0, "3": 1}}


def test_assessed_ranking_is_scored_against_the_judges_grades(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from ragbench.cli import main

    p = tmp_path / "rj.yaml"
    p.write_text("name: rj\nstages:\n  - {id: bm25, type: bm25, engine: bm25s, top_k: 10}\n"
                 "  - {id: assessed, type: relevance_judge, depth: 2, prefix: '##final score: ', max_new_tokens: 2,"
                 " llm: {backend: transformers, model: SmolLM2-135M-Instruct}}\nmetrics: [P@2, T_0.5@2]\n")
    result = CliRunner().invoke(main, ["run", str(p), "--task", "popqa-sample", "--limit", "2",
                                       "--out", str(tmp_path / "run")], env={"RAGBENCH_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "relevance.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["grades"]) == 2 for r in rows)
    for r in rows:
        assert all(g == parse_grade(r["outputs"][d]) for d, g in r["grades"].items())
    qrels = [line.split("\t") for line in (run / "qrels.llm.tsv").read_text().splitlines()]
    assert len(qrels) == sum(g is not None for r in rows for g in r["grades"].values())
    metrics = json.loads((run / "metrics.json").read_text())
    relevant = [sum(1 for g in r["grades"].values() if g is not None and g >= 2) / 2 for r in rows]
    assert metrics["stages"]["assessed"]["qrels"] == "llm" and metrics["stages"]["bm25"]["qrels"] == "task"
    assert metrics["metrics"]["P@2"] == sum(relevant) / 2  # the final ranking is scored against the judge's grades
    assert metrics["relevance"]["assessed"]["pairs"] == 4
