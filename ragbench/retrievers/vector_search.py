"""Inner-product search over a memory-mapped corpus matrix, exact or through faiss.

Rows are documents, or chunks stored doc by doc (`doc_offsets` maps docs to their rows; a doc's
score aggregates its chunks': maxp = best chunk, firstp = first chunk, mean = mean of them all).

exact       blocks of the matrix times the query batch, with a running top-k per query; the full
            docs x queries score matrix never exists. Chunk aggregation is exact.
faiss_flat  faiss IndexFlatIP (exhaustive inner product), built from the matrix, cached.
faiss_hnsw  faiss IndexHNSWFlat with inner product (approximate), cached; efSearch is a
            search-time setting, widened to the search depth.

With chunks, faiss returns the `depth` best chunks; their docs are the candidates, each rescored
exactly over all its chunks from the matrix (docs/methods.md, "Dense retrieval and MaxP chunking").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ragbench.cache import make_key

if TYPE_CHECKING:
    from ragbench.stage import StageEnv

Aggregate = Literal["maxp", "firstp", "mean"]
Hits = tuple[np.ndarray, np.ndarray]  # (doc ids, scores), queries x k; id -1 where fewer than k were found


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best (unordered): Ranking.from_scores sorts them."""
    if scores.shape[1] <= k:
        return scores, ids
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, part, axis=1), np.take_along_axis(ids, part, axis=1)


def aggregate(scores: np.ndarray, starts: np.ndarray, counts: np.ndarray, how: Aggregate) -> np.ndarray:
    """Chunk scores (queries x rows, docs' rows contiguous from `starts`) -> doc scores."""
    if how == "maxp":
        return np.maximum.reduceat(scores, starts, axis=1)
    if how == "firstp":
        return scores[:, starts]
    return np.add.reduceat(scores, starts, axis=1) / counts


class VectorIndex:
    """A corpus matrix (docs, or chunks doc by doc) searched exactly, or through a faiss index over its rows."""

    def __init__(self, emb: np.ndarray, n_docs: int, doc_offsets: np.ndarray | None = None,
                 how: Aggregate = "maxp", faiss_index: Any = None, ef_search: int | None = None):
        self.emb, self.n_docs, self.doc_offsets, self.how = emb, n_docs, doc_offsets, how
        self.faiss_index, self.ef_search = faiss_index, ef_search
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
        """Blocks of the matrix against all queries, keeping a running top-k per query."""
        offsets = self.doc_offsets
        best_s = np.empty((len(q), 0), dtype=np.float32)
        best_i = np.empty((len(q), 0), dtype=np.int64)
        d0 = 0
        while d0 < self.n_docs:
            if offsets is None:
                d1 = min(d0 + block_rows, self.n_docs)
                r0, r1 = d0, d1
            else:
                r0 = int(offsets[d0])
                d1 = max(d0 + 1, int(np.searchsorted(offsets, r0 + block_rows, side="right")) - 1)
                d1 = min(d1, self.n_docs)
                r1 = int(offsets[d1])
            scores = q @ np.asarray(self.emb[r0:r1], dtype=np.float32).T
            if offsets is not None:
                scores = aggregate(scores, offsets[d0:d1] - r0, np.diff(offsets[d0:d1 + 1]), self.how)
            ids = np.broadcast_to(np.arange(d0, d1, dtype=np.int64), scores.shape)
            best_s, best_i = top_k(np.concatenate([best_s, scores], axis=1), np.concatenate([best_i, ids], axis=1), k)
            d0 = d1
        return best_i, best_s

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
