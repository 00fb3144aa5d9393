"""The Seismic engine for learned sparse retrieval (`engine: seismic`; docs/methods.md, "Seismic").

Bruch, Nardini, Rulli and Venturini, *Efficient Inverted Indexes for Approximate Retrieval over Learned Sparse
Representations* (SIGIR 2024); the authors' package `pyseismic-lsr` (TusKANNy/seismic). Each posting list is
pruned to about `n_postings` entries, cut into blocks by clustering, and each block gets a summary vector that
keeps `summary_energy` of its L1 mass; a query visits the lists of its `query_cut` largest terms and skips a
block whose summary's dot product cannot beat the heap's minimum divided by `heap_factor`. Search is
approximate; the bench reports its recall against the exact engine.

The index is built from the same cached document matrix as the other engines (switching engines never
re-encodes), written in Seismic's inner binary format (term ids as integer components) for its raw index, and
saved as a cache artifact keyed by the vectors and the build options. A batch of queries is written the same way.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from scipy import sparse

from ragbench.cache import make_key
from ragbench.errors import RagbenchError
from ragbench.retrievers.hits import IdHits, hits_by_id
from ragbench.stage import StageOptions
from ragbench.types import Corpus

#: n_postings by default, as a fraction of the documents: the authors' guidelines give 3,000-6,000 for MS MARCO's
#: 8.8M passages and 60,000-80,000 for MS MARCO v2's 138M, both about 0.05%
POSTINGS_FRACTION = 0.0005
#: ... but never fewer (small collections: the lists are short, and pruning them gains nothing)
MIN_POSTINGS = 500


class SeismicOptions(StageOptions):
    """The authors' settings (docs/Guidelines.md of TusKANNy/seismic; MS MARCO, SPLADE), with the postings per
    term scaled to the collection as their guidelines scale them."""

    n_postings: int | None = Field(
        None, ge=1, description="postings kept per term, on average (default: 0.05% of the documents, at least 500)")
    centroid_fraction: float = Field(0.2, gt=0, le=1, description="blocks per list, as a fraction of n_postings")
    min_cluster_size: int = Field(2, ge=1, description="smallest block")
    summary_energy: float = Field(0.5, gt=0, le=1, description="L1 mass kept in each block's summary")
    max_fraction: float = Field(6.0, gt=0, description="longest list, as a multiple of n_postings")
    query_cut: int = Field(10, ge=1, description="query terms whose lists are visited (the largest)")
    heap_factor: float = Field(0.8, gt=0, le=1, description="block skipping: higher prunes more (faster, less exact)")
    sorted: bool = Field(False, description="visit blocks best summary first (faster, less exact)")

    def postings_for(self, n_docs: int) -> int:
        return self.n_postings or max(MIN_POSTINGS, round(POSTINGS_FRACTION * n_docs))


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 pointed at 2 for the duration (output printed by native code, not through sys.stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _seismic() -> Any:
    try:
        import seismic
    except ImportError:
        raise RagbenchError.at("engine", "seismic needs the pyseismic-lsr package: pip install 'ragbench[seismic]'") \
            from None
    return seismic


def write_inner(matrix: sparse.csr_matrix, path: Path) -> None:
    """Rows in Seismic's inner binary format: u32 row count, then per row u32 length, u32 components, f32 values."""
    m = matrix.tocsr()
    m.sort_indices()
    n, nnz = m.shape[0], np.diff(m.indptr)
    buf = np.empty(1 + n + 2 * int(m.indptr[-1]), dtype=np.uint32)
    buf[0] = n
    starts = 1 + np.arange(n) + 2 * m.indptr[:-1]  # where each row's length goes
    buf[starts] = nnz
    row = np.repeat(np.arange(n), nnz)
    local = np.arange(int(m.indptr[-1])) - m.indptr[:-1][row]
    buf[starts[row] + 1 + local] = m.indices.astype(np.uint32)
    buf[starts[row] + 1 + nnz[row] + local] = m.data.astype(np.float32).view(np.uint32)
    buf.tofile(path)


class SeismicSparseIndex:
    """A Seismic index over the cached document vectors (its raw variant: integer components, binary input),
    searched in batches; a hit's row maps to the corpus id."""

    def __init__(self, stage: Any, vectors_dir: Path, corpus: Corpus, options: SeismicOptions, threads: int):
        seismic = _seismic()
        self.options, self.threads, self.corpus = options, threads, corpus
        build_opts = options.model_dump(exclude={"query_cut", "heap_factor", "sorted"})
        self.n_postings = build_opts["n_postings"] = options.postings_for(len(corpus))  # the lock file records it
        key = make_key("seismic-raw-index", vectors_dir.name, build_opts, version("pyseismic-lsr"))

        def build(tmp: Path) -> None:
            with tempfile.TemporaryDirectory(prefix="ragbench-seismic-", dir=tmp.parent) as work:
                write_inner(sparse.load_npz(vectors_dir / "docs.npz"), Path(work) / "docs.bin")
                with _stdout_to_stderr():  # the Rust builder prints its progress on stdout
                    index = seismic.SeismicIndexRaw.build(str(Path(work) / "docs.bin"), **build_opts)
                    index.save(str(tmp / "index"))

        path = stage.artifact_dir(key, build)
        self.index = seismic.SeismicIndexRaw.load(str(path / "index"))  # the raw index saves under the name given

    def search(self, queries: sparse.csr_matrix, qids: list[str], k: int) -> IdHits:
        queries = queries.tocsr()
        out: IdHits = {qid: [] for qid in qids}
        keep = [i for i in range(len(qids)) if queries.indptr[i + 1] > queries.indptr[i]]  # an empty query finds none
        if not keep:
            return out
        o = self.options
        with tempfile.TemporaryDirectory(prefix="ragbench-seismic-q-") as work:
            write_inner(queries[keep], Path(work) / "queries.bin")
            results = self.index.batch_search(str(Path(work) / "queries.bin"), k=int(k), query_cut=o.query_cut,
                                              heap_factor=o.heap_factor, n_knn=0, sorted=o.sorted,
                                              num_threads=max(1, self.threads))
        found = [([r for _, r in hits], [score for score, _ in hits]) for hits in results]  # Seismic: (score, row)
        out.update(hits_by_id(self.corpus, [qids[i] for i in keep], found))
        return out
