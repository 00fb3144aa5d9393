"""Benchmark the learned-sparse engines (exact scipy, Seismic) on synthetic SPLADE-like vectors.

    python bench/sparse.py [--docs 1000000] [--queries 1000] [--threads 1] [--seed 0] [--seismic KNOB=VALUE ...]

Documents hold 60-180 terms of a 30,522-term vocabulary (BERT's WordPiece size, as SPLADE), drawn from a
Zipf(1.1) distribution, with log-normal weights (SPLADE's are positive and heavy-tailed); a query takes 8-24
terms of a random document plus 4-12 expansion terms, with its own weights. Both engines index the same CSR
matrix through ragbench's classes (retrievers/sparse_index.py, retrievers/seismic_index.py) in a temporary
cache: "build s" is the index construction, "q/s" the search of all queries (top-10, one batch), and recall@10
is against the exact engine's top 10 (ties included). The last line gives the ratio issue 19's bar reads.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from time import perf_counter

import numpy as np
from scipy import sparse

from ragbench.cache import Cache
from ragbench.progress import Reporter
from ragbench.retrievers.seismic_index import SeismicOptions, SeismicSparseIndex
from ragbench.retrievers.sparse_index import ScipySparseIndex
from ragbench.stage import StageEnv
from ragbench.types import Corpus, Document

VOCAB = 30_522
DOC_TERMS = (60, 180)
QUERY_TERMS = (8, 24)
EXPANSION = (4, 12)


def _rows(rng: np.random.Generator, n: int, lengths: tuple[int, int], p: np.ndarray) -> sparse.csr_matrix:
    sizes = rng.integers(*lengths, size=n)
    cols = rng.choice(VOCAB, size=int(sizes.sum()), p=p)
    rows = np.repeat(np.arange(n), sizes)
    vals = rng.lognormal(0.0, 0.6, size=len(cols)).astype(np.float32)
    m = sparse.csr_matrix((vals, (rows, cols)), shape=(n, VOCAB), dtype=np.float32)
    m.sum_duplicates()
    return m


def make(n_docs: int, n_queries: int, seed: int) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, VOCAB + 1) ** 1.1
    p /= p.sum()
    docs = _rows(rng, n_docs, DOC_TERMS, p)
    picked = docs[rng.integers(0, n_docs, size=n_queries)].tocsr()
    keep = []
    for i in range(n_queries):  # a random subset of a document's terms, re-weighted
        lo, hi = picked.indptr[i], picked.indptr[i + 1]
        k = min(hi - lo, int(rng.integers(*QUERY_TERMS)))
        keep.append(rng.choice(picked.indices[lo:hi], size=k, replace=False))
    rows = np.repeat(np.arange(n_queries), [len(k) for k in keep])
    base = sparse.csr_matrix((rng.lognormal(0.0, 0.6, len(rows)).astype(np.float32), (rows, np.concatenate(keep))),
                             shape=(n_queries, VOCAB))
    return docs, (base + _rows(rng, n_queries, EXPANSION, p)).tocsr()


class _Stage:
    """What SeismicSparseIndex asks of its stage: a cache for its artifact and a reporter."""

    def __init__(self, cache: Path) -> None:
        self.env = StageEnv(Cache(cache), Reporter(quiet=True), "bench")

    def artifact_dir(self, key: str, build) -> Path:
        return self.env.cache.artifact(key, build)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seismic", action="append", default=[], metavar="KNOB=VALUE",
                    help="a Seismic option other than its default, e.g. --seismic sorted=true")
    args = ap.parse_args(argv)
    knobs = SeismicOptions(**{k: v for k, _, v in (item.partition("=") for item in args.seismic)})
    t0 = perf_counter()
    docs, queries = make(args.docs, args.queries, args.seed)
    print(f"{args.docs:,} docs ({docs.nnz / args.docs:.0f} terms each), {args.queries:,} queries "
          f"({queries.nnz / args.queries:.0f} terms each), made in {perf_counter() - t0:.1f} s", flush=True)
    k = 10
    t0 = perf_counter()
    exact = ScipySparseIndex(docs)
    build_exact = perf_counter() - t0
    t0 = perf_counter()
    ref = exact.search(queries, k)
    qps_exact = args.queries / (perf_counter() - t0)
    print(f"exact scipy: build {build_exact:.1f} s, {qps_exact:.1f} q/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="ragbench-bench-sparse-") as tmp:
        vectors = Path(tmp) / "vectors"
        vectors.mkdir()
        sparse.save_npz(vectors / "docs.npz", docs, compressed=False)
        ids = [f"d{i}" for i in range(args.docs)]
        corpus = Corpus.from_documents([Document(d, "") for d in ids], "bench", "synthetic")
        t0 = perf_counter()
        seismic = SeismicSparseIndex(_Stage(Path(tmp) / "cache"), vectors, corpus, knobs, args.threads)
        build_seismic = perf_counter() - t0
        qids = [f"q{i}" for i in range(args.queries)]
        t0 = perf_counter()
        hits = seismic.search(queries, qids, k)
        qps_seismic = args.queries / (perf_counter() - t0)
    found = total = 0
    for i, (rows, _) in enumerate(ref):
        want = {f"d{r}" for r in rows}
        found += len(want & {d for d, _ in hits[qids[i]]})
        total += min(k, len(want))
    recall = found / total
    print(f"seismic ({knobs.model_dump()}): build {build_seismic:.1f} s, {qps_seismic:.1f} q/s, "
          f"recall@10 against exact {recall:.4f}")
    print(f"seismic/exact: {qps_seismic / qps_exact:.1f}; seismic recall@10: {recall:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
