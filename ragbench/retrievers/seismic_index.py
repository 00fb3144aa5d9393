"""The Seismic engine for learned sparse retrieval (`engine: seismic`; docs/methods.md, "Seismic").

Bruch, Nardini, Rulli and Venturini, *Efficient Inverted Indexes for Approximate Retrieval over Learned Sparse
Representations* (SIGIR 2024); the authors' package `pyseismic-lsr` (TusKANNy/seismic). Each posting list is
pruned to about `n_postings` entries, cut into blocks by clustering, and each block gets a summary vector that
keeps `summary_energy` of its L1 mass; a query visits the lists of its `query_cut` largest terms and skips a
block whose summary's dot product cannot beat the heap's minimum divided by `heap_factor`. Search is
approximate; the bench reports its recall against the exact engine.

The index is built from the same cached document matrix as the other engines (switching engines never
re-encodes) and saved as a cache artifact keyed by the vectors and the build options. Components are term ids
written as strings (Seismic's component strings have a fixed width; vocabulary strings may not fit it).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from scipy import sparse

from ragbench.cache import make_key
from ragbench.errors import RagbenchError
from ragbench.stage import StageOptions
from ragbench.types import Corpus

_BATCH = 4096  # documents fetched per id lookup while filling the dataset


class SeismicOptions(StageOptions):
    """The authors' near-exact setting (docs/Guidelines.md of TusKANNy/seismic: MS MARCO, SPLADE)."""

    n_postings: int = Field(3000, ge=1, description="postings kept per term, on average")
    centroid_fraction: float = Field(0.2, gt=0, le=1, description="blocks per list, as a fraction of n_postings")
    min_cluster_size: int = Field(2, ge=1, description="smallest block")
    summary_energy: float = Field(0.5, gt=0, le=1, description="L1 mass kept in each block's summary")
    max_fraction: float = Field(6.0, gt=0, description="longest list, as a multiple of n_postings")
    query_cut: int = Field(10, ge=1, description="query terms whose lists are visited (the largest)")
    heap_factor: float = Field(0.8, gt=0, le=1, description="block skipping: lower visits more blocks")
    sorted: bool = Field(False, description="visit blocks best summary first (faster, less exact)")


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


class SeismicSparseIndex:
    """A Seismic index over the cached document vectors, searched in batches."""

    def __init__(self, stage: Any, vectors_dir: Path, corpus: Corpus, options: SeismicOptions, threads: int):
        seismic = _seismic()
        self.options, self.threads, self.kind = options, threads, seismic.get_seismic_string()
        build_opts = options.model_dump(exclude={"query_cut", "heap_factor", "sorted"})
        key = make_key("seismic-index", vectors_dir.name, build_opts, version("pyseismic-lsr"))

        def build(tmp: Path) -> None:
            matrix = sparse.load_npz(vectors_dir / "docs.npz").tocsr()
            dataset = seismic.SeismicDataset()
            for start in range(0, matrix.shape[0], _BATCH):
                rows = list(range(start, min(start + _BATCH, matrix.shape[0])))
                for i, doc_id in zip(rows, corpus.id_at(rows), strict=True):
                    lo, hi = matrix.indptr[i], matrix.indptr[i + 1]
                    if hi > lo:  # Seismic cannot hold an empty vector; such a document never scores anyway
                        dataset.add_document(doc_id, self._components(matrix.indices[lo:hi]),
                                             matrix.data[lo:hi].astype(np.float32))
            with _stdout_to_stderr():  # the Rust builder prints its progress on stdout
                index = seismic.SeismicIndex.build_from_dataset(dataset, **build_opts, num_threads=max(1, threads))
                index.save(str(tmp / "index"))

        path = stage.artifact_dir(key, build)
        self.index = seismic.SeismicIndex.load(str(path / "index.index.seismic"))

    def _components(self, term_ids: np.ndarray) -> np.ndarray:
        return np.array([str(t) for t in term_ids], dtype=self.kind)

    def search(self, queries: sparse.csr_matrix, qids: list[str], k: int) -> dict[str, list[tuple[str, float]]]:
        queries = queries.tocsr()
        out: dict[str, list[tuple[str, float]]] = {qid: [] for qid in qids}
        ids, comps, values = [], [], []
        for i, qid in enumerate(qids):
            lo, hi = queries.indptr[i], queries.indptr[i + 1]
            if hi > lo:
                ids.append(qid)
                comps.append(self._components(queries.indices[lo:hi]))
                values.append(queries.data[lo:hi].astype(np.float32))
        if ids:
            o = self.options
            results = self.index.batch_search(np.array(ids, dtype=self.kind), comps, values, k=int(k),
                                              query_cut=o.query_cut,
                                              heap_factor=o.heap_factor, sorted=o.sorted,
                                              num_threads=max(1, self.threads))
            for hits in results:  # each hit names its query: the batch's result lists are not in input order
                for qid, score, doc in hits:
                    out[qid].append((doc, float(score)))
        return out
