"""Retrieval speed near the engines' limits: every BM25 engine and every learned-sparse engine, one table.

    python bench/retrieval.py [--data synthetic:50000 synthetic:1000000 scifact frames] [--queries 1000]
                              [--threads 1] [--seed 0] [--seismic KNOB=VALUE ...] [--skip FAMILY/ENGINE@DATA ...]
                              [--full]

Data: synthetic text and SPLADE-like vectors (bench/synthetic.py) at each size; SciFact (its 5,183 abstracts and
201 test queries; learned sparse with the bundled splade-tiny, from ragbench's cache when already encoded); FRAMES
(its 2,460 gold articles split into 100-word passages, 621 questions; BM25 only: splade-tiny would take hours
to encode its 92,535 passages on two cores).

Each measurement runs in a process of its own, so that its peak RSS (`ru_maxrss`: the data, the index, the JVM for
Lucene) is its own. "index s" builds the index from text or vectors in an empty cache; "q/s" is the search of every
query (top-10) through ragbench's stage or index class, with `--threads` search threads, after a 10-query warm-up.
"ref q/s" is what that figure is held against, measured in the same process on the same queries, and "q/s÷ref" the
ratio. For BM25 it is the engine's own call on the query texts (bm25s: its tokenizer and `retrieve`; Lucene:
pyserini's `LuceneSearcher.batch_search`, hits read into (docid, score); rank_bm25: `get_scores` and a top-10
partition): the stage and the raw call are timed in rounds, interleaved, each first in turn, until 30 s are spent
(at most 6 rounds; Lucene always 6: its JIT warms up over several passes). For the Lucene impact and Seismic
engines it is the exact scipy engine, built in the same process once the engine's peak RSS is read, the two
timed in three alternating rounds; the scipy row is timed three times on its own. The fastest pass of each is kept.
Every BM25 engine analyses text by Lucene's rules (`analyzer.rules: lucene`), and bm25s also takes Lucene's
one-byte document lengths (`lengths: lucene`): what `engine: auto` runs where Java is missing. "overlap" is the
mean top-10 overlap with the exhaustive reference: bm25s for BM25 (the summary also counts the queries whose top
10 the default engine shares with it up to ties, within Lucene's reported precision of 1e-4), the exact scipy
product for learned sparse (recall@10).
rank_bm25 scores every document in Python: it is timed on the first 200 queries, and skipped above 100,000
documents; so is the Lucene impact index, whose indexing took 20 minutes at 1M here, unless `--full`.

The last line gives the ratios issue 19's bars read, at the largest synthetic size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from ragbench.cache import Cache
from ragbench.progress import Reporter
from ragbench.stage import StageEnv
from ragbench.types import Query, TaskData

TOP_K = 10
WARMUP = 10
ROUNDS = 3  # timed passes of each sparse engine: the fastest kept
# BM25: the stage and the raw call timed in interleaved rounds until ROUNDS_BUDGET_S is spent, at least
# MIN_ROUNDS[is Lucene] and at most MAX_ROUNDS of them; the fastest pass of each kept
MAX_ROUNDS, ROUNDS_BUDGET_S, MIN_ROUNDS = 6, 30.0, (1, 6)
RANK_BM25_QUERIES = 200
RANK_BM25_MAX_DOCS = 100_000
LUCENE_IMPACT_MAX_DOCS = 100_000
BM25_ENGINES = ("bm25s", "rank_bm25", "lucene")
#: every BM25 engine analyses as Lucene does, and bm25s also takes Lucene's lengths: what `engine: auto` runs
#: without Java, the same function as Lucene's (rank_bm25's formula is Robertson's: it cannot)
LUCENE_RULES: dict[str, dict[str, Any]] = {"bm25s": {"analyzer": {"rules": "lucene"}, "lengths": "lucene"},
                                           "rank_bm25": {"analyzer": {"rules": "lucene"}}, "lucene": {}}
#: two rankings are the same up to ties within Lucene's reported precision (Anserini rounds scores to 4 decimals)
TIE_TOLERANCE = 1.1e-4
SPARSE_ENGINES = ("scipy", "lucene", "seismic")


# ----------------------------------------------------------------------------- data, in the measuring process
def text_data(name: str, n_queries: int, seed: int, cache: Cache) -> TaskData:
    if name.startswith("synthetic:"):
        from synthetic import text_task

        return text_task(int(name.split(":")[1]), n_queries, seed)[0]
    from ragbench.tasks import load_task
    from ragbench.tasks.card import load_task_card

    task = load_task(load_task_card(name)[0], cache=cache)
    if name == "frames":
        from ragbench.corpora.passages import PassagesOptions, build_passages

        assert task.corpus is not None
        passages = build_passages(task.corpus, PassagesOptions(), cache)[0]
        task = TaskData(task.name, task.split, task.queries, {}, passages, task.source, passages.fingerprint)
    return task


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = perf_counter()
    out = fn(*args)
    return perf_counter() - t0, out


# ----------------------------------------------------------------------------- BM25
def raw_bm25(engine: str, stage: Any, queries: list[Query], threads: int) -> Any:
    """The engine's own search on the query texts, as a user of the engine alone would call it."""
    texts = [q.text for q in queries]
    if engine == "lucene":
        from pyserini.search.lucene import LuceneSearcher

        searcher = LuceneSearcher(str(stage.engine.path))
        searcher.set_bm25(stage.options.k1, stage.options.b)

        def run() -> dict[str, list[tuple[str, float]]]:
            hits = searcher.batch_search(texts, [q.id for q in queries], TOP_K, threads)
            return {qid: [(h.docid, h.score) for h in hs] for qid, hs in hits.items()}
        return run
    if engine == "bm25s":
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer("porter")
        retriever = stage.engine.retriever

        def run() -> Any:
            tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False,
                                    show_progress=False)
            return retriever.retrieve(tokens, k=TOP_K, show_progress=False, n_threads=threads)
        return run
    bm25, analyzer = stage.engine.bm25, stage.engine.analyzer

    def run() -> list[np.ndarray]:
        out = []
        for t in texts:
            scores = bm25.get_scores(analyzer(t))
            out.append(np.argpartition(-scores, TOP_K - 1)[:TOP_K])
        return out
    return run


