"""Inner-product search over a memory-mapped corpus matrix, exact or through faiss.

Rows are documents, or chunks stored doc by doc (`doc_offsets` maps docs to their rows; a doc's
score aggregates its chunks': maxp = best chunk, firstp = first chunk, mean = mean of them all).

exact       blocks of the matrix times the query batch, with a running top-k per query; the full
            docs x queries score matrix never exists. Chunk aggregation is exact. The matrix is
            memory-mapped and read a block at a time, so one larger than memory is searched in
            place (its pages are clean, evictable page cache). Under a Ray executor the blocks are
            split into contiguous shards, one Ray task each (it maps the cached .npy itself: one
            machine or a shared filesystem), and the shards' top-k are merged into the exact top-k.
faiss_flat  faiss IndexFlatIP (exhaustive inner product), built from the matrix, cached.
faiss_hnsw  faiss IndexHNSWFlat with inner product (approximate), cached; efSearch is a
            search-time setting, widened to the search depth.

With chunks, faiss returns the `depth` best chunks; their docs are the candidates, each rescored
exactly over all its chunks from the matrix (docs/methods.md, "Dense retrieval and MaxP chunking").

Exact top-k is a function of the scores alone: docs are ordered by (score desc, row asc), a strict
order, so the k best of each block's (or shard's) k best are the k best overall, whatever the
blocks or shards. Shards are whole blocks of the local grid, so every block is the same matrix
product as in-process (same shapes: BLAS may round differently for other shapes) and a sharded
search returns the same ids and bitwise the same scores.
"""

from __future__ import annotations

import functools
import mmap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ragbench.cache import make_key
from ragbench.errors import RagbenchError
from ragbench.executors import LOCAL, ExecutorSpec

if TYPE_CHECKING:
    from ragbench.stage import StageEnv

Aggregate = Literal["maxp", "firstp", "mean"]
Hits = tuple[np.ndarray, np.ndarray]  # (doc ids, scores), queries x k; id -1 where fewer than k were found
MIN_QUERY_ROWS = 16  # query batches are scored at least this tall (search_blocks)


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best by (score desc, id asc), unordered (Ranking.from_scores sorts them).

    A k-largest selection alone keeps arbitrary members of a tie at the k-th score, and which ones
    would depend on how the rows were blocked or sharded; the rows where it had a choice are settled by id.
    """
    if scores.shape[1] <= k:
        return scores, ids
    part = _k_largest(scores, k)
    best_s, best_i = np.take_along_axis(scores, part, axis=1), np.take_along_axis(ids, part, axis=1)
    kth = best_s.min(axis=1, keepdims=True)
    for r in np.flatnonzero((scores == kth).sum(axis=1) > (best_s == kth).sum(axis=1)):
        above = np.flatnonzero(scores[r] > kth[r])  # all of them are among the k best
        tied = np.flatnonzero(scores[r] == kth[r])
        keep = np.concatenate([above, tied[np.argsort(ids[r][tied], kind="stable")[:k - len(above)]]])
        best_s[r], best_i[r] = scores[r][keep], ids[r][keep]
    return best_s, best_i


def _k_largest(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of k largest per row, ties arbitrary: torch.topk is 5-10x faster than np.argpartition here."""
    try:
        import torch
    except ImportError:
        return np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
    return torch.topk(torch.from_numpy(scores), k, dim=1, sorted=False).indices.numpy()


def merge(parts: Sequence[Hits], k: int) -> Hits:
    """The k best of parts' (ids, scores), ordered by (score desc, id asc), padded to k with id -1.

    Exact when each part holds its own rows' k best: (score desc, id asc) is a strict order.
    """
    ids = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([p[1] for p in parts], axis=1)
    scores, ids = top_k(scores, ids, k)
    order = np.lexsort((ids, -scores), axis=1)
    ids, scores = np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)
    if ids.shape[1] < k:
        pad = (len(ids), k - ids.shape[1])
        ids = np.concatenate([ids, np.full(pad, -1, dtype=ids.dtype)], axis=1)
        scores = np.concatenate([scores, np.full(pad, -np.inf, dtype=scores.dtype)], axis=1)
    return ids, scores


def aggregate(scores: np.ndarray, starts: np.ndarray, counts: np.ndarray, how: Aggregate) -> np.ndarray:
    """Chunk scores (queries x rows, docs' rows contiguous from `starts`) -> doc scores."""
    if how == "maxp":
        return np.maximum.reduceat(scores, starts, axis=1)
    if how == "firstp":
        return scores[:, starts]
    return np.add.reduceat(scores, starts, axis=1) / counts


def block_grid(n_docs: int, doc_offsets: np.ndarray | None, block_rows: int) -> list[tuple[int, int]]:
    """The doc ranges [d0, d1) scored one matrix product each: about `block_rows` rows; a doc's chunks never split."""
    grid, d0 = [], 0
    while d0 < n_docs:
        if doc_offsets is None:
            d1 = min(d0 + block_rows, n_docs)
        else:
            r0 = int(doc_offsets[d0])
            d1 = max(d0 + 1, int(np.searchsorted(doc_offsets, r0 + block_rows, side="right")) - 1)
            d1 = min(d1, n_docs)
        grid.append((d0, d1))
        d0 = d1
    return grid


