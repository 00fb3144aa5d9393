"""The dense stage: stored corpus embeddings are reused across searches, an interrupted encoding
resumes where it stopped, exact search equals a brute-force matrix product, faiss agrees with
it, and chunked documents are scored by their chunks (maxp / firstp / mean)."""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from ragbench.cache import Cache
from ragbench.config import load_pipeline, parse_pipeline
from ragbench.pipeline import run_pipeline
from ragbench.progress import Reporter
from ragbench.retrievers.dense import Dense, DenseOptions
from ragbench.retrievers.dense_encoder import DenseModel
from ragbench.stage import StageEnv
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from ragbench.types import Corpus, Document, Query, TaskData
from ragbench.yamlio import load_yaml

REPO = Path(__file__).resolve().parent.parent
QUIET = Reporter(quiet=True)


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.rows = 0


@contextmanager
def counting(fail_after: int | None = None):
    """Count corpus-encoder calls (one per part, in this process); optionally fail on call N + 1."""
    counter = Counter()
    original = DenseModel.__call__

    def wrapped(self, texts):
        if fail_after is not None and counter.calls >= fail_after:
            raise KeyboardInterrupt("simulated interruption")
        counter.calls += 1
        counter.rows += len(texts)
        return original(self, texts)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DenseModel, "__call__", wrapped)
        yield counter


def make_task(docs: list[Document], queries: list[Query], name: str = "tiny") -> TaskData:
    fp = hashlib.sha256(json.dumps([(d.id, d.title, d.text) for d in docs]).encode()).hexdigest()
    return TaskData(name, "test", queries, {}, Corpus({d.id: d for d in docs}, fp), name, fp)


def stage(cache: Cache, **options) -> Dense:
    return Dense(DenseOptions(**options), StageEnv(cache, QUIET, "dense"))


@pytest.fixture(scope="module")
def popqa() -> TaskData:
    card, _ = load_task_card("popqa-sample")
    return load_task(card)


@pytest.fixture(scope="module")
def encoded(popqa: TaskData, tmp_path_factory):
    """pipelines/dense.yaml run once on the PopQA sample: (cache, result, corpus-encoding counter)."""
    cache = Cache(tmp_path_factory.mktemp("dense") / "cache")
    with counting() as counter:
        result = run_pipeline(load_pipeline(REPO / "pipelines/dense.yaml"), popqa, cache, QUIET)
    return cache, result, counter


def test_top_k_change_reuses_stored_embeddings(encoded, popqa: TaskData, tmp_path: Path) -> None:
    cache, first, counter = encoded
    assert counter.rows == len(popqa.corpus) == 1475
    matrices = list((cache.root / "artifacts").rglob("embeddings.npy"))
    assert len(matrices) == 1
    assert not list((cache.root / "work").rglob("*.npy"))  # the work folder was moved into the artifact

    text = (REPO / "pipelines/dense.yaml").read_text()
    assert "top_k: 1000" in text
    (tmp_path / "p.yaml").write_text(text.replace("top_k: 1000", "top_k: 100"))
    pipeline, problems = parse_pipeline(load_yaml(tmp_path / "p.yaml"))
    assert not problems, problems
    queries_encoded = []
    original = Dense._encode_queries
    with counting() as again, pytest.MonkeyPatch.context() as mp:
        mp.setattr(Dense, "_encode_queries",
                   lambda self, texts: queries_encoded.append(len(texts)) or original(self, texts))
        second = run_pipeline(pipeline, popqa, cache, QUIET)
    assert not second.final.cached  # the search ran again ...
    assert again.calls == 0  # ... without encoding a single document
    assert sum(queries_encoded) == len(popqa.queries)
    assert list((cache.root / "artifacts").rglob("embeddings.npy")) == matrices
    for qid, ranking in second.final.output.records.items():
        assert len(ranking) == 100
        assert ranking.docids == first.final.output.records[qid].docids[:100]