def bm25_job(job: dict[str, Any], tmp: Path, cache: Cache) -> dict[str, Any]:
    from ragbench.retrievers.bm25 import BM25, BM25Options

    task = text_data(job["data"], job["queries"], job["seed"], cache)
    queries = task.queries[:RANK_BM25_QUERIES] if job["engine"] == "rank_bm25" else task.queries
    if job["engine"] == "lucene":
        start_lucene()
    opts = BM25Options(engine=job["engine"], top_k=TOP_K, threads=job["threads"], **LUCENE_RULES[job["engine"]])
    stage = BM25(opts, StageEnv(Cache(tmp / "cache"), Reporter(quiet=True), "bench"))
    index_s, _ = timed(stage.prepare, task)
    raw = raw_bm25(job["engine"], stage, queries, job["threads"])
    stage.search(queries[:WARMUP])
    stage_times: list[float] = []
    raw_times: list[float] = []
    for i in range(MAX_ROUNDS):
        # interleaved, each first in turn: the JIT's warm-up (several passes) and the caches favour neither
        for is_stage in (True, False) if i % 2 == 0 else (False, True):
            if is_stage:
                elapsed, rankings = timed(stage.search, queries)
                stage_times.append(elapsed)
            else:
                raw_times.append(timed(raw)[0])
        if sum(stage_times) + sum(raw_times) > ROUNDS_BUDGET_S and i + 1 >= MIN_ROUNDS[job["engine"] == "lucene"]:
            break
    search_s, raw_s = min(stage_times), min(raw_times)
    return {"docs": len(task.corpus or ()), "queries": len(queries), "index_s": index_s,
            "qps": len(queries) / search_s, "ref_qps": len(queries) / raw_s,
            "top": {qid: r.docids for qid, r in rankings.items()},
            "scores": {qid: r.scores for qid, r in rankings.items()}, "ndcg": ndcg(task, rankings)}


