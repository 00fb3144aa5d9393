"""Sharded exact search: the shards' top-k merged are the unsharded top-k, to the bit, ties included.

Integer-valued vectors make every score an exact small integer in float32, so ties are many and
planted across every block and shard boundary; the reference is the full score matrix sorted by
(score desc, row asc). Then a real local Ray cluster (2 CPUs) runs the shards as Ray tasks.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ragbench.errors import RagbenchError
from ragbench.executors import ExecutorSpec
from ragbench.retrievers.vector_search import (
    MappedMatrix,
    block_grid,
    exact_search,
    merge,
    search_blocks,
    split_grid,
)


def tied(n: int, dim: int = 6, queries: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows and queries of small integers: scores are exact, and each query ties hundreds of rows."""
    rng = np.random.default_rng(seed)
    emb = rng.integers(-1, 2, size=(n, dim)).astype(np.float32)
    emb[n // 2:n // 2 + 5] = emb[3]  # the same row on both sides of the middle boundary
    return emb, rng.integers(-1, 2, size=(queries, dim)).astype(np.float32)


def reference(emb: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    full = q @ emb.T
    order = np.lexsort((np.broadcast_to(np.arange(len(emb)), full.shape), -full), axis=1)[:, :k]
    return order, np.take_along_axis(full, order, axis=1)


def sharded(emb: np.ndarray, q: np.ndarray, k: int, block_rows: int, shards: int,
            offsets: np.ndarray | None = None, how: str = "maxp") -> tuple[np.ndarray, np.ndarray]:
    """What the Ray path does, in process: each shard's running top-k, then the merge."""
    n_docs = len(emb) if offsets is None else len(offsets) - 1
    parts = split_grid(block_grid(n_docs, offsets, block_rows), offsets, shards)
    return merge([search_blocks(emb, q, k, blocks, offsets, how) for blocks in parts], k)  # type: ignore[arg-type]


def assert_same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].dtype == b[1].dtype and a[1].tobytes() == b[1].tobytes()


@pytest.mark.parametrize(("n", "k", "block_rows", "shards"), [
    (1000, 10, 100, 2),    # many ties at the k-th score, in every block
    (1000, 300, 90, 7),    # k larger than a block and than a shard
    (1000, 1, 1000, 3),    # one block: shards 2 and 3 are empty
    (257, 257, 64, 4),     # k = n
])
def test_merge_equals_unsharded_and_reference_with_ties(n: int, k: int, block_rows: int, shards: int) -> None:
    emb, q = tied(n)
    local = exact_search(emb, q, k, block_rows=block_rows)
    assert_same(local, reference(emb, q, k))
    assert_same(sharded(emb, q, k, block_rows, shards), local)
    assert_same(exact_search(emb, q, k, block_rows=n), local)  # blocking never changes the answer
    kth = local[1][:, -1:]
    assert ((q @ emb.T) == kth).sum(axis=1).max() > 1  # the ties were there to break


def test_k_larger_than_corpus_pads_with_minus_one() -> None:
    emb, q = tied(50)
    ids, scores = exact_search(emb, q, 80, block_rows=16)
    assert ids.shape == scores.shape == (len(q), 80)
    assert (ids[:, 50:] == -1).all() and np.isneginf(scores[:, 50:]).all()
    assert_same((ids[:, :50], scores[:, :50]), reference(emb, q, 50))
    assert_same(sharded(emb, q, 80, 16, 3), (ids, scores))


def test_empty_shards_and_empty_corpus() -> None:
    emb, q = tied(30)
    grid = block_grid(30, None, 10)
    assert [len(s) for s in split_grid(grid, None, 5)] == [1, 1, 0, 1, 0]
    assert_same(sharded(emb, q, 12, 10, 5), exact_search(emb, q, 12, block_rows=10))
    nothing = exact_search(emb[:0], q, 3)
    assert (nothing[0] == -1).all() and nothing[0].shape == (len(q), 3)


def test_float_scores_are_bitwise_equal_across_shards() -> None:
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((5000, 48)).astype(np.float32)
    emb[2499] = emb[2500] = emb[7]  # equal float32 scores across the shard boundary (2 shards of 2,500)
    q = rng.standard_normal((30, 48)).astype(np.float32)
    q[0] = emb[7]  # these three rows are query 0's best, tied
    local = exact_search(emb, q, 100, block_rows=500)
    assert list(local[0][0, :3]) == [7, 2499, 2500]
    assert local[1][0, 0] == local[1][0, 1] == local[1][0, 2]
    for shards in (2, 3, 10):
        assert_same(sharded(emb, q, 100, 500, shards), local)
    np.testing.assert_allclose(local[1], reference(emb, q, 100)[1], rtol=1e-5)
    for i in (0, 29):  # a query alone (BLAS would take its one-row kernel) scores as in its batch
        assert_same(exact_search(emb, q[i:i + 1], 100, block_rows=500), (local[0][i:i + 1], local[1][i:i + 1]))
        assert_same(exact_search(emb, q[i:i + 2], 100, block_rows=500), (local[0][i:i + 2], local[1][i:i + 2]))


@pytest.mark.parametrize("how", ["maxp", "firstp", "mean"])
def test_chunked_docs_never_split_and_merge_exactly(how: str) -> None:
    rng = np.random.default_rng(2)
    counts = rng.integers(1, 5, size=400)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    emb = rng.integers(-1, 2, size=(int(offsets[-1]), 6)).astype(np.float32)
    q = rng.integers(-1, 2, size=(25, 6)).astype(np.float32)
    local = exact_search(emb, q, 40, doc_offsets=offsets, how=how, block_rows=70)  # type: ignore[arg-type]
    for d0, d1 in block_grid(400, offsets, 70):  # blocks hold whole docs
        assert d1 > d0
    assert_same(sharded(emb, q, 40, 70, 4, offsets, how), local)
    assert_same(exact_search(emb, q, 40, doc_offsets=offsets, how=how, block_rows=10_000), local)  # type: ignore[arg-type]


def test_a_missing_matrix_file_is_one_line() -> None:
    with pytest.raises(RagbenchError, match="shares"):
        MappedMatrix("/nonexistent/embeddings.npy", 128, (3, 4), "<f4").open()


# -- a real Ray cluster ----------------------------------------------------------------------------
RAY = ExecutorSpec(kind="ray", workers=2)


class _Sigaction(ctypes.Structure):
    """glibc's `struct sigaction` on Linux (x86-64 and aarch64)."""

    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]


