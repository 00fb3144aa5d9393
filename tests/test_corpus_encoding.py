"""The resumable corpus encoder shared by dense and sparse retrieval (retrievers/encoding.py).

Both row stores (dense: one `.npy` per part; sparse: one `.npz`, and `.dense.npy`, per part) go
through the same protocol: parts are fixed row ranges, done is the set of parts present and valid
(not a prefix), and a run killed in a middle part, or one that lost a part, encodes only the parts
that are missing and gives the same artifact as an uninterrupted run; parts made under other
settings are never mixed in, a truncated part is encoded again, and the work folder is gone once the
artifact exists. The encoders here are plain functions of the text, so the protocol is checked
without a model (tests/test_dense.py, tests/test_sparse.py and tests/test_ray_encoding.py run it with
the real encoders, in this process and on Ray).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from ragbench.cache import Cache
from ragbench.progress import Reporter
from ragbench.retrievers.dense_encoder import DenseCorpusEncoding
from ragbench.retrievers.encoding import SETTINGS
from ragbench.retrievers.sparse_encoding import SparseCorpusEncoding
from ragbench.retrievers.sparse_index import to_csr
from ragbench.stage import StageEnv
from ragbench.types import Corpus, Document

KEY = "e" * 64
FIELDS = ("title", "text")
DOCS = [Document(f"d{i}", f"text number {i} " + "word " * (i % 5), f"title {i}") for i in range(23)]
CORPUS = Corpus({d.id: d for d in DOCS}, "docs-23")


def env(root: Path) -> StageEnv:
    return StageEnv(Cache(root), Reporter(quiet=True), "test")


class Encoder:
    """Encodes a text as a function of its number; fails on call `fail_on` (1-based) like a killed run."""

    def __init__(self, fail_on: int | None = None, kind: str = "dense"):
        self.fail_on, self.kind, self.calls, self.rows, self.seen = fail_on, kind, 0, 0, set()

    def load(self) -> None:
        pass

    def __call__(self, texts: list[str]):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        self.rows += len(texts)
        ns = [int(t.split()[1]) for t in texts]  # "title i text number i ..." -> i
        self.seen |= set(ns)
        if self.kind == "dense":
            return np.array([[n, n * n, 1.0] for n in ns], dtype=np.float32)
        return to_csr([{n: 1.0 + n, 30 + n % 3: 0.5} for n in ns], 40), np.array([[n] for n in ns], dtype=np.float32)


def dense_encoding(root: Path, encoder: Encoder, dtype: str = "float32") -> DenseCorpusEncoding:
    return DenseCorpusEncoding(env(root), KEY, 4, "dense", CORPUS, FIELDS, encoder, lambda: 3, dtype, None,
                               {"model": "test"})


def sparse_encoding(root: Path, encoder: Encoder, part_rows: int = 4) -> SparseCorpusEncoding:
    encoder.kind = "sparse"
    return SparseCorpusEncoding(env(root), KEY, CORPUS, FIELDS, encoder, 40, 2, part_rows, "sparse")


def read_dense(path: Path) -> tuple[np.ndarray]:
    return (np.load(path / "embeddings.npy"),)


def read_sparse(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return sparse.load_npz(path / "docs.npz").toarray(), np.load(path / "dense.npy")


def parts_on_disk(root: Path) -> list[str]:
    return sorted(p.name for p in Cache(root).work_dir(KEY).glob("part-*") if not p.name.endswith(".dense.npy"))


CASES = pytest.mark.parametrize(("make", "read", "part_calls", "suffix"), [
    (dense_encoding, read_dense, 1, ".npy"),  # dense: one encoder call per part of 4 rows
    (sparse_encoding, read_sparse, 2, ".npz"),  # sparse: parts of 4 rows in batches of 2
], ids=["dense", "sparse"])


@CASES
def test_a_run_killed_in_a_middle_part_encodes_only_the_missing_parts(tmp_path, make, read, part_calls, suffix):
    killed = Encoder(fail_on=2 * part_calls + 1)  # dies in the third of six parts
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "a", killed).run()
    cache = Cache(tmp_path / "a")
    assert not cache.artifact_path(KEY).exists()
    assert parts_on_disk(tmp_path / "a") == [f"part-{i:07d}{suffix}" for i in (0, 1)]

    resumed = Encoder()
    path = make(tmp_path / "a", resumed).run()
    assert resumed.rows == len(DOCS) - 8 and resumed.seen == set(range(8, len(DOCS)))  # only the missing parts
    assert not cache.work_dir(KEY).exists()

    fresh = Encoder()
    reference = make(tmp_path / "b", fresh).run()
    assert fresh.rows == len(DOCS)
    for got, want in zip(read(path), read(reference), strict=True):
        np.testing.assert_array_equal(got, want)

    again = Encoder()
    assert make(tmp_path / "a", again).run() == path and again.calls == 0  # the artifact is reused as it is


@CASES
def test_done_is_the_set_of_valid_parts_not_a_prefix(tmp_path, make, read, part_calls, suffix):
    """Parts finish in any order on a cluster: a hole is filled, the parts after it are kept; a cut-short part is
    encoded again."""
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path, Encoder(fail_on=4 * part_calls + 1)).run()  # parts 0-3 finished
    work = Cache(tmp_path).work_dir(KEY)
    (work / f"part-{1:07d}{suffix}").unlink()  # lost: a hole before parts 2 and 3
    cut = work / f"part-{3:07d}{suffix}"
    cut.write_bytes(cut.read_bytes()[:40])  # truncated (not by our atomic writes, but a disk can)
    resumed = Encoder()
    path = make(tmp_path, resumed).run()
    assert resumed.seen == set(range(4, 8)) | set(range(12, len(DOCS)))  # parts 1, 3, 4, 5
    reference = make(tmp_path / "b", Encoder()).run()
    for got, want in zip(read(path), read(reference), strict=True):
        np.testing.assert_array_equal(got, want)


def test_dense_parts_from_other_settings_are_not_reused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        dense_encoding(tmp_path, Encoder(fail_on=3)).run()  # two float32 parts on disk
    assert Cache(tmp_path).get_json(Cache(tmp_path).work_dir(KEY) / SETTINGS)["dtype"] == "float32"
    again = Encoder()
    path = dense_encoding(tmp_path, again, dtype="float16").run()  # same key on purpose: only the settings differ
    assert again.rows == len(DOCS)  # float32 rows are not reused as float16 ones
    emb = read_dense(path)[0]
    assert emb.dtype == np.float16 and emb[:, 0].tolist() == list(range(len(DOCS)))


def test_sparse_parts_of_another_size_are_not_mixed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        sparse_encoding(tmp_path, Encoder(fail_on=5), part_rows=4).run()  # two parts of 4 finished
    resumed = Encoder()
    path = sparse_encoding(tmp_path, resumed, part_rows=6).run()
    assert resumed.rows == len(DOCS)  # other part boundaries: started over
    m, _ = read_sparse(path)
    assert [m[i, i] for i in range(len(DOCS))] == [1.0 + i for i in range(len(DOCS))]