def start_lucene() -> None:
    """The JVM, pyserini's Lucene modules (seconds of start-up not counted in any timing) and quiet logs."""
    from ragbench._java import start_jvm

    start_jvm()
    import pyserini.search.lucene  # noqa: F401
    from jnius import autoclass

    level = autoclass("org.apache.logging.log4j.Level")
    autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(level.WARN)


def ndcg(task: TaskData, rankings: dict[str, Any]) -> float | None:
    """nDCG@10 of real tasks (their qrels), from the rankings the stage returned; None for synthetic data."""
    if not task.qrels:
        return None
    from ragbench.metrics.ir import evaluate

    return evaluate(rankings, task.qrels, ["nDCG@10"])[0]["nDCG@10"]


# ----------------------------------------------------------------------------- learned sparse
class _IndexStage:
    """What the sparse index classes ask of their stage: a cache for their artifact and a reporter."""

    def __init__(self, cache: Path) -> None:
        self.env = StageEnv(Cache(cache), Reporter(quiet=True), "bench")

    def artifact_dir(self, key: str, build: Any) -> Path:
        return self.env.cache.artifact(key, build)


def sparse_job(job: dict[str, Any], tmp: Path, cache: Cache) -> dict[str, Any]:
    """One learned-sparse engine; an approximate or Lucene engine is also timed against the exact engine, built
    in the same process after its own peak RSS is read, the two searched in alternating rounds."""
    from scipy import sparse

    from ragbench.retrievers.seismic_index import SeismicOptions, SeismicSparseIndex
    from ragbench.retrievers.sparse_index import LuceneImpactIndex, ScipySparseIndex, SparseIndex, lucene_terms
    from ragbench.types import Corpus, Document, Ranking

    engine, threads = job["engine"], job["threads"]
    task = None
    if job["data"].startswith("synthetic:"):
        from synthetic import SPARSE_VOCAB, sparse_vectors

        docs, q = sparse_vectors(int(job["data"].split(":")[1]), job["queries"], job["seed"])
        vectors = tmp / "vectors"
        vectors.mkdir()
        sparse.save_npz(vectors / "docs.npz", docs, compressed=False)
        (vectors / "meta.json").write_text(json.dumps({"integer": False}))
        corpus = Corpus.from_documents([Document(f"d{i}", "") for i in range(docs.shape[0])], "bench", "synthetic")
        del docs
        qids, terms = [f"q{i}" for i in range(q.shape[0])], [f"t{i}" for i in range(SPARSE_VOCAB)]
    else:  # the Splade stage's own cached vectors and query encoder; the engines are then built as it builds them
        from ragbench.retrievers.splade import Splade, SpladeOptions

        task = text_data(job["data"], 0, 0, cache)
        stage = Splade(SpladeOptions(top_k=TOP_K), StageEnv(cache, Reporter(quiet=True), "bench"))
        stage.prepare(task)
        vectors, corpus, terms = stage.vectors_dir, task.corpus, lucene_terms(stage.vocab())
        q = stage.encode_queries([x.text for x in task.queries])[0]
        qids = [x.id for x in task.queries]

    def exact() -> SparseIndex:
        return ScipySparseIndex(sparse.load_npz(vectors / "docs.npz"), corpus)

    stage_ = _IndexStage(tmp / "cache")
    if engine == "lucene":
        start_lucene()
        index_s, index = timed(lambda: LuceneImpactIndex(stage_, vectors, corpus, terms, threads))
    elif engine == "seismic":
        index_s, index = timed(lambda: SeismicSparseIndex(stage_, vectors, corpus, SeismicOptions(**job["seismic"]),
                                                          threads))
    else:
        index_s, index = timed(exact)
    index.search(q[:WARMUP], qids[:WARMUP], TOP_K)
    times = [timed(index.search, q, qids, TOP_K)]  # (seconds, hits) of each pass
    rss_mb = peak_rss_mb()  # before the exact engine joins this process
    ref_times: list[float] = []
    ref = exact() if engine != "scipy" else None
    if ref is not None:
        ref.search(q[:WARMUP], qids[:WARMUP], TOP_K)
    for i in range(ROUNDS):  # with a reference: the engine's first pass above, then the two alternate
        for is_engine in (False, True) if i % 2 == 0 else (True, False):
            if is_engine and i > 0:
                times.append(timed(index.search, q, qids, TOP_K))
            elif not is_engine and ref is not None:
                ref_times.append(timed(ref.search, q, qids, TOP_K)[0])
    search_s, hits = min(times, key=lambda t: t[0])
    rankings = {qid: Ranking.from_scores(qid, hits[qid], TOP_K) for qid in qids}
    return {"docs": len(corpus), "queries": len(qids), "index_s": index_s, "qps": len(qids) / search_s,
            "ref_qps": len(qids) / min(ref_times) if ref_times else None, "rss_mb": rss_mb,
            "top": {qid: r.docids for qid, r in rankings.items()},
            "ndcg": ndcg(task, rankings) if task is not None else None}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    cache = Cache(os.environ.get("RAGBENCH_CACHE") or Path.home() / ".cache" / "ragbench")
    with tempfile.TemporaryDirectory(prefix="ragbench-bench-") as tmp:
        out = (bm25_job if job["family"] == "bm25" else sparse_job)(job, Path(tmp), cache)
    out.setdefault("rss_mb", peak_rss_mb())
    return out


