"""Benchmark the BM25 stage's engines (bm25s, rank_bm25, lucene) on a synthetic corpus.

    python bench/bm25.py [--docs 50000] [--queries 1000] [--seed 0] [--rank-bm25-queries 200] [--no-lucene]

Documents of 40-160 tokens are drawn from a Zipf(1.07) vocabulary of 30,000 synthetic words
(consonant-vowel syllables ending in "k", which Porter stemming and the stopword list leave
alone, so every engine sees the same 30,000 terms). Each query takes 2-6 distinct terms of a
random document, never one of the 50 most frequent terms (so no query term is in more than half
the documents, where rank_bm25 and bm25s treat idf differently).

Every engine is built through ragbench's `BM25` stage with its default analyzer, k1=0.9, b=0.4,
one search thread and top-10, in a temporary cache; bm25s and rank_bm25 use variant robertson
(the same formula), lucene its own. "index s" is `stage.prepare` (tokenise, build, save, load;
the JVM start and pyserini's import are timed apart), "query s" is `stage.search` after a
10-query warm-up. rank_bm25 scores every document for every query term in Python, so it is
timed on a subset of the queries by default; queries/s is a rate, so the ratios stay comparable.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
from time import perf_counter

import numpy as np

from ragbench.cache import Cache
from ragbench.progress import Reporter
from ragbench.retrievers.bm25 import BM25, BM25Options
from ragbench.stage import StageEnv
from ragbench.types import Corpus, Document, Query, Ranking, TaskData

VOCAB = 30_000
ZIPF_S = 1.07
DOC_LEN = (40, 160)
QUERY_LEN = (2, 6)
EXCLUDED_TOP_TERMS = 50
WARMUP = 10
TOP_K = 10
TARGET = 20.0


def make_vocab(rng: np.random.Generator, n: int) -> list[str]:
    consonants, vowels = "bdfghjlmnprstvwz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]
    words: set[str] = set()
    while len(words) < n:
        k = int(rng.integers(2, 4))
        words.add("".join(syllables[i] for i in rng.integers(0, len(syllables), k)) + "k")
    return sorted(words)


def make_task(n_docs: int, n_queries: int, seed: int) -> tuple[TaskData, int]:
    rng = np.random.default_rng(seed)
    words = np.array(make_vocab(rng, VOCAB))
    rng.shuffle(words)  # word i has Zipf rank i + 1
    p = np.arange(1, VOCAB + 1, dtype=np.float64) ** -ZIPF_S
    p /= p.sum()
    lengths = rng.integers(DOC_LEN[0], DOC_LEN[1] + 1, n_docs)
    token_ids = rng.choice(VOCAB, size=int(lengths.sum()), p=p)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    docs = {}
    for i in range(n_docs):
        did = f"d{i:06d}"
        docs[did] = Document(did, " ".join(words[token_ids[bounds[i]:bounds[i + 1]]].tolist()))

    frequent = set(np.argsort(-np.bincount(token_ids, minlength=VOCAB))[:EXCLUDED_TOP_TERMS].tolist())
    queries = []
    while len(queries) < n_queries:
        d = int(rng.integers(n_docs))
        candidates = sorted(set(token_ids[bounds[d]:bounds[d + 1]].tolist()) - frequent)
        n = min(int(rng.integers(QUERY_LEN[0], QUERY_LEN[1] + 1)), len(candidates))
        if n < QUERY_LEN[0]:
            continue
        terms = rng.choice(candidates, size=n, replace=False)
        queries.append(Query(f"q{len(queries):05d}", " ".join(words[terms].tolist())))

    params = f"synthetic:{n_docs}:{n_queries}:{seed}:{VOCAB}:{ZIPF_S}:{DOC_LEN}:{QUERY_LEN}"
    fingerprint = hashlib.sha256(params.encode()).hexdigest()
    corpus = Corpus(docs, fingerprint, source=params)
    task = TaskData("synthetic-zipf", "test", queries, {}, corpus, params, fingerprint)
    return task, int(lengths.sum())


def run_engine(opts: BM25Options, task: TaskData, timed: list[Query]) -> tuple[float, float, dict[str, Ranking]]:
    with tempfile.TemporaryDirectory(prefix="ragbench-bench-") as tmp:
        stage = BM25(opts, StageEnv(Cache(tmp), Reporter(quiet=True), f"bench-{opts.engine}"))
        t0 = perf_counter()
        stage.prepare(task)
        index_s = perf_counter() - t0
        stage.search(task.queries[:WARMUP])
        t0 = perf_counter()
        rankings = stage.search(timed)
        query_s = perf_counter() - t0
        del stage
    return index_s, query_s, rankings


def lucene_unavailable() -> str | None:
    """Why the lucene engine cannot run here, or None after starting the JVM and importing
    pyserini's Lucene modules (seconds of start-up that would otherwise land in the index time)."""
    try:
        import pyserini  # noqa: F401
    except Exception as e:  # pyserini pulls in a lot; any import failure means no lucene
        return f"pyserini is not importable ({type(e).__name__}: {e})"
    try:
        from ragbench._java import start_jvm

        start_jvm()
        import pyserini.index.lucene  # noqa: F401
        import pyserini.search.lucene  # noqa: F401
    except Exception as e:
        return f"Java or pyserini's Lucene could not be started ({type(e).__name__}: {e})"
    try:  # Anserini's indexer logs INFO lines to stdout, in the middle of the table
        from jnius import autoclass

        level = autoclass("org.apache.logging.log4j.Level")
        autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(level.WARN)
    except Exception:
        pass
    return None


