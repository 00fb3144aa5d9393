"""The resumable corpus encoder shared by dense and sparse retrieval (retrievers/encoding.py).

Both row stores (dense: one memory-mapped matrix; sparse: one file per part) go through the same
protocol: a run killed in a middle part resumes after the last finished part and gives the same
artifact as an uninterrupted run; a progress file from other settings, or one that claims rows
whose part files are gone, is not trusted; the work folder is gone once the artifact exists.
The encoders here are plain functions of the text, so the protocol is checked without a model
(tests/test_dense.py and tests/test_sparse.py run it with the real encoders).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from ragbench.cache import Cache
from ragbench.progress import Reporter
from ragbench.retrievers.dense_encoder import DenseCorpusEncoding
from ragbench.retrievers.encoding import PROGRESS
from ragbench.retrievers.sparse_index import SparseCorpusEncoding, to_csr
from ragbench.stage import StageEnv
from ragbench.types import Document

KEY = "e" * 64
DOCS = [Document(f"d{i}", f"text number {i} " + "word " * (i % 5), f"title {i}") for i in range(23)]
TEXTS = [d.contents(("title", "text")) for d in DOCS]


def env(root: Path) -> StageEnv:
    return StageEnv(Cache(root), Reporter(quiet=True), "test")


class Encoder:
    """Encodes a text as a function of its number; fails on call `fail_on` (1-based) like a killed run."""

    def __init__(self, fail_on: int | None = None):
        self.fail_on, self.calls, self.rows = fail_on, 0, 0

    def _count(self, texts: list[str]) -> list[int]:
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        self.rows += len(texts)
        return [int(t.split()[1]) for t in texts]  # "title i text number i ..." -> i

    def dense(self, texts: list[str]) -> np.ndarray:
        return np.array([[n, n * n, 1.0] for n in self._count(texts)], dtype=np.float32)

    def sparse(self, texts: list[str]) -> tuple[sparse.csr_matrix, np.ndarray]:
        ns = self._count(texts)
        return to_csr([{n: 1.0 + n, 30 + n % 3: 0.5} for n in ns], 40), np.array([[n] for n in ns], dtype=np.float32)


def dense_encoding(root: Path, encoder: Encoder, dtype: str = "float32") -> DenseCorpusEncoding:
    return DenseCorpusEncoding(env(root), KEY, 4, "dense", DOCS, ("title", "text"), encoder.dense, lambda: 3,
                               dtype, None, {"model": "test"})


def sparse_encoding(root: Path, encoder: Encoder, chunk_docs: int = 4) -> SparseCorpusEncoding:
    return SparseCorpusEncoding(env(root), KEY, TEXTS, encoder.sparse, 40, 2, chunk_docs, "sparse")


def read_dense(path: Path) -> tuple[np.ndarray]:
    return (np.load(path / "embeddings.npy"),)


def read_sparse(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return sparse.load_npz(path / "docs.npz").toarray(), np.load(path / "dense.npy")


@pytest.mark.parametrize(("make", "read", "part_calls"), [
    (dense_encoding, read_dense, 1),  # dense: one encoder call per part of 4 rows
    (sparse_encoding, read_sparse, 2),  # sparse: parts of 4 rows in batches of 2
], ids=["dense", "sparse"])
def test_a_run_killed_in_a_middle_part_resumes_after_the_last_finished_part(tmp_path, make, read, part_calls):
    killed = Encoder(fail_on=2 * part_calls + 1)  # dies in the third of six parts
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "a", killed).run()
    cache = Cache(tmp_path / "a")
    assert not cache.artifact_path(KEY).exists()
    assert json.loads((cache.work_dir(KEY) / PROGRESS).read_text())["done"] == 8

    resumed = Encoder()
    path = make(tmp_path / "a", resumed).run()
    assert resumed.rows == len(DOCS) - 8  # only the parts not yet on disk
    assert not cache.work_dir(KEY).exists()

    fresh = Encoder()
    reference = make(tmp_path / "b", fresh).run()
    assert fresh.rows == len(DOCS)
    for got, want in zip(read(path), read(reference), strict=True):
        np.testing.assert_array_equal(got, want)

    again = Encoder()
    assert make(tmp_path / "a", again).run() == path and again.calls == 0  # the artifact is reused as it is


def test_dense_progress_from_other_settings_starts_over(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        dense_encoding(tmp_path, Encoder(fail_on=3)).run()  # two float32 parts on disk
    half = Encoder()
    path = dense_encoding(tmp_path, half, dtype="float16").run()  # same key on purpose: only the settings differ
    assert half.rows == len(DOCS)  # float32 rows are not reused as float16 ones
    emb = read_dense(path)[0]
    assert emb.dtype == np.float16 and emb[:, 0].tolist() == list(range(len(DOCS)))


def test_sparse_progress_is_not_trusted_beyond_the_parts_on_disk(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        sparse_encoding(tmp_path, Encoder(fail_on=7)).run()  # three parts of 4 finished
    work = Cache(tmp_path).work_dir(KEY)
    assert json.loads((work / PROGRESS).read_text())["done"] == 12
    (work / f"{4:010d}.npz").unlink()  # the second part is lost: only the first can be trusted
    resumed = Encoder()
    path = sparse_encoding(tmp_path, resumed).run()
    assert resumed.rows == len(DOCS) - 4
    m, dense = read_sparse(path)
    assert [m[i, i] for i in range(len(DOCS))] == [1.0 + i for i in range(len(DOCS))]
    assert dense[:, 0].tolist() == list(range(len(DOCS)))


def test_sparse_parts_of_another_size_are_not_mixed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        sparse_encoding(tmp_path, Encoder(fail_on=5), chunk_docs=4).run()  # two parts of 4 finished
    resumed = Encoder()
    path = sparse_encoding(tmp_path, resumed, chunk_docs=6).run()
    assert resumed.rows == len(DOCS)  # other part boundaries: started over
    m, _ = read_sparse(path)
    assert [m[i, i] for i in range(len(DOCS))] == [1.0 + i for i in range(len(DOCS))]
