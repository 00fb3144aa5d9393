"""Multi-step retrieval (`type: multi_step`): reading queries out of a reply, the order documents are gathered
in, and a real run whose every generated query is searched through the named retriever."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ragbench.cache import Cache
from ragbench.cli import main
from ragbench.config import parse_pipeline
from ragbench.progress import Reporter
from ragbench.registry import get
from ragbench.retrievers.multi_step import gather, parse_queries
from ragbench.stage import StageEnv
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from ragbench.types import Query, Ranking
from ragbench.yamlio import LocatedYaml


def test_queries_are_read_one_per_line_without_marks_headers_or_repeats() -> None:
    reply = ('Here are the queries:\n1. Eleanor Roosevelt mother\n- "James Garfield mother maiden name"\n'
             "Query 3: eleanor roosevelt MOTHER\n[4] first lady list\n\n(5) fifth one")
    asked = {"who was my future wife?"}
    assert parse_queries(reply, 3, asked) == ["Eleanor Roosevelt mother", "James Garfield mother maiden name",
                                              "first lady list"]  # the repeat (case aside) is skipped
    assert "first lady list" in asked and parse_queries("First lady list\nnew one", 3, asked) == ["new one"]
    assert parse_queries("a b c d e f", 1, set(), max_words=3) == ["a b c"]
    assert parse_queries("", 3, set()) == [] and parse_queries("1. 1.\n2.\n1992-01-02", 3, set()) == []


def test_a_step_adds_new_documents_by_best_score_then_query_order() -> None:
    seen = {"d1"}
    found = [Ranking("a", ["d1", "d2", "d3"], [9.0, 5.0, 4.0]),  # d1 was gathered at an earlier step
             Ranking("b", ["d4", "d2", "d5"], [7.0, 6.0, 1.0]),  # d2 again, at a better score
             Ranking("c", ["d6", "d7"], [5.0, 4.0])]
    assert gather(found, 2, seen) == ["d4", "d2", "d6", "d7"]  # d2 at its best, 6.0; depth 2: d3 and d5 unread
    assert seen == {"d1", "d2", "d4", "d6", "d7"}
    tied = [Ranking("a", ["x"], [1.0]), Ranking("b", ["y"], [1.0])]
    assert gather(tied, 1, set()) == ["x", "y"]  # equal scores: the earlier query's first


def _pipeline(tmp_path: Path, llm_dir: Path, **search: object) -> Path:
    options = {"question_docs": 2, "steps": 2, "queries_per_step": 2, "docs_per_query": 2, "max_new_tokens": 32,
               "top_k": 20, "llm": {"backend": "transformers", "model": str(llm_dir)}, **search}
    p = tmp_path / "ms.yaml"
    p.write_text(json.dumps({"name": "ms", "stages": [
        {"id": "bm25", "type": "bm25", "engine": "bm25s", "top_k": 50},
        {"id": "search", "type": "multi_step", "input": "bm25", **options}], "metrics": ["R@5", "R@20"]}))
    return p


def test_every_generated_query_is_searched_through_the_named_retriever(tmp_path: Path, smollm2_dir: Path) -> None:
    """SmolLM2 writes the queries; each step's documents are what bm25 itself returns for them (asked again
    here, apart from the stage), the ranking is step 0, then each step's new documents, then the question's
    ranking, without repeats; the run folder has every step's queries and metrics.json their counts."""
    env = {"RAGBENCH_CACHE": str(tmp_path / "cache")}
    path = _pipeline(tmp_path, smollm2_dir)
    result = CliRunner().invoke(main, ["run", str(path), "--task", "popqa-sample", "--limit", "2",
                                       "--out", str(tmp_path / "run")], env=env)
    assert result.exit_code == 0, result.output
    assert "search: per question, step 0: 1.0 queries, 2.0 new documents; step 1:" in result.output
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "queries.generated.jsonl").read_text().splitlines()]
    task = load_task(load_task_card("popqa-sample")[0], limit=2)
    qids = [q.id for q in task.queries]
    assert [(r["query_id"], r["step"]) for r in rows] == [(q, s) for q in qids for s in (0, 1, 2)]
    assert [q for r in rows if r["step"] for q in r["queries"]], "the LLM wrote no query at all"

    pipeline, _ = parse_pipeline(LocatedYaml(json.loads(path.read_text()), {}, str(path)))
    assert pipeline is not None
    retriever = get("bm25")(pipeline.stages[0].options, StageEnv(Cache(tmp_path / "cache"), Reporter(quiet=True), "b"))
    retriever.prepare(task)
    run_trec: dict[str, list[str]] = {}
    for line in (run / "run.trec").read_text().splitlines():
        qid, _, doc, *_ = line.split()
        run_trec.setdefault(qid, []).append(doc)
    for q in task.queries:
        steps = [r for r in rows if r["query_id"] == q.id]
        question_top = retriever.search([q])[q.id].docids
        assert steps[0]["new"] == question_top[:2]
        gathered = [d for s in steps for d in s["new"]]
        for s in steps[1:]:
            again = retriever.search([Query(f"x{j}", t) for j, t in enumerate(s["queries"])])
            assert s["found"] == [again[f"x{j}"].docids[:2] for j in range(len(s["queries"]))]
            assert set(s["new"]) <= {d for found in s["found"] for d in found}
        assert len(set(gathered)) == len(gathered)
        rest = [d for d in question_top if d not in gathered]
        assert run_trec[q.id] == (gathered + rest)[:20]
    metrics = json.loads((run / "metrics.json").read_text())
    steps = metrics["search"]["search"]["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2] and steps[0]["new_documents"] == 2.0


def test_it_must_search_through_a_first_stage_retriever(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\nstages:\n  - {id: a, type: bm25, top_k: 10}\n  - {id: b, type: bm25, k1: 1.2, top_k: 10}\n"
                 "  - {id: rrf, type: fusion, inputs: [a, b]}\n  - {id: search, type: multi_step, input: rrf}\n")
    result = CliRunner().invoke(main, ["run", str(p), "--task", "popqa-sample", "--limit", "1"],
                                env={"RAGBENCH_CACHE": str(tmp_path / "cache")})
    assert result.exit_code != 0
    assert "bad.yaml" in result.output and "stages[3].input" in result.output
    assert "first-stage retriever" in result.output and "'rrf' is type 'fusion'" in result.output
