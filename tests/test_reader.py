"""The reader stage: what goes into the prompt (budget, order, closed book, adaptive retrieval),
how replies become answers, and the run folder a reader pipeline leaves (answers.jsonl, answer
metrics, breakdown by popularity decile), with the bundled SmolLM2 on the embedded PopQA sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragbench.cache import Cache
from ragbench.cli import main
from ragbench.config import validate_file
from ragbench.metrics.answers import parse_judgement
from ragbench.progress import Reporter
from ragbench.readers.answer_rules import popqa_answer
from ragbench.readers.prompt import both_ends
from ragbench.readers.reader import Reader, clean_answer
from ragbench.stage import StageEnv
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from ragbench.types import Ranking


def test_both_ends_puts_the_best_at_both_ends() -> None:
    # Jin et al.: pos(d_i) = (i+1)/2 for odd i, k+1-i/2 for even i
    assert both_ends([1, 2, 3, 4, 5, 6, 7]) == [1, 3, 5, 7, 6, 4, 2]
    assert both_ends([1, 2, 3, 4]) == [1, 3, 4, 2]
    assert both_ends([1]) == [1] and both_ends([]) == []


@pytest.mark.parametrize(("reply", "answer"), [
    ("Paris", "Paris"),
    ("  The answer: Paris.\nMore text", "Paris."),
    ("Answer: politician", "politician"),
    ("\n\nsinger\nsongwriter", "singer"),
    ("", ""),
])
def test_clean_answer(reply: str, answer: str) -> None:
    assert clean_answer(reply) == answer


@pytest.fixture(scope="module")
def sample():
    return load_task(load_task_card("popqa-sample")[0], limit=6)


@pytest.fixture
def tiny_llm(tiny_llm_dir: Path) -> dict[str, str]:
    """The 2-layer test Llama with SmolLM2's tokenizer (conftest): these tests check what is read and asked, not
    what is answered."""
    return {"backend": "transformers", "model": str(tiny_llm_dir)}


def _reader(tmp_path: Path, **options) -> Reader:
    stage = Reader(Reader.Options.model_validate(options), StageEnv(Cache(tmp_path), Reporter(quiet=True), "reader"))
    return stage


def test_select_keeps_the_budget_and_the_order(tmp_path: Path, sample, tiny_llm) -> None:
    docids = list(sample.corpus)[:6]
    ranking = Ranking("q", docids, [6.0, 5, 4, 3, 2, 1])
    for order, expected in (("score", docids[:5]), ("reverse", docids[:5][::-1]), ("both_ends", both_ends(docids[:5]))):
        stage = _reader(tmp_path, top_k=5, order=order, llm=tiny_llm)
        stage.prepare(sample)
        assert [d for d, _ in stage.select(ranking)] == expected
    tight = _reader(tmp_path, top_k=5, context_tokens=120, llm=tiny_llm)
    tight.prepare(sample)
    chosen = tight.select(ranking)
    used = sum(tight.llm.count_tokens(t) + 2 for _, t in chosen)
    assert 1 <= len(chosen) < 5 and used <= 120


def test_adaptive_retrieval_reads_only_for_unpopular_subjects(tmp_path: Path, sample, tiny_llm) -> None:
    pops = sorted(q.extra["s_pop"] for q in sample.queries)
    threshold = pops[len(pops) // 2]
    stage = _reader(tmp_path, top_k=2, max_new_tokens=8, adaptive={"field": "s_pop", "threshold": threshold},
                    llm=tiny_llm)
    stage.prepare(sample)
    rankings = {q.id: Ranking(q.id, list(sample.corpus)[:2], [2.0, 1.0]) for q in sample.queries}
    answers = stage.process(sample.queries, [rankings])
    for q in sample.queries:
        a = answers[q.id]
        assert a.retrieved == (q.extra["s_pop"] < threshold)
        assert (len(a.context_ids) == 2) == a.retrieved
        assert ("given passages" in a.prompts[0][0]["content"]) == a.retrieved
        assert a.outputs and a.text == popqa_answer(a.outputs[0])  # one step: PopQA's first-line rule by default


def test_two_step_extraction_asks_twice(tmp_path: Path, sample, tiny_llm) -> None:
    stage = _reader(tmp_path, top_k=1, steps=2, long_max_new_tokens=24, max_new_tokens=8, llm=tiny_llm)
    stage.prepare(sample)
    q = sample.queries[0]
    answer = stage.process([q], [{q.id: Ranking(q.id, [next(iter(sample.corpus))], [1.0])}])[q.id]
    assert len(answer.prompts) == 2 and len(answer.outputs) == 2
    assert "Long Answer: " + answer.long_answer in answer.prompts[1][0]["content"]


def test_rag_and_closed_book_runs_write_answers_and_answer_metrics(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"RAGBENCH_CACHE": str(tmp_path / "cache")}
    rag = runner.invoke(main, ["run", "pipelines/popqa-rag.yaml", "--task", "popqa-sample", "--limit", "4",
                               "--out", str(tmp_path / "rag")], env=env)
    assert rag.exit_code == 0, rag.output
    closed = runner.invoke(main, ["run", "pipelines/popqa-closed-book.yaml", "--task", "popqa-sample", "--limit", "4",
                                  "--out", str(tmp_path / "cb")], env=env)
    assert closed.exit_code == 0, closed.output

    metrics = json.loads((tmp_path / "rag" / "metrics.json").read_text())["metrics"]
    assert {"nDCG@10", "popqa_acc", "EM", "F1", "answer_recall@1", "answer_recall@5"} <= set(metrics)
    answers = [json.loads(line) for line in (tmp_path / "rag" / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 4 and all(a["retrieved"] and len(a["context_ids"]) == 5 for a in answers)
    per_query = [json.loads(line) for line in (tmp_path / "rag" / "per_query.jsonl").read_text().splitlines()]
    assert sum(p["popqa_acc"] for p in per_query) / len(per_query) == pytest.approx(metrics["popqa_acc"])

    cb = json.loads((tmp_path / "cb" / "metrics.json").read_text())
    assert set(cb["metrics"]) == {"popqa_acc", "EM", "F1"}  # no retrieval: neither IR metrics nor answer recall
    assert not (tmp_path / "cb" / "run.trec").exists()
    cb_answers = [json.loads(line) for line in (tmp_path / "cb" / "answers.jsonl").read_text().splitlines()]
    assert all(not a["retrieved"] and a["context_ids"] == [] for a in cb_answers)
    deciles = cb["breakdown"]["s_pop deciles"]
    assert sum(g["popqa_acc"]["n"] for g in deciles.values()) == 4
    print(f"\nREPORT popqa-sample 4 queries, SmolLM2: RAG popqa_acc {metrics['popqa_acc']:.3f} EM {metrics['EM']:.3f} "
          f"AR@5 {metrics['answer_recall@5']:.3f}; closed book popqa_acc {cb['metrics']['popqa_acc']:.3f}")


def test_answer_metrics_need_a_reader_and_readers_feed_nothing(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("name: x\nmetrics: [nDCG@10, EM]\nstages:\n  - {type: bm25, top_k: 10}\n")
    assert any("EM scores answers, but the pipeline has no reader stage" in str(x) for x in validate_file(p))
    q = tmp_path / "q.yaml"
    q.write_text("name: y\nstages:\n  - {type: reader, closed_book: true}\n  - {type: listwise, top_k: 5}\n")
    assert any("produces answers, but type" in str(x) for x in validate_file(q))


def test_frames_closed_book_needs_no_corpus_and_breaks_down_by_reasoning_type(tmp_path: Path, tiny_llm) -> None:
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "frames" / "queries.jsonl").exists():
        pytest.skip(f"FRAMES questions not found under {SHARED_DATA}")
    result = CliRunner().invoke(main, ["run", "pipelines/frames-closed-book.yaml", "--task", "frames",
                                       "--data", str(SHARED_DATA / "frames"), "--limit", "2",
                                       "--set", f"reader.llm={json.dumps(tiny_llm)}",
                                       "--set", f"judge.llm={json.dumps(tiny_llm)}",
                                       "--out", str(tmp_path / "run")], env={"RAGBENCH_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    judge = metrics["judges"]["judge"]
    assert (judge["metric"] == "judge_acc" and judge["n"] == 2 and judge["judged"] + judge["unparsed"] == 2
            and judge["model"])
    assert set(metrics["metrics"]) == {"EM", "F1"} | ({"judge_acc"} if judge["judged"] else set())
    rows = [json.loads(line) for line in (tmp_path / "run" / "judgements.jsonl").read_text().splitlines()]
    assert [r["value"] for r in rows] == [(None if v is None else float(v))
                                          for v in (parse_judgement(r["outputs"][0]) for r in rows)]
    types = metrics["breakdown"]["reasoning_types"]
    queries = [json.loads(line) for line in (SHARED_DATA / "frames" / "queries.jsonl").read_text().splitlines()[:2]]
    assert set(types) == {t for q in queries for t in q["reasoning_types"]}


JUDGED = """\
name: judged
stages:
  - {type: reader, closed_book: true, max_new_tokens: 16, llm: %(llm)s}
  - {type: judge, max_new_tokens: 96, llm: %(llm)s}