def segv_handler() -> int | None:
    """The address of this process's SIGSEGV handler (None for the default), read with sigaction(2)."""
    action = _Sigaction()
    assert ctypes.CDLL(None, use_errno=True).sigaction(signal.SIGSEGV, None, ctypes.byref(action)) == 0
    return action.handler


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[tuple[object, int | None, int | None]]:
    """A local Ray cluster of 2 CPUs started as ragbench starts it, with the SIGSEGV handler before and after."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ragbench[ray]')")
    from ragbench.executors import ray_session

    started = not ray.is_initialized()
    with contextlib.suppress(Exception):  # Lucene's JVM, when installed, runs in the process as in a pipeline
        from ragbench._java import start_jvm

        start_jvm()
    before = segv_handler()
    ray_session(RAY)
    yield ray, before, segv_handler()
    if started:
        ray.shutdown()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads glibc's struct sigaction")
def test_ray_leaves_the_jvm_its_segv_handler(ray_cluster: tuple[object, int | None, int | None]) -> None:
    """The JVM handles its own SIGSEGVs (safepoint polls, null checks): Ray's failure handler installed over it
    killed the test process at random in a Lucene test run after a Ray one."""
    _, before, after = ray_cluster
    if before is None:
        pytest.skip("no JVM in this process (engine 'lucene' is not installed), or Ray started before it")
    assert after == before


def test_ray_shards_match_local_search_bitwise(ray_cluster: object, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((6000, 32)).astype(np.float32)
    emb[2999] = emb[3000] = emb[11]  # a float32 tie across the boundary of the 2 shards
    np.save(tmp_path / "embeddings.npy", emb)
    mapped = np.load(tmp_path / "embeddings.npy", mmap_mode="r")
    assert MappedMatrix.of(mapped) is not None and MappedMatrix.of(mapped[10:]) is None
    q = rng.standard_normal((50, 32)).astype(np.float32)
    q[0] = emb[11]
    local = exact_search(mapped, q, 200, block_rows=1000)
    ray_mapped = exact_search(mapped, q, 200, block_rows=1000, executor=RAY)  # workers map the .npy
    assert_same(ray_mapped, local)
    assert list(ray_mapped[0][0, :3]) == [11, 2999, 3000]
    assert_same(exact_search(emb, q, 200, block_rows=1000, executor=RAY), local)  # rows via the object store
    assert_same(exact_search(tmp_path / "embeddings.npy", q, 200, block_rows=1000, executor=RAY, shards=5), local)
    offsets = np.arange(0, 6001, 3, dtype=np.int64)  # 2,000 docs of 3 chunks
    assert_same(exact_search(mapped, q, 50, doc_offsets=offsets, block_rows=700, executor=RAY),
                exact_search(mapped, q, 50, doc_offsets=offsets, block_rows=700))


def test_ray_worker_without_the_matrix_file_fails_in_one_line(ray_cluster: object, tmp_path: Path) -> None:
    path = tmp_path / "embeddings.npy"
    np.save(path, np.ones((10, 4), dtype=np.float32))
    mapped = np.load(path, mmap_mode="r")
    path.unlink()  # the driver's mapping survives; a worker cannot open the file
    with pytest.raises(RagbenchError, match="filesystem every node shares"):
        exact_search(mapped, np.ones((2, 4), dtype=np.float32), 3, executor=RAY)