# ----------------------------------------------------------------------------- the table
def overlap(got: dict[str, list[str]], ref: dict[str, list[str]]) -> float:
    shared = [q for q in got if q in ref and ref[q]]
    return float(np.mean([len(set(got[q]) & set(ref[q])) / len(ref[q]) for q in shared])) if shared else float("nan")


def same(a: dict[str, Any], b: dict[str, Any]) -> str:
    """How many queries' top 10 two BM25 cells share up to ties, as "n of N"."""
    from ragbench.types import Ranking

    def ranking(r: dict[str, Any], qid: str) -> Ranking:
        return Ranking(qid, r["top"][qid], r["scores"][qid])

    shared = [q for q in a["top"] if q in b["top"]]
    n = sum(ranking(a, q).same_up_to_ties(ranking(b, q), TIE_TOLERANCE) for q in shared)
    return f"{n} of {len(shared)}"


def plan(data: list[str], skip: set[str], full: bool) -> list[tuple[str, str, str, str | None]]:
    """(family, engine, data, why it is skipped or None) for every cell of the table."""
    cells = []
    for d in data:
        n = int(d.split(":")[1]) if d.startswith("synthetic:") else 0
        for e in BM25_ENGINES:
            why = None
            if e == "rank_bm25" and (n > RANK_BM25_MAX_DOCS or d == "frames"):
                why = "exhaustive Python scoring of " + ("its 92,535 passages" if d == "frames" else
                                                         "more than 100,000 documents")
            cells.append(("bm25", e, d, why))
        for e in SPARSE_ENGINES:
            why = "its 92,535 passages would take hours to encode with splade-tiny here" if d == "frames" else None
            if e == "lucene" and n > LUCENE_IMPACT_MAX_DOCS and not full:
                why = "Anserini's impact indexing took 20 min at 1M documents here (--full to include)"
            cells.append(("sparse", e, d, why))
    return [(f, e, d, why or ("--skip" if skip & {f, f"{f}/{e}", f"{f}/{e}@{d}", f"{f}@{d}"} else None))
            for f, e, d, why in cells]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", default=["synthetic:50000", "synthetic:1000000", "scifact", "frames"])
    ap.add_argument("--queries", type=int, default=1000, help="queries of the synthetic sets")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seismic", action="append", default=[], metavar="KNOB=VALUE",
                    help="a Seismic option other than ragbench's default, e.g. --seismic heap_factor=0.9")
    ap.add_argument("--skip", nargs="*", default=[], metavar="FAMILY[/ENGINE][@DATA]",
                    help="cells left out: bm25, sparse/lucene, sparse/lucene@synthetic:1000000, bm25@frames")
    ap.add_argument("--full", action="store_true", help="also the slow cells (Lucene impact index above 100k docs)")
    ap.add_argument("--job", help=argparse.SUPPRESS)  # one measurement, in its own process
    args = ap.parse_args(argv)
    if args.job:
        print(json.dumps(run_job(json.loads(args.job))))
        return 0
    from ragbench.retrievers.bm25 import BM25Options
    from ragbench.retrievers.seismic_index import SeismicOptions

    seismic = SeismicOptions(**{k: v for k, _, v in (item.partition("=") for item in args.seismic)})
    default = BM25Options()
    print(f"machine: {os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} "
          f"GB; {args.threads} search thread(s); top-{TOP_K}; BM25 k1=0.9 b=0.4, the default analyzer; "
          f"default BM25 engine here: {default.engine}")
    print(f"seismic: {seismic.model_dump()}")
    header = (f"{'family':<7} {'engine':<10} {'data':<18} {'docs':>9} {'index s':>8} {'q/s':>8} {'ref q/s':>8} "
              f"{'q/s÷ref':>9} {'RSS MB':>7} {'overlap':>7} {'nDCG@10':>7}")
    print(header)
    results: dict[tuple[str, str, str], dict[str, Any]] = {}
    for family, engine, data, why in plan(args.data, set(args.skip), args.full):
        if why:
            print(f"{family:<7} {engine:<10} {data:<18} skipped: {why}", flush=True)
            continue
        job = {"family": family, "engine": engine, "data": data, "queries": args.queries, "seed": args.seed,
               "threads": args.threads, "seismic": seismic.model_dump()}
        done = subprocess.run([sys.executable, __file__, "--job", json.dumps(job)], capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"{family:<7} {engine:<10} {data:<18} failed: {tail}", flush=True)
            continue
        r = results[family, engine, data] = json.loads(done.stdout.strip().splitlines()[-1])
        ref = results.get((family, "bm25s" if family == "bm25" else "scipy", data))
        r["overlap"] = overlap(r["top"], ref["top"]) if ref else float("nan")
        raw = r.get("ref_qps")
        cols = [f"{r['qps']:>8.1f}", f"{raw:>8.1f}" if raw else f"{'':>8}",
                f"{r['qps'] / raw:>9.2f}" if raw else f"{'':>9}", f"{r['rss_mb']:>7.0f}", f"{r['overlap']:>7.3f}",
                f"{r['ndcg']:>7.4f}" if r["ndcg"] is not None else f"{'':>7}"]
        print(f"{family:<7} {engine:<10} {data:<18} {r['docs']:>9,} {r['index_s']:>8.1f} " + " ".join(cols), flush=True)
    return summary(results, args.data, default.engine)