def search_blocks(emb: np.ndarray, q: np.ndarray, k: int, blocks: Sequence[tuple[int, int]],
                  doc_offsets: np.ndarray | None = None, how: Aggregate = "maxp") -> Hits:
    """The k best docs of `blocks` per query (unordered), keeping a running top-k: one shard's work.

    Fewer than 16 queries are padded with zero rows: BLAS picks other kernels (GEMV for one row,
    small-matrix ones) for a short query batch, whose rounding differs, and a query's scores should
    not depend on how the queries were batched (measured with OpenBLAS: identical for every batch
    size once blocks have a few hundred rows).
    """
    n_q = len(q)
    if n_q < MIN_QUERY_ROWS:
        q = np.concatenate([q, np.zeros((MIN_QUERY_ROWS - n_q, q.shape[1]), dtype=q.dtype)])
    best_s = np.empty((n_q, 0), dtype=np.float32)
    best_i = np.empty((n_q, 0), dtype=np.int64)
    for d0, d1 in blocks:
        r0, r1 = (d0, d1) if doc_offsets is None else (int(doc_offsets[d0]), int(doc_offsets[d1]))
        scores = (q @ np.asarray(emb[r0:r1], dtype=np.float32).T)[:n_q]
        if doc_offsets is not None:
            scores = aggregate(scores, doc_offsets[d0:d1] - r0, np.diff(doc_offsets[d0:d1 + 1]), how)
        s, i = top_k(scores, np.broadcast_to(np.arange(d0, d1, dtype=np.int64), scores.shape), k)
        best_s, best_i = top_k(np.concatenate([best_s, s], axis=1), np.concatenate([best_i, i], axis=1), k)
    return best_i, best_s


def split_grid(grid: Sequence[tuple[int, int]], doc_offsets: np.ndarray | None,
               shards: int) -> list[list[tuple[int, int]]]:
    """`shards` contiguous runs of whole blocks with about equal rows; some are empty when blocks are fewer."""
    rows = np.array([d1 - d0 if doc_offsets is None else int(doc_offsets[d1] - doc_offsets[d0]) for d0, d1 in grid])
    owner = (np.cumsum(rows) - rows) * shards // max(int(rows.sum()), 1)
    return [[b for b, o in zip(grid, owner, strict=True) if o == j] for j in range(shards)]


