"""The Arrow corpus store: what a JSONL corpus becomes (rows, fingerprint, errors), lookups by id, streaming
ranges, pickling by path, and reuse of the converted store from the cache."""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ragbench import corpus_store
from ragbench.cache import Cache
from ragbench.errors import RagbenchError
from ragbench.tasks import beir
from ragbench.tasks.beir import load_corpus
from ragbench.types import Corpus, Document
from tests.conftest import SHARED_DATA

RECORDS = [
    {"_id": 1, "title": "One", "text": "uno", "lang": "es"},
    {"id": "2", "text": "dos"},
    {"id": "tres", "title": None, "text": "", "nested": {"a": [1, 2.5, None, True]}, "note": "naïve – café"},
    {"id": "4", "title": "Four", "text": "four words of text", "links": ["1", "tres"]},
]


def write_corpus(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def expected_docs() -> list[Document]:
    out = []
    for r in RECORDS:
        extra = {k: v for k, v in r.items() if k not in ("_id", "id", "title", "text")}
        out.append(Document(str(r.get("_id", r.get("id"))), r["text"], r.get("title") or "", extra))
    return out


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    lines = [json.dumps(RECORDS[0]), "", json.dumps(RECORDS[1]), *(json.dumps(r, ensure_ascii=False)
                                                                    for r in RECORDS[2:])]
    return write_corpus(tmp_path / "corpus.jsonl.gz", lines)


def big_corpus(n: int = 10_000) -> list[Document]:
    """More rows than one record batch (4,096), so that ranges cross batch boundaries."""
    return [Document(f"doc{i}", f"text {i}", f"T{i}" if i % 3 else "", {"n": i} if i % 5 == 0 else {})
            for i in range(n)]


# -- what a JSONL corpus becomes ---------------------------------------------------------------------------
def test_round_trip_ids_titles_texts_extra(corpus_file: Path, tmp_path: Path) -> None:
    corpus = load_corpus(corpus_file, Cache(tmp_path / "cache"))
    want = expected_docs()
    assert list(corpus) == [d.id for d in want] == ["1", "2", "tres", "4"]
    assert len(corpus) == 4 and corpus.source == str(corpus_file)
    assert [d for batch in corpus.batches() for d in batch] == want
    assert [corpus[d.id] for d in want] == want
    assert corpus["tres"].extra["nested"] == {"a": [1, 2.5, None, True]} and corpus["tres"].title == ""
    assert list(corpus.texts()) == [d.contents() for d in want]
    assert list(corpus.texts(("links",))) == [d.contents(("links",)) for d in want]


def test_fingerprint_is_the_digest_of_the_raw_lines(corpus_file: Path, tmp_path: Path) -> None:
    """Every cache key depends on it: the sha256 of the raw (gunzipped) lines, blank ones included."""
    corpus = load_corpus(corpus_file, Cache(tmp_path / "cache"))
    assert corpus.fingerprint == hashlib.sha256(gzip.decompress(corpus_file.read_bytes())).hexdigest()


@pytest.mark.parametrize(("task", "fingerprint", "n"), [
    ("scifact", "eedd9f6c0e0823d29c15fd9a2255ce386f91961b93a804c748209d51413800df", 5183),
    ("popqa", "de47c2357fda01f329e4192d786c3f526e2cdf5b319d5a2a66c5e7d82ef11b32", 1475),
])
def test_shared_corpora_keep_their_fingerprints(task: str, fingerprint: str, n: int, tmp_path: Path) -> None:
    """The fingerprints the dict-based loader computed (reference runs are cached under keys made from them)."""
    path = SHARED_DATA / task / "corpus.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    corpus = load_corpus(path, Cache(tmp_path / "cache"))
    assert (corpus.fingerprint, len(corpus)) == (fingerprint, n)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        first = json.loads(f.readline())
    doc = corpus[str(first.get("_id", first.get("id")))]
    assert (doc.title, doc.text) == (first.get("title") or "", first["text"])


def test_duplicate_id_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    lines = [json.dumps({"id": "a", "text": "x"}), "", json.dumps({"id": "b", "text": "y"}),
             json.dumps({"id": "c", "text": "z"}), json.dumps({"_id": "b", "text": "again"}),
             json.dumps({"id": "a", "text": "later"})]
    path = write_corpus(tmp_path / "corpus.jsonl.gz", lines)
    with pytest.raises(RagbenchError) as err:
        load_corpus(path, Cache(tmp_path / "cache"))
    (problem,) = err.value.problems
    assert (problem.file, problem.line, problem.path) == (str(path), 5, "id")  # b repeats first (line 5)
    assert "duplicate document id 'b'" in problem.message and "\n" not in str(err.value)
    assert not any((tmp_path / "cache").rglob(corpus_store.DATA))  # nothing half-built is kept


@pytest.mark.parametrize(("line", "message", "field"), [
    ('{"id": "b", "text": "y"', "not valid JSON", ""),
    ('["b", "y"]', "expected a JSON object", ""),
    ('{"id": "b", "title": "no text"}', "missing or non-string 'text'", "text"),
    ('{"text": "no id"}', "missing 'id'", "id"),
])
def test_malformed_line_is_located(tmp_path: Path, line: str, message: str, field: str) -> None:
    path = write_corpus(tmp_path / "corpus.jsonl", [json.dumps({"id": "a", "text": "x"}), line])
    with pytest.raises(RagbenchError) as err:
        load_corpus(path, Cache(tmp_path / "cache"))
    (problem,) = err.value.problems
    assert (problem.file, problem.line, problem.path) == (str(path), 2, field)
    assert message in problem.message


# -- lookups ------------------------------------------------------------------------------------------------
def test_lookup_present_and_absent_ids(corpus_file: Path, tmp_path: Path) -> None:
    corpus = load_corpus(corpus_file, Cache(tmp_path / "cache"))
    assert "tres" in corpus and "3" not in corpus and 1 not in corpus and "" not in corpus
    assert corpus.get("missing") is None
    with pytest.raises(KeyError):
        corpus["missing"]
    assert corpus.rows(["4", "missing", "1"]).tolist() == [3, -1, 0]
    fetched = corpus.fetch(["4", "missing", "1", "4"])
    assert list(fetched) == ["4", "1"] and fetched["1"].text == "uno"


def test_lookups_survive_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a hash that collides often, the id stored at the row still decides (lookups and duplicates)."""
    monkeypatch.setattr(corpus_store, "id_hashes",
                        lambda ids: np.array([len(i) % 3 for i in ids], dtype=np.uint64))
    docs = [Document(f"d{'x' * i}", f"text {i}") for i in range(40)]
    corpus = Corpus(docs, "fp")
    assert [corpus[d.id] for d in docs] == docs
    assert corpus.rows(["dxx", "nope", "d"]).tolist() == [2, -1, 0]
    with pytest.raises(ValueError, match="duplicate document id 'dxx'"):
        Corpus([*docs[:5], Document("dxx", "again")], "fp")


def test_fetch_of_a_hundred_scattered_documents_is_vectorised() -> None:
    docs = big_corpus(20_000)
    corpus = Corpus(docs, "fp")
    rng = np.random.default_rng(0)
    rows = rng.choice(len(docs), size=100, replace=False).tolist()
    fetched = corpus.fetch([docs[r].id for r in rows])
    assert list(fetched.values()) == [docs[r] for r in rows]
    assert corpus.at(rows) == [docs[r] for r in rows]


# -- streaming ranges ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "start", "stop"), [
    (1024, 0, None), (1000, 10, 5015), (4096, 4000, 8300), (7, 4090, 4100), (3, 9998, None), (5, 20, 10),
    (100, -50, None), (64, 0, 0),
])
def test_batches_texts_and_id_at_ranges(size: int, start: int, stop: int | None) -> None:
    docs = big_corpus()
    corpus = Corpus(docs, "fp")
    want = docs[start:stop]
    batches = list(corpus.batches(size=size, start=start, stop=stop))
    assert all(len(b) == size for b in batches[:-1]) and all(0 < len(b) <= size for b in batches)
    assert [d for b in batches for d in b] == want
    assert list(corpus.texts(start=start, stop=stop)) == [d.contents() for d in want]
    assert list(corpus.texts(("text", "title"), start, stop)) == [d.contents(("text", "title")) for d in want]
    assert list(corpus.texts(("n", "text"), start, stop)) == [d.contents(("n", "text")) for d in want]
    rows = list(range(len(docs)))[start:stop][::-1]
    assert corpus.id_at(rows) == [docs[r].id for r in rows]


def test_iteration_is_file_order_and_mapping_equality() -> None:
    docs = big_corpus(5000)
    corpus = Corpus({d.id: d for d in docs}, "fp")
    assert list(corpus) == [d.id for d in docs]
    assert corpus == Corpus.from_documents(docs, "other fingerprint")
    with pytest.raises(IndexError):
        corpus.id_at([5000])


# -- pickling and workers ---------------------------------------------------------------------------------
def _texts(corpus: Corpus, start: int, stop: int) -> tuple[list[str], str]:
    return list(corpus.texts(start=start, stop=stop)), str(corpus.store.folder)


def test_pickling_reopens_the_store_by_path(tmp_path: Path) -> None:
    docs = big_corpus(20_000)
    lines = [json.dumps({"id": d.id, "title": d.title, "text": d.text, **d.extra}) for d in docs]
    path = write_corpus(tmp_path / "corpus.jsonl", lines)
    corpus = load_corpus(path, Cache(tmp_path / "cache"))
    blob = pickle.dumps(corpus)
    assert len(blob) < 2000  # the folder's path, not 20,000 documents
    again = pickle.loads(blob)
    assert again.store.folder == corpus.store.folder and again.fingerprint == corpus.fingerprint
    assert again.source == corpus.source and again.at([0, 19_999]) == [docs[0], docs[-1]]
    # a worker process (as a Ray actor gets it) reads its range from the same files
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        texts, folder = pool.submit(_texts, corpus, 4000, 4200).result()
    assert texts == [d.contents() for d in docs[4000:4200]] and folder == str(corpus.store.folder)
    in_memory = Corpus(docs[:10], "fp")
    assert pickle.loads(pickle.dumps(in_memory)) == in_memory  # an in-memory corpus travels with its rows


# -- the cache ----------------------------------------------------------------------------------------------
def test_converted_corpus_is_reused_not_reread(corpus_file: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path / "cache")
    first = load_corpus(corpus_file, cache)

    def fail(*args: object) -> None:
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(beir, "convert_corpus", fail)
    monkeypatch.setattr(beir, "json_records", fail)
    again = load_corpus(corpus_file, cache)
    assert again.store.folder == first.store.folder and again.fingerprint == first.fingerprint
    assert again == first
    monkeypatch.undo()
    # an edited file (another size or modification time) is converted anew
    write_corpus(corpus_file, [json.dumps({"id": "new", "text": "only"})])
    os.utime(corpus_file, ns=(1, 1))
    edited = load_corpus(corpus_file, cache)
    assert list(edited) == ["new"] and edited.store.folder != first.store.folder
    assert edited.fingerprint != first.fingerprint
