"""DPR-style passages (issue 17): the splitting rules, ids and titles, the cache, qrels mapped onto passages
(`relevant: answer` keeps only answer-bearing passages), MaxP document-level scoring worked by hand, and one
CLI run on FRAMES with both levels in metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragbench.cache import Cache
from ragbench.cli import main
from ragbench.config import StageSpec
from ragbench.corpora.passages import (
    Passages,
    PassagesOptions,
    document_of,
    token_passages,
    windows,
    word_passages,
)
from ragbench.evaluation import evaluate_result, stage_metrics
from ragbench.llm.loading import load_tokenizer
from ragbench.metrics.spec import parse_metric
from ragbench.outputs import DerivedCorpus, Rankings
from ragbench.pipeline import PipelineResult, StageResult
from ragbench.progress import Reporter
from ragbench.retrievers.bm25 import BM25, BM25Options
from ragbench.stage import StageEnv
from ragbench.types import Corpus, Document, Query, Ranking, TaskData
from tests.conftest import SHARED_DATA


def words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


# -- splitting rules ----------------------------------------------------------------------------------
def test_word_windows_disjoint_and_strided() -> None:
    assert windows(250, 100, 100) == [(0, 100), (100, 200), (200, 250)]  # the last window is shorter
    assert windows(200, 100, 100) == [(0, 100), (100, 200)]  # no empty tail window
    # overlapping: stop after the first window that reaches the end (no window inside the previous one)
    assert windows(250, 100, 50) == [(0, 100), (50, 150), (100, 200), (150, 250)]
    assert windows(0, 100, 100) == [(0, 0)]  # a document without text is one empty passage
    parts = word_passages("a  b\n c\td e", 2, 2)  # whitespace words joined by single spaces, as DPR
    assert parts == [(0, 2, "a b"), (2, 2, "c d"), (4, 1, "e")]
    assert word_passages("", 100, 100) == [(0, 0, "")]
    with pytest.raises(ValueError, match="stride 120 is larger than size 100"):
        PassagesOptions(stride=120)


def test_token_windows_follow_the_tokenizer(smollm2_dir: Path) -> None:
    tok, _ = load_tokenizer(str(smollm2_dir))
    text = "Ada Lovelace wrote the first published algorithm for Babbage's Analytical Engine in 1843. " * 4
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    n = len(enc.ids)
    parts = token_passages(text, enc.offsets, 16, 12)
    assert [p[0] for p in parts] == [a for a, _ in windows(n, 16, 12)] and parts[0][0] == 0
    assert all(length <= 16 for _, length, _ in parts) and parts[-1][0] + parts[-1][1] == n
    for start, length, piece in parts:  # each passage is the original text of its tokens
        assert piece == text[enc.offsets[start][0]:enc.offsets[start + length - 1][1]].strip()
    assert text.startswith(parts[0][2]) and text.rstrip().endswith(parts[-1][2])


def test_token_passages_through_the_stage(smollm2_dir: Path, tmp_path: Path) -> None:
    cache, task = Cache(tmp_path / "cache"), small_task()
    options = PassagesOptions(unit="tokens", size=40, stride=30, tokenizer=str(smollm2_dir))
    derived = derive(options, cache, task)
    corpus = derived.view.corpus
    assert corpus is not None and derived.built and derived.stats["unit"] == "tokens"
    tok, _ = load_tokenizer(str(smollm2_dir))
    for doc in DOCS:
        n = len(tok.backend_tokenizer.encode(doc.text, add_special_tokens=False).ids)
        mine = [p for p in corpus if document_of(p) == doc.id]
        assert mine == [f"{doc.id}#{k}" for k in range(len(windows(n, 40, 30)))]
        assert [corpus[p].extra["start"] for p in mine] == [a for a, _ in windows(n, 40, 30)]
        assert all(corpus[p].title == doc.title for p in mine)
    assert Passages(options, StageEnv(cache, Reporter(quiet=True), "p")).identity() == {"tokenizer": str(smollm2_dir)}
    assert not derive(options, cache, task).built


# -- the stage on a small corpus ------------------------------------------------------------------------
DOCS = [Document("a", words(150, "a"), "Alpha"),
        Document("b", words(60, "b") + " Ada Lovelace " + words(120, "c"), "Beta#2"),
        Document("x#1", "", "Empty")]  # an id with the separator, and no text


def small_task() -> TaskData:
    queries = [Query("q1", "who?", {"answers": ["Ada Lovelace"]}), Query("q2", "what?", {"answers": ["a3"]})]
    qrels = {"q1": {"b": 1, "a": 0}, "q2": {"a": 2, "missing": 1}}
    return TaskData("t", "test", queries, qrels, Corpus(DOCS, "fp-small"), "", "fp-task")


def derive(options: PassagesOptions, cache: Cache, task: TaskData) -> DerivedCorpus:
    stage = Passages(options, StageEnv(cache, Reporter(quiet=True), "passages"))
    return stage.derive(task)


def test_ids_titles_and_cache_reuse(tmp_path: Path) -> None:
    cache, task = Cache(tmp_path / "cache"), small_task()
    first = derive(PassagesOptions(size=100), cache, task)
    corpus = first.view.corpus
    assert first.built and corpus is not None
    assert list(corpus) == ["a#0", "a#1", "b#0", "b#1", "x#1#0"]
    b1 = corpus["b#1"]
    assert b1.title == "Beta#2" and b1.extra == {"doc": "b", "start": 100}
    assert b1.text == " ".join(f"c{i}" for i in range(38, 120))  # words 100-181: b0-b59, Ada, Lovelace, c0-c119
    assert corpus["a#1"].text == " ".join(f"a{i}" for i in range(100, 150)) and corpus["x#1#0"].text == ""
    assert [document_of(p) for p in corpus] == ["a", "a", "b", "b", "x#1"]
    assert first.stats["passages"] == 5 and first.stats["documents"] == 3
    again = derive(PassagesOptions(size=100, relevant="answer"), cache, task)  # qrels differ, passages do not
    assert not again.built and again.view.corpus.fingerprint == corpus.fingerprint
    assert again.view.fingerprint != first.view.fingerprint
    other = derive(PassagesOptions(size=100, stride=50), cache, task)
    assert other.built and other.view.corpus.fingerprint != corpus.fingerprint and len(other.view.corpus) == 6  # 2+3+1


def test_qrels_inherit_or_need_the_answer(tmp_path: Path) -> None:
    cache, task = Cache(tmp_path / "cache"), small_task()
    inherited = derive(PassagesOptions(size=50), cache, task).view.qrels
    # a: 150 words -> a#0..a#2; b: 182 words -> b#0..b#3; "missing" is not in the corpus and is dropped
    assert inherited == {"q1": {"b#0": 1, "b#1": 1, "b#2": 1, "b#3": 1, "a#0": 0, "a#1": 0, "a#2": 0},
                         "q2": {"a#0": 2, "a#1": 2, "a#2": 2}}
    answer = derive(PassagesOptions(size=50, relevant="answer"), cache, task).view.qrels
    # "Ada Lovelace" is words 60-61 of b: passage b#1 (words 50-99); "a3" only in a#0 (a30 is another token);
    # passages of a judged non-relevant document (grade 0) are not kept
    assert answer == {"q1": {"b#1": 1}, "q2": {"a#0": 2}}


# -- MaxP, by hand ---------------------------------------------------------------------------------------
def test_maxp_document_level_hand_worked(tmp_path: Path) -> None:
    """Passage ranking a#1 .9, b#0 .8, a#0 .7, x#1#0 .6, b#1 .5 -> documents a .9, b .8, x#1 .6 (each at its
    first, best, passage). q2's relevant documents: a (grade 2) and "missing" (1, in no ranking).
    R@1[doc] = 1/2, R@3[doc] = 1/2; nDCG@3[doc] with trec_eval's gain (the grade): DCG = 2/log2(2) = 2,
    ideal = 2 + 1/log2(3), so 2 / 2.63093 = 0.76019. Passage level (a#0..a#2 relevant, grade 2):
    R@1 = 1/3, R@3 = 2/3."""
    cache, task = Cache(tmp_path / "cache"), small_task()
    task.queries = task.queries[1:]
    task.qrels = {"q2": task.qrels["q2"]}
    derived = derive(PassagesOptions(size=50), cache, task)
    corpus_spec = StageSpec("passages", "passages", Passages, PassagesOptions(size=50), ())
    corpus_stage = StageResult(corpus_spec, "k0", derived, derived.view, 1, 0, 0.0)
    ranking = Ranking("q2", ["a#1", "b#0", "a#0", "x#1#0", "b#1"], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert derived.documents is not None
    assert derived.documents.rank(ranking) == Ranking("q2", ["a", "b", "x#1"], [0.9, 0.8, 0.6])
    spec = StageSpec("bm25", "bm25", BM25, BM25Options(), (), corpus="passages")
    ranked = StageResult(spec, "k1", Rankings({"q2": ranking}), derived.view, 1, 0, 0.0)
    result = PipelineResult([corpus_stage, ranked])
    aggregate, per_query, _ = evaluate_result(result, task, ["R@1", "R@3", "nDCG@3"])
    assert list(aggregate) == ["R@1", "R@3", "nDCG@3", "R@1[doc]", "R@3[doc]", "nDCG@3[doc]"]
    assert aggregate["R@1[doc]"] == pytest.approx(0.5) and aggregate["R@3[doc]"] == pytest.approx(0.5)
    assert aggregate["nDCG@3[doc]"] == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert aggregate["R@1"] == pytest.approx(1 / 3) and aggregate["R@3"] == pytest.approx(2 / 3)
    assert per_query["q2"]["R@3[doc]"] == pytest.approx(0.5)
    # asked for by name, the document level alone; stage_metrics reports both levels per stage
    only, _, _ = evaluate_result(result, task, ["R@3[doc]"])
    assert only == {"R@3[doc]": pytest.approx(0.5)}
    by_stage = stage_metrics(result, task, ["R@3"])
    assert by_stage["bm25"]["metrics"] == {"R@3": pytest.approx(2 / 3), "R@3[doc]": pytest.approx(0.5)}
    spec_doc = parse_metric("nDCG@3[doc]")
    assert (spec_doc.level, spec_doc.depth, spec_doc.family) == ("document", 3, "ir")
    with pytest.raises(ValueError, match="only IR measures"):
        parse_metric("EM[doc]")


# -- end to end -------------------------------------------------------------------------------------------
PIPELINE = """name: passages-e2e
stages:
  - {id: passages, type: passages, size: 100}
  - {id: bm25, type: bm25, corpus: passages, top_k: 1000}
metrics: [R@10, R@100, nDCG@10]
"""


def test_cli_run_on_frames_reports_both_levels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (SHARED_DATA / "frames" / "corpus.jsonl.gz").exists():
        pytest.skip(f"FRAMES corpus not found at {SHARED_DATA / 'frames'} (set RAGBENCH_DATA)")
    monkeypatch.setenv("RAGBENCH_DATA", str(SHARED_DATA))
    monkeypatch.setenv("RAGBENCH_CACHE", str(tmp_path / "cache"))
    yaml = tmp_path / "p.yaml"
    yaml.write_text(PIPELINE)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", str(yaml), "--task", "frames", "--limit", "20", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "metrics.json").read_text())
    metrics = data["metrics"]
    assert list(metrics) == ["R@10", "R@100", "nDCG@10", "R@10[doc]", "R@100[doc]", "nDCG@10[doc]"]
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    # an article is relevant when any of its passages is: documents are found more easily than all their passages
    assert metrics["R@100[doc]"] > metrics["R@100"]
    corpora = data["corpora"]["passages"]
    assert corpora["documents"] == 2460 and corpora["passages"] > 2460 and "M[doc]" in corpora["levels"]
    first = json.loads((out / "per_query.jsonl").read_text().splitlines()[0])
    assert {"R@10", "R@10[doc]"} <= set(first)
    header = next(line for line in res.output.splitlines() if "R@10" in line)  # the terminal shows both levels
    assert header.index("R@10") < header.index("R@10[doc]") < header.index("R@100")


def test_a_document_level_measure_without_passages_is_one_located_line(tmp_path: Path) -> None:
    from ragbench.config import load_pipeline
    from ragbench.errors import RagbenchError

    pipe = tmp_path / "p.yaml"
    pipe.write_text("name: p\nstages:\n  - {id: bm25, type: bm25}\nmetrics:\n  - R@10\n  - R@10[doc]\n")
    with pytest.raises(RagbenchError) as err:
        load_pipeline(pipe)
    (problem,) = err.value.problems
    assert problem.file == str(pipe) and problem.line == 6 and "R@10[doc]" in problem.message
    assert "passages" in problem.message
    assert "metrics: [R@10, R@100, nDCG@10]" in PIPELINE  # over passages, the document level may be asked for
    pipe.write_text(PIPELINE.replace("metrics: [R@10, R@100, nDCG@10]", "metrics:\n  - R@10\n  - R@10[doc]"))
    assert load_pipeline(pipe).metrics == ("R@10", "R@10[doc]")