"""


def test_judge_scores_reader_answers_through_a_server(vllm_server, tmp_path: Path) -> None:
    """A real judge LLM (SmolLM2 on the vLLM server) rates 4 closed-book answers; every verdict is the
    deterministic parse of the stored reply, unparseable ones are counted and left out of judge_acc."""
    llm = (f"{{backend: openai_server, model: smollm2, base_url: {vllm_server.base_url}, "
           "tokenizer: SmolLM2-135M-Instruct}")
    p = tmp_path / "judged.yaml"
    p.write_text(JUDGED % {"llm": llm})
    result = CliRunner().invoke(main, ["run", str(p), "--task", "popqa-sample", "--limit", "4",
                                       "--out", str(tmp_path / "run")], env={"RAGBENCH_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    answers = {r["query_id"]: r for r in map(json.loads, (run / "answers.jsonl").read_text().splitlines())}
    rows = [json.loads(line) for line in (run / "judgements.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["llm"] == "smollm2" for r in rows)
    task = load_task(load_task_card("popqa-sample")[0], limit=4)
    for r, q in zip(rows, task.queries, strict=True):
        prompt = r["prompts"][0][0]["content"]
        assert f"Question: {q.text}" in prompt and f"Response: {answers[q.id]['answer']}" in prompt
        assert f"Ground truth answer: {q.extra['answers'][0]}" in prompt
        verdict = parse_judgement(r["outputs"][0])
        assert r["value"] == (None if verdict is None else float(verdict))
    metrics = json.loads((run / "metrics.json").read_text())
    parsed = [r["value"] for r in rows if r["value"] is not None]
    assert metrics["judges"] == {"judge": {"metric": "judge_acc", "model": "smollm2", "n": 4, "judged": len(parsed),
                                           "unparsed": 4 - len(parsed)}}
    if parsed:
        assert metrics["metrics"]["judge_acc"] == pytest.approx(sum(parsed) / len(parsed))
    assert "without a parseable verdict" in result.output
    print(f"\nREPORT judge (SmolLM2 via vLLM) on 4 PopQA closed-book answers: {len(parsed)} parsed, "
          f"{4 - len(parsed)} unparseable")


def test_judge_needs_answers_and_judge_acc_needs_a_judge(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("name: x\nstages:\n  - {type: bm25, top_k: 10}\n  - {type: judge}\n")
    assert any("input 'bm25' produces rankings, but type 'judge' reads answers" in str(x) for x in validate_file(p))
    q = tmp_path / "q.yaml"
    q.write_text("name: y\nmetrics: [EM, judge_acc]\nstages:\n  - {type: reader, closed_book: true}\n")
    assert any("judge_acc needs a judge: add a 'type: judge' stage with method: rating after the reader" in str(x)
               for x in validate_file(q))


def test_until_runs_only_the_retrieval_and_keeps_answer_recall(tmp_path: Path) -> None:
    env = {"RAGBENCH_CACHE": str(tmp_path / "cache")}
    result = CliRunner().invoke(main, ["run", "popqa-rag", "--until", "bm25", "--out", str(tmp_path / "run")], env=env)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert list(metrics) == ["nDCG@10", "R@10", "R@100", "RR@10", "answer_recall@1", "answer_recall@5"]
    assert 0 < metrics["answer_recall@1"] <= metrics["answer_recall@5"] <= 1
    assert not (tmp_path / "run" / "answers.jsonl").exists()
    bad = CliRunner().invoke(main, ["run", "popqa-rag", "--until", "rerank"], env=env)
    assert (bad.exit_code == 2 and "--until: 'rerank' is not a stage of" in bad.output
            and "(stages: bm25, reader)" in bad.output)
