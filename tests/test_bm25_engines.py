"""The BM25 stage's engines agree with each other on a small real corpus (the embedded PopQA sample).

- robertson: bm25s scores are rank_bm25's (BM25Okapi) divided by k1 + 1. rank_bm25 floors the
  negative idf of terms in more than half the documents at epsilon * mean idf, bm25s at 0, so the
  comparison first checks that no query term is that common in this corpus.
- bm25+: same term formula, but rank_bm25 uses delta = 1 and bm25s delta = 0.5, and both give
  every document delta * idf for each query term. Scores therefore differ by the per-query
  constant 0.5 * sum(idf) and the rankings are the same; the test checks exactly that.
- bm25l is not compared: rank-bm25 0.2.2 multiplies each term's BM25L score by the term's
  frequency (dorianbrown/rank_bm25#5, fixed upstream after that release), so it scores docs
  without the term 0 and ranks differently from bm25s's (textbook) BM25L.
- lucene stores document lengths in one byte and analyses with its own tokenizer, so it agrees with bm25s's
  lucene variant under the simple analyzer and exact lengths closely but not exactly: top-10 overlap, not
  identity. With Lucene's rules and lengths bm25s ranks as Lucene does (test_bm25_lucene_rules.py).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from ragbench.cache import Cache
from ragbench.progress import Reporter
from ragbench.retrievers.analysis import Analyzer, AnalyzerOptions
from ragbench.retrievers.bm25 import BM25, BM25Options
from ragbench.stage import StageEnv
from ragbench.tasks.beir import load_corpus, load_queries
from ragbench.types import Query, Ranking, TaskData
from tests.conftest import require_lucene

SAMPLE = Path(__file__).resolve().parents[1] / "ragbench" / "data" / "popqa_sample"
K = 10
K1, B = 1.5, 0.75
N_QUERIES = 100
REL = 1e-4  # bm25s scores in float32, rank_bm25 in float64


@pytest.fixture(scope="module")
def task() -> TaskData:
    corpus = load_corpus(SAMPLE / "corpus.jsonl.gz")
    queries, fingerprint = load_queries(SAMPLE / "queries.jsonl")
    return TaskData("popqa-sample", "test", queries, {}, corpus, str(SAMPLE), fingerprint + corpus.fingerprint)


@pytest.fixture(scope="module")
def queries(task: TaskData) -> list[Query]:
    return task.queries[:N_QUERIES]


@pytest.fixture(scope="module")
def doc_freq(task: TaskData) -> Counter[str]:
    """Document frequency of each analyzed term, computed independently of every engine."""
    analyzer = Analyzer(AnalyzerOptions())
    df: Counter[str] = Counter()
    for text in task.corpus.texts():
        df.update(set(analyzer(text)))
    return df


def build(task: TaskData, cache_dir: Path, **options) -> BM25:
    stage = BM25(BM25Options(top_k=K, **options), StageEnv(Cache(cache_dir), Reporter(quiet=True), "bm25"))
    stage.prepare(task)
    return stage


def assert_same_top_k(got: dict[str, Ranking], ref: dict[str, Ranking], queries: list[Query],
                      scale: float = 1.0, offset: dict[str, float] | None = None) -> None:
    """`got` (bm25s) has the same top-k as `ref` (rank_bm25) once its scores are mapped to
    `score * scale + offset[qid]`; documents may differ only where their score ties the k-th."""
    for q in queries:
        g, r = got[q.id], ref[q.id]
        assert len(g) == len(r) == K, f"query {q.id}: {len(g)} vs {len(r)} documents"
        shift = offset[q.id] if offset else 0.0
        g_scores = {d: s * scale + shift for d, s in zip(g.docids, g.scores, strict=True)}
        r_scores = dict(zip(r.docids, r.scores, strict=True))
        kth = r.scores[-1]
        assert min(g_scores.values()) == pytest.approx(kth, rel=REL), f"query {q.id}: k-th score"
        for d in g_scores.keys() & r_scores.keys():
            assert g_scores[d] == pytest.approx(r_scores[d], rel=REL), f"query {q.id}, doc {d}"
        for d, s in [*((d, g_scores[d]) for d in g_scores.keys() - r_scores.keys()),
                     *((d, r_scores[d]) for d in r_scores.keys() - g_scores.keys())]:
            assert s == pytest.approx(kth, rel=REL), (f"query {q.id}: doc {d} (score {s}) is in one top-{K} only "
                                                      f"and does not tie the k-th score {kth}")


def test_precondition_no_query_term_in_half_the_docs(task, queries, doc_freq):
    analyzer = Analyzer(AnalyzerOptions())
    n = len(task.corpus)
    common = {t: doc_freq[t] for q in queries for t in analyzer(q.text) if doc_freq[t] > n / 2}
    assert not common, f"rank_bm25 floors the idf of these terms and bm25s does not: {common}"
    assert all(analyzer(q.text) for q in queries)


def test_bm25s_matches_rank_bm25_robertson(task, queries, tmp_path):
    fast = build(task, tmp_path, engine="bm25s", variant="robertson", k1=K1, b=B).search(queries)
    ref = build(task, tmp_path, engine="rank_bm25", variant="robertson", k1=K1, b=B).search(queries)
    assert_same_top_k(fast, ref, queries, scale=K1 + 1)
    # the check is not vacuous: most top-10 lists are identical outright
    assert sum(fast[q.id].docids == ref[q.id].docids for q in queries) >= 0.9 * len(queries)


def test_bm25s_matches_rank_bm25_bm25plus_up_to_a_constant(task, queries, doc_freq, tmp_path):
    fast = build(task, tmp_path, engine="bm25s", variant="bm25+", k1=K1, b=B).search(queries)
    ref = build(task, tmp_path, engine="rank_bm25", variant="bm25+", k1=K1, b=B).search(queries)
    analyzer, n = Analyzer(AnalyzerOptions()), len(task.corpus)
    # rank_bm25 delta 1 - bm25s delta 0.5, times bm25+'s idf log((N + 1) / df), for every query term
    offset = {q.id: sum(0.5 * math.log((n + 1) / doc_freq[t]) for t in analyzer(q.text) if doc_freq[t])
              for q in queries}
    assert all(v > 0 for v in offset.values())
    assert_same_top_k(fast, ref, queries, scale=1.0, offset=offset)


@pytest.mark.lucene
def test_lucene_agrees_with_bm25s_lucene_variant(task, queries, tmp_path):
    require_lucene()
    lucene = build(task, tmp_path, engine="lucene").search(queries)
    fast = build(task, tmp_path, engine="bm25s", variant="lucene").search(queries)
    overlaps, rel_diffs = [], []
    for q in queries:
        a = dict(zip(fast[q.id].docids, fast[q.id].scores, strict=True))
        b = dict(zip(lucene[q.id].docids, lucene[q.id].scores, strict=True))
        assert len(a) == len(b) == K
        overlaps.append(len(a.keys() & b.keys()) / K)
        rel_diffs += [abs(a[d] - b[d]) / b[d] for d in a.keys() & b.keys()]
    mean_overlap = sum(overlaps) / len(overlaps)
    assert mean_overlap >= 0.9, f"mean top-{K} overlap {mean_overlap:.3f}"
    # same formula and scale: shared documents score alike up to Lucene's one-byte lengths
    rel_diffs.sort()
    median = rel_diffs[len(rel_diffs) // 2]
    assert median < 0.02, f"median relative score difference {median:.4f}"


@pytest.mark.lucene
def test_lucene_index_is_shared_across_k1_and_b(task, queries, tmp_path):
    require_lucene()
    a = build(task, tmp_path, engine="lucene", k1=0.9, b=0.4)
    b = build(task, tmp_path, engine="lucene", k1=1.2, b=0.75)
    assert len(list((tmp_path / "artifacts").glob("*/*"))) == 1
    ra, rb = a.search(queries[:5]), b.search(queries[:5])
    assert any(ra[q.id].scores != rb[q.id].scores for q in queries[:5]), "k1/b had no effect on scores"


EMPTY_QUERIES = [
    Query("stopwords", "the of and to a"),
    Query("unknown", "zzqxvk qqqzzyk"),
    Query("punctuation", "?! ... --"),
]
# Porter stems the "s" of "'s" to "", which must not become a term. (Lucene's tokenizer keeps a
# lone "'s" as the term "s", which it indexes, so this one is for the in-process engines only.)
POSSESSIVE = Query("possessive", "'s")


@pytest.mark.parametrize("engine", ["bm25s", "rank_bm25", pytest.param("lucene", marks=pytest.mark.lucene)])
def test_query_without_indexed_terms_gets_empty_ranking(engine, task, queries, tmp_path):
    if engine == "lucene":
        require_lucene()
    stage = build(task, tmp_path, engine=engine)
    empty = EMPTY_QUERIES if engine == "lucene" else [*EMPTY_QUERIES, POSSESSIVE]
    batch = [empty[0], queries[0], *empty[1:]]
    out = stage.search(batch)
    assert set(out) == {q.id for q in batch}
    for q in empty:
        assert (out[q.id].qid, out[q.id].docids, out[q.id].scores) == (q.id, [], []), f"{engine}: {q.text!r}"
    assert len(out[queries[0].id]) == K  # a real query in the same batch is still answered


def test_bm25s_index_is_built_once_and_reused_from_cache(task, queries, tmp_path, monkeypatch):
    import bm25s

    calls = []
    original = bm25s.BM25.index

    def counting_index(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(bm25s.BM25, "index", counting_index)
    artifacts = tmp_path / "artifacts"

    first = build(task, tmp_path, engine="bm25s").search(queries)
    assert len(calls) == 1
    assert len(list(artifacts.glob("*/*"))) == 1

    second = build(task, tmp_path, engine="bm25s").search(queries)
    assert len(calls) == 1, "the second stage rebuilt the index instead of loading it from the cache"
    assert len(list(artifacts.glob("*/*"))) == 1
    assert ({qid: (r.docids, r.scores) for qid, r in first.items()}
            == {qid: (r.docids, r.scores) for qid, r in second.items()})
    assert all(len(r) == K for r in first.values())

    # bm25s bakes k1 and b into its index: other values must not reuse it
    build(task, tmp_path, engine="bm25s", k1=1.2)
    assert len(calls) == 2
    assert len(list(artifacts.glob("*/*"))) == 2


def test_analyzer_emits_no_empty_terms():
    analyzer = Analyzer(AnalyzerOptions())
    assert analyzer("George Rankin's occupation, the 1990s' s") == ["georg", "rankin", "occup", "1990"]


def test_auto_engine_is_lucene_when_installed_and_names_itself(monkeypatch):
    """No engine given means auto: Lucene (the fastest, bench/retrieval.py) wherever it runs; the options then
    say lucene, so a lock file, a cache key and an explicit `engine: lucene` are one and the same."""
    import ragbench._java as java

    monkeypatch.setattr(java, "lucene_missing", lambda: None)
    auto = BM25Options()
    assert (auto.engine, auto._auto_note) == ("lucene", None)
    assert auto.model_dump() == BM25Options(engine="lucene").model_dump() == BM25Options(engine="auto").model_dump()
    assert BM25Options.model_validate(auto.model_dump()).engine == "lucene"
    # options only bm25s computes pick it, and say why
    assert BM25Options(variant="robertson").engine == "bm25s"
    assert "Snowball" in BM25Options(analyzer={"stemmer": "english"})._auto_note
    assert BM25Options(engine="bm25s")._auto_note is None  # an engine asked for is never second-guessed


def test_auto_engine_falls_back_to_bm25s_in_one_line_without_java(task, queries, tmp_path, monkeypatch):
    import ragbench._java as java

    monkeypatch.setattr(java, "lucene_missing", lambda: "pyserini is not installed")
    lines: list[str] = []
    options = BM25Options(top_k=K)
    assert options.engine == "bm25s"
    reporter = Reporter(quiet=False, interactive=False)
    monkeypatch.setattr(reporter, "log", lines.append)
    stage = BM25(options, StageEnv(Cache(tmp_path), reporter, "bm25"))
    stage.prepare(task)
    assert lines == ["bm25: engine auto runs bm25s, not Lucene: pyserini is not installed "
                     "(pip install 'ragbench[lucene]')"]
    assert stage.identity()["engine"] == "bm25s"
    assert all(len(r) == K for r in stage.search(queries[:5]).values())