def summary(results: dict[tuple[str, str, str], dict[str, Any]], data: list[str], default: str) -> int:
    synthetic = sorted((d for d in data if d.startswith("synthetic:")), key=lambda d: int(d.split(":")[1]))
    if not synthetic:
        return 0
    big = synthetic[-1]
    bm25 = {e: r for (f, e, d), r in results.items() if f == "bm25" and d == big}
    exact, seismic = results.get(("sparse", "scipy", big)), results.get(("sparse", "seismic", big))
    if default not in bm25 or not exact or not seismic:
        print("some cells of the largest synthetic set are missing: no ratio line", file=sys.stderr)
        return 1
    fastest = max(bm25, key=lambda e: bm25[e]["qps"])
    print(f"\nat {big}: fastest BM25 engine {fastest}, default {default}; stage/raw of the default "
          f"{bm25[default]['qps'] / bm25[default]['ref_qps']:.2f}")
    for d in data:
        if (r := results.get(("bm25", default, d))) and (f := results.get(("bm25", "bm25s", d))):
            print(f"{d}: top-10 of the default the same as bm25s's up to ties on {same(r, f)} queries")
    print(f"default/fastest bm25: {bm25[default]['qps'] / bm25[fastest]['qps']:.2f}; "
          f"seismic/exact: {seismic['qps'] / seismic['ref_qps']:.1f}; seismic recall@10: {seismic['overlap']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