def test_exact_search_equals_brute_force(encoded, popqa: TaskData, monkeypatch) -> None:
    cache, _, _ = encoded
    monkeypatch.setattr(Dense, "block_rows", 200)  # 8 blocks: exercises the running top-k merge
    with counting() as counter:
        s = stage(cache, top_k=50)
        s.prepare(popqa)
    assert counter.calls == 0
    queries = popqa.queries[:60]
    rankings = s.search(queries)
    full = s._encode_queries([q.text for q in queries]) @ np.asarray(s.emb, dtype=np.float32).T  # queries x docs
    for i, q in enumerate(queries):
        order = np.argsort(-full[i], kind="stable")[:50]
        assert rankings[q.id].docids == s.corpus.id_at([int(j) for j in order])
        np.testing.assert_allclose(rankings[q.id].scores, full[i][order], rtol=1e-5, atol=1e-6)


def test_faiss_flat_top10_equals_exact(encoded, popqa: TaskData) -> None:
    cache, _, _ = encoded
    exact, flat = stage(cache, top_k=10), stage(cache, top_k=10, search="faiss_flat")
    exact.prepare(popqa)
    flat.prepare(popqa)
    assert list((cache.root / "artifacts").rglob("index.faiss"))
    queries = popqa.queries[:100]
    a, b = exact.search(queries), flat.search(queries)
    for q in queries:
        assert a[q.id].docids == b[q.id].docids
        np.testing.assert_allclose(a[q.id].scores, b[q.id].scores, atol=1e-5)


def test_faiss_hnsw_returns_top_k_and_agrees_with_exact(encoded, popqa: TaskData) -> None:
    cache, first, _ = encoded
    hnsw = stage(cache, top_k=1000, search="faiss_hnsw", hnsw={"ef_search": 64})  # widened to top_k when searching
    hnsw.prepare(popqa)
    queries = popqa.queries[:50]
    rankings = hnsw.search(queries)
    assert all(len(rankings[q.id]) == 1000 for q in queries)
    overlap = np.mean([len(set(rankings[q.id].docids[:10]) & set(first.final.output.records[q.id].docids[:10])) / 10
                       for q in queries])
    assert overlap >= 0.95


def test_interrupted_encoding_resumes_at_last_checkpoint(popqa: TaskData, tmp_path: Path) -> None:
    docs = next(popqa.corpus.batches(96))
    task = make_task(docs, popqa.queries[:5], "popqa-96")
    opts = {"batch_size": 16, "checkpoint_every": 1, "max_length": 32}  # 6 checkpoints of 16 docs
    cache = Cache(tmp_path / "cache")
    with counting(fail_after=2) as first, pytest.raises(KeyboardInterrupt):
        stage(cache, **opts).prepare(task)
    assert first.rows == 32
    assert not list((cache.root / "artifacts").rglob("embeddings.npy"))
    parts = sorted(p.name for p in (cache.root / "work").rglob("part-*.npy"))
    assert parts == ["part-0000000.npy", "part-0000001.npy"]

    with counting() as resumed:
        s = stage(cache, **opts)
        s.prepare(task)
    assert (resumed.calls, resumed.rows) == (4, 64)  # only the checkpoints not yet on disk
    assert not list((cache.root / "work").rglob("*.npy"))

    with counting() as fresh_count:
        fresh = stage(Cache(tmp_path / "fresh"), **opts)
        fresh.prepare(task)
    assert (fresh_count.calls, fresh_count.rows) == (6, 96)
    np.testing.assert_array_equal(np.asarray(s.emb), np.asarray(fresh.emb))
    assert s.search(task.queries) == fresh.search(task.queries)


FILLER = [
    "The community garden holds a seed swap every spring where neighbours trade tomato and bean varieties.",
    "Volunteers water the raised beds on weekday evenings and keep a log of rainfall and soil moisture.",
    "Compost bins at the north corner take kitchen scraps, leaves and shredded cardboard from local homes.",
    "Children from the primary school plant sunflowers along the fence and measure their height each week.",
]
NEEDLE = ("The Eiffel Tower in Paris was completed in 1889 for the World's Fair and designed by Gustave Eiffel's "
          "company.")