def overlap(a: dict[str, Ranking], b: dict[str, Ranking]) -> float:
    shared = [qid for qid in a if qid in b]
    return float(np.mean([len(set(a[q].docids) & set(b[q].docids)) / max(1, len(a[q].docids)) for q in shared]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rank-bm25-queries", type=int, default=200,
                    help="time rank_bm25 on the first N queries only (0 = all)")
    ap.add_argument("--no-lucene", action="store_true", help="skip the lucene (pyserini) engine")
    args = ap.parse_args(argv)
    if args.docs < TOP_K or args.queries < 1:
        ap.error("need at least 10 documents and 1 query")
    import bm25s  # noqa: F401 - sets its logger to DEBUG on import, which pyserini's log handler then prints

    logging.getLogger("bm25s").setLevel(logging.WARNING)

    t0 = perf_counter()
    task, n_tokens = make_task(args.docs, args.queries, args.seed)
    queries = task.queries
    print(f"corpus: {args.docs:,} docs, {n_tokens:,} tokens, {VOCAB:,}-word Zipf({ZIPF_S}) vocabulary "
          f"(seed {args.seed}, generated in {perf_counter() - t0:.1f} s)")
    print(f"queries: {len(queries):,} of {QUERY_LEN[0]}-{QUERY_LEN[1]} terms "
          f"(top {EXCLUDED_TOP_TERMS} terms excluded); "
          f"top-{TOP_K}, 1 thread, k1=0.9 b=0.4, default analyzer; warm-up {WARMUP} queries untimed")

    n_rank = len(queries) if args.rank_bm25_queries <= 0 else min(args.rank_bm25_queries, len(queries))
    engines: list[tuple[str, BM25Options, list[Query]]] = [
        ("bm25s", BM25Options(engine="bm25s", variant="robertson", top_k=TOP_K), queries),
        ("rank_bm25", BM25Options(engine="rank_bm25", variant="robertson", top_k=TOP_K), queries[:n_rank]),
    ]
    skipped: dict[str, str] = {}
    if args.no_lucene:
        skipped["lucene"] = "--no-lucene"
    else:
        t0 = perf_counter()
        reason = lucene_unavailable()
        if reason:
            skipped["lucene"] = reason
        else:
            print(f"JVM start and pyserini import: {perf_counter() - t0:.1f} s (not counted in lucene's index time)")
            engines.append(("lucene", BM25Options(engine="lucene", top_k=TOP_K), queries))
    if n_rank < len(queries):
        print(f"rank_bm25 is timed on the first {n_rank:,} of {len(queries):,} queries (queries/s is a rate)")

    results: dict[str, tuple[float, float, int, dict[str, Ranking]]] = {}
    for name, opts, timed in engines:
        print(f"running {name} ({opts.resolved_variant}) ...", file=sys.stderr, flush=True)
        index_s, query_s, rankings = run_engine(opts, task, timed)
        results[name] = (index_s, query_s, len(timed), rankings)

    print()
    print(f"{'engine':<10} {'variant':<10} {'index s':>9} {'query s':>9} {'queries':>8} {'queries/s':>11}")
    qps: dict[str, float] = {}
    for name, opts, _ in engines:
        index_s, query_s, n, _ = results[name]
        qps[name] = n / query_s
        print(f"{name:<10} {opts.resolved_variant:<10} {index_s:>9.2f} {query_s:>9.3f} {n:>8,} {qps[name]:>11.1f}")
    for name, reason in skipped.items():
        print(f"{name:<10} skipped: {reason}")

    print()
    ref = results["bm25s"][3]
    for name in results:
        if name != "bm25s":
            print(f"top-{TOP_K} overlap of {name} with bm25s: {overlap(results[name][3], ref):.3f}")
    if "lucene" in qps:
        print(f"ratio lucene/rank_bm25 queries/s: {qps['lucene'] / qps['rank_bm25']:.1f}x")
        print(f"ratio bm25s/lucene queries/s: {qps['bm25s'] / qps['lucene']:.1f}x")
    ratio = qps["bm25s"] / qps["rank_bm25"]
    print(f"ratio bm25s/rank_bm25 queries/s: {ratio:.1f}x (target >= {TARGET:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