@dataclass(frozen=True)
class MappedMatrix:
    """Where a memory-mapped matrix lives, so that a Ray worker maps the file itself instead of receiving rows."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, emb: np.ndarray) -> MappedMatrix | None:
        """The file behind `emb` when it is a whole memory-mapped file region (np.load(..., mmap_mode="r"))."""
        if isinstance(emb, np.memmap) and isinstance(emb.base, mmap.mmap) and emb.filename and emb.flags.c_contiguous:
            return cls(str(emb.filename), int(emb.offset), tuple(emb.shape), emb.dtype.str)
        return None

    def open(self) -> np.ndarray:
        if not Path(self.path).is_file():
            raise RagbenchError.at(self.path, "a Ray worker cannot see this cached corpus matrix: put the cache "
                                              "(RAGBENCH_CACHE) on a filesystem every node shares")
        return np.memmap(self.path, dtype=np.dtype(self.dtype), mode="r", offset=self.offset, shape=self.shape)


def exact_search(emb: np.ndarray | str | Path, q: np.ndarray, k: int, *, doc_offsets: np.ndarray | None = None,
                 how: Aggregate = "maxp", block_rows: int = 50_000, executor: ExecutorSpec = LOCAL,
                 shards: int | None = None) -> Hits:
    """The exact k best docs per query, (ids, scores) ordered by (score desc, id asc), padded to k with id -1.

    `emb`: the corpus matrix or its .npy file (memory-mapped). Under a Ray executor, `shards` Ray
    tasks (default: the executor's workers, else the cluster's CPUs) each search a contiguous run
    of blocks; in process, the blocks are searched in sequence. Both give the same bytes.
    """
    matrix = np.load(emb, mmap_mode="r") if isinstance(emb, (str, Path)) else emb
    n_docs = len(matrix) if doc_offsets is None else len(doc_offsets) - 1
    grid = block_grid(n_docs, doc_offsets, block_rows)
    if not executor.is_ray:
        return merge([search_blocks(matrix, q, k, grid, doc_offsets, how)], k)
    ray = _ray(executor)
    n = shards or executor.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    source: Any = MappedMatrix.of(matrix) or ray.put(np.ascontiguousarray(matrix))
    q_ref, offsets_ref = ray.put(q), ray.put(doc_offsets)
    futures = [_remote_search().remote(source, q_ref, k, blocks, offsets_ref, how)
               for blocks in split_grid(grid, doc_offsets, n) if blocks]
    try:
        parts = [search_blocks(matrix, q, k, []), *ray.get(futures)]  # the empty part: no docs, no futures
    except ray.exceptions.RayTaskError as e:  # a RagbenchError in a worker stays one line here
        if isinstance(e.cause, RagbenchError):
            raise e.cause from None
        raise
    return merge(parts, k)


def _ray(executor: ExecutorSpec) -> Any:
    from ragbench.executors import ray_session

    return ray_session(executor)


def _search_shard(source: MappedMatrix | np.ndarray, q: np.ndarray, k: int, blocks: list[tuple[int, int]],
                  doc_offsets: np.ndarray | None, how: Aggregate) -> Hits:
    """A Ray task: one shard's k best, the matrix mapped from the cache file (or read from Ray's object store)."""
    emb = source.open() if isinstance(source, MappedMatrix) else source
    return search_blocks(emb, q, k, blocks, doc_offsets, how)


@functools.cache
def _remote_search() -> Any:
    import ray

    return ray.remote(num_cpus=1)(_search_shard)


class VectorIndex:
    """A corpus matrix (docs, or chunks doc by doc) searched exactly, or through a faiss index over its rows."""

    def __init__(self, emb: np.ndarray, n_docs: int, doc_offsets: np.ndarray | None = None,
                 how: Aggregate = "maxp", faiss_index: Any = None, ef_search: int | None = None,
                 executor: ExecutorSpec = LOCAL):
        self.emb, self.n_docs, self.doc_offsets, self.how = emb, n_docs, doc_offsets, how
        self.faiss_index, self.ef_search, self.executor = faiss_index, ef_search, executor
        #: the doc of each row, to turn faiss's chunk hits into candidate docs
        self.row_doc = None if doc_offsets is None else np.repeat(np.arange(n_docs, dtype=np.int64),
                                                                  np.diff(doc_offsets))

    def search(self, q: np.ndarray, k: int, block_rows: int, depth: int) -> Hits:
        """The k best docs per query; `depth` = chunks asked of faiss before aggregating."""
        if self.faiss_index is None:
            return self._exact(q, k, block_rows)
        if self.doc_offsets is None:
            scores, ids = self._faiss(q, k)
            return ids.astype(np.int64), scores
        return self._faiss_chunks(q, k, min(depth, len(self.emb)))

    def _exact(self, q: np.ndarray, k: int, block_rows: int) -> Hits:
        return exact_search(self.emb, q, k, doc_offsets=self.doc_offsets, how=self.how, block_rows=block_rows,
                            executor=self.executor)

    def _faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.faiss_index
        if self.ef_search is not None:  # HNSW returns at most efSearch hits: widen it to k
            index.hnsw.efSearch = max(self.ef_search, k)
        return index.search(q, k)

    def _faiss_chunks(self, q: np.ndarray, k: int, depth: int) -> Hits:
        """The docs of the `depth` best chunks, each rescored exactly over all of its chunks."""
        assert self.doc_offsets is not None and self.row_doc is not None
        offsets = self.doc_offsets
        _, rows = self._faiss(q, depth)
        all_ids = np.full((len(q), k), -1, dtype=np.int64)
        all_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        for j in range(len(q)):
            cand = np.unique(self.row_doc[rows[j][rows[j] >= 0]])
            if not len(cand):
                continue
            counts = np.diff(offsets)[cand]
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            cand_rows = np.concatenate([np.arange(offsets[d], offsets[d + 1]) for d in cand])
            scores = np.asarray(self.emb[cand_rows], dtype=np.float32) @ q[j]
            s, i = top_k(aggregate(scores[None, :], starts, counts, self.how), cand[None, :], k)
            all_ids[j, :i.shape[1]], all_scores[j, :s.shape[1]] = i[0], s[0]
        return all_ids, all_scores


def faiss_index(env: StageEnv, emb_key: str, emb: np.ndarray, search: str, hnsw: tuple[int, int, int] | None,
                block_rows: int) -> Any:
    """The cached faiss index over `emb`'s rows; `hnsw` = (m, ef_construction, ef_search) for faiss_hnsw."""
    import faiss

    key = make_key("dense-faiss", emb_key, search, hnsw[:2] if hnsw else None, faiss.__version__)

    def build(tmp: Path) -> None:
        dim = emb.shape[1]
        if hnsw:
            index = faiss.IndexHNSWFlat(dim, hnsw[0], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = hnsw[1]
        else:
            index = faiss.IndexFlatIP(dim)
        with env.reporter.task(f"{env.stage_id}: building {search}", len(emb), "rows") as advance:
            for a in range(0, len(emb), block_rows):
                block = np.ascontiguousarray(emb[a:a + block_rows], dtype=np.float32)
                index.add(block)
                advance(len(block))
        faiss.write_index(index, str(tmp / "index.faiss"))

    index = faiss.read_index(str(env.cache.artifact(key, build) / "index.faiss"))
    if hnsw:
        index.hnsw.efSearch = hnsw[2]
    return index