@pytest.fixture(scope="module")
def needle_task() -> TaskData:
    long_text = " ".join(FILLER * 4) + " " + NEEDLE  # ~380 tokens: the needle is in the last chunk
    docs = [
        Document("long", long_text, "Garden newsletter"),
        Document("paris", "Paris is the capital of France and known for its museums, cafes and the river Seine."),
        Document("bridge", "The Golden Gate Bridge in San Francisco opened in 1937 after four years of construction."),
        Document("garden", FILLER[0] + " " + FILLER[1]),
        Document("tower", "A radio tower was built on the hill outside the town in the 1960s."),
    ]
    return make_task(docs, [Query("q1", "When was the Eiffel Tower completed?")], "needle")


def _chunk_scores(s: Dense, task: TaskData, doc_id: str) -> np.ndarray:
    """The doc's chunk scores, from chunk texts re-encoded independently of the stored matrix."""
    spans = np.load(s.embeddings_path / "spans.npy")
    d = list(s.corpus).index(doc_id)
    text = task.corpus[doc_id].contents()
    chunks = [text[a:b] for a, b in spans[s.doc_offsets[d]:s.doc_offsets[d + 1]]]
    emb = s.model.encode(chunks, normalize_embeddings=True, convert_to_numpy=True)
    return emb @ s._encode_queries([task.queries[0].text])[0]


def test_chunking_maxp_scores_a_doc_by_its_best_chunk(needle_task: TaskData, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    chunking = {"size": 64, "stride": 48}
    maxp = stage(cache, chunking=chunking, top_k=5)
    maxp.prepare(needle_task)
    d = list(maxp.corpus).index("long")
    assert maxp.doc_offsets[d + 1] - maxp.doc_offsets[d] >= 5
    spans = np.load(maxp.embeddings_path / "spans.npy")
    text = needle_task.corpus["long"].contents()
    assert spans[maxp.doc_offsets[d]][0] == 0 and spans[maxp.doc_offsets[d + 1] - 1][1] == len(text)

    chunk_scores = _chunk_scores(maxp, needle_task, "long")
    assert int(np.argmax(chunk_scores)) == len(chunk_scores) - 1  # the needle's chunk, not the first
    ranking = maxp.search(needle_task.queries)["q1"]
    assert ranking.docids[0] == "long"
    assert ranking.scores[0] == pytest.approx(chunk_scores.max(), abs=1e-5)

    with counting() as counter:  # other aggregations and faiss reuse the same chunk matrix
        firstp = stage(cache, chunking=chunking, top_k=5, aggregate="firstp")
        mean = stage(cache, chunking=chunking, top_k=5, aggregate="mean")
        flat = stage(cache, chunking=chunking, top_k=5, search="faiss_flat")
        for s in (firstp, mean, flat):
            s.prepare(needle_task)
    assert counter.calls == 0
    first_rank = firstp.search(needle_task.queries)["q1"]
    first_scores = dict(zip(first_rank.docids, first_rank.scores, strict=True))
    assert first_scores["long"] == pytest.approx(chunk_scores[0], abs=1e-5)
    assert first_rank.docids[0] != "long"  # its first chunk is about gardening
    mean_rank = mean.search(needle_task.queries)["q1"]
    mean_scores = dict(zip(mean_rank.docids, mean_rank.scores, strict=True))
    assert mean_scores["long"] == pytest.approx(chunk_scores.mean(), abs=1e-5)
    flat_rank = flat.search(needle_task.queries)["q1"]
    assert flat_rank.docids == ranking.docids
    np.testing.assert_allclose(flat_rank.scores, ranking.scores, atol=1e-5)

    unchunked = stage(cache, top_k=5)  # truncated at 256 tokens, the needle is never seen
    unchunked.prepare(needle_task)
    assert unchunked.search(needle_task.queries)["q1"].docids[0] != "long"


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="not both"):
        DenseOptions(query_prefix="query: ", query_prompt_name="query")
    with pytest.raises(ValueError, match="skip text"):
        DenseOptions(chunking={"size": 10, "stride": 20})
    with pytest.raises(ValueError):
        DenseOptions(search="ivf")
    assert DenseOptions().model_dump()["top_k"] == 1000
