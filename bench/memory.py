"""Peak anonymous memory of a Lucene BM25 run against corpus size (issue 16, bar 3).

    python bench/memory.py [--sizes 100000 1000000] [--words 20] [--queries 200] [--seed 0] [--keep DIR]

For each size, a synthetic BEIR-style task folder is written (corpus.jsonl.gz of documents of
`--words` words drawn from a Zipf(1.07) vocabulary of 200,000 pseudo-words, queries of 3 words
taken from random documents, each judged relevant to its document, and a task card), then

    python -m ragbench.cli run pipelines/bm25.yaml --task <folder>/task.yaml --data <folder>
        --set bm25.engine=lucene --out <folder>/run

runs in a subprocess with its own empty RAGBENCH_CACHE (so the run converts the corpus, builds the
index and searches), while this script samples RssAnon (anonymous resident memory: the Python heap,
the JVM heap, numpy arrays; not memory-mapped files) of that process and all its descendants from
/proc every 50 ms. It prints the peak per size and, last, the growth between the first two sizes
against the target of 100 MB. Run it on a quiet machine: the 1M-document run takes a few minutes.

A child forked from the run shares the run's pages until it execs, and /proc counts them in both:
a sample caught in that window shows twice the run's memory. A ragbench run starts no subprocess
(record.py computes the platform string without `uname -p`), so the sum is the run's own memory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VOCAB = 200_000
ZIPF_S = 1.07
TARGET_MB = 100.0
CARD = """name: synthetic-memory
description: "bench/memory.py: a synthetic corpus for the memory bar"
splits:
  test: {}
metrics: [nDCG@10, R@100]
answer_metrics: []
"""


def pseudo_words(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct pronounceable words ending in 'k' (Porter stemming and the stopword list leave them alone)."""
    syllables = np.array([c + v for c in "bdfghjlmnprstvwz" for v in "aeiou"])
    words: set[str] = set()
    while len(words) < n:
        parts = syllables[rng.integers(0, len(syllables), size=(n, 4))]
        lengths = rng.integers(2, 5, size=n)
        words.update("".join(p[:k]) + "k" for p, k in zip(parts.tolist(), lengths.tolist(), strict=True))
    out = np.array(sorted(words)[:n])
    rng.shuffle(out)  # word i has Zipf rank i + 1
    return out


def write_task(folder: Path, n_docs: int, n_words: int, n_queries: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    words = pseudo_words(rng, VOCAB)
    p = np.arange(1, VOCAB + 1, dtype=np.float64) ** -ZIPF_S
    p /= p.sum()
    folder.mkdir(parents=True, exist_ok=True)
    sample = set(rng.choice(n_docs, size=n_queries, replace=False).tolist())
    queries, qrels = [], []
    chunk = 50_000
    with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as f:
        for start in range(0, n_docs, chunk):
            n = min(chunk, n_docs - start)
            tokens = words[rng.choice(VOCAB, size=(n, n_words), p=p)]
            lines = []
            for i, row in enumerate(tokens.tolist(), start=start):
                did = f"d{i:08d}"
                lines.append(json.dumps({"id": did, "title": "", "text": " ".join(row)}))
                if i in sample:
                    qid = f"q{len(queries):05d}"
                    queries.append(json.dumps({"id": qid, "text": " ".join(row[:3])}))
                    qrels.append(f"{qid}\t{did}\t1")
            f.write("\n".join(lines) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(queries) + "\n")
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    (folder / "task.yaml").write_text(CARD)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def rss_anon_kb(pid: int) -> int:
    """RssAnon of a process and all its descendants, in kB (0 for processes that just exited)."""
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("RssAnon:")), 0)
        except OSError:
            pass
    return total


def measure(folder: Path, cache: Path) -> tuple[float, float, int]:
    """(peak RssAnon MB, seconds, exit status) of one Lucene BM25 run over the task in `folder`."""
    cmd = [sys.executable, "-m", "ragbench.cli", "run", str(REPO / "pipelines" / "bm25.yaml"),
           "--task", str(folder / "task.yaml"), "--data", str(folder), "--set", "bm25.engine=lucene",
           "--out", str(folder / "run")]
    env = {**os.environ, "RAGBENCH_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_anon_kb(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    done.set()
    sampler.join()
    if proc.returncode != 0:
        print(output[-3000:], file=sys.stderr)
    return peak / 1024, time.perf_counter() - start, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--words", type=int, default=20)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="write the task folders and caches here (default: a temp folder)")
    args = ap.parse_args()
    if len(args.sizes) < 2:
        ap.error("--sizes: give at least two sizes")
    with tempfile.TemporaryDirectory(prefix="ragbench-memory-") as tmp:
        root = args.keep or Path(tmp)
        peaks = []
        for n in args.sizes:
            folder = root / f"docs-{n}"
            t0 = time.perf_counter()
            write_task(folder, n, args.words, args.queries, args.seed)
            made = time.perf_counter() - t0
            peak, seconds, status = measure(folder, root / f"cache-{n}")
            if status != 0:
                sys.exit(f"the run over {n:,} documents failed (exit {status})")
            metrics = json.loads((folder / "run" / "metrics.json").read_text())["metrics"]
            print(f"{n:>10,} docs: peak RssAnon {peak:8.1f} MB, run {seconds:6.1f} s (corpus written in {made:.0f} s), "
                  f"R@100 {metrics.get('R@100', float('nan')):.3f}", flush=True)
            peaks.append(peak)
        growth = peaks[1] - peaks[0]
        print(f"peak RssAnon growth {args.sizes[0] // 1000:,}k -> {args.sizes[1] // 1000:,}k: {growth:.0f} MB "
              f"(target <= {TARGET_MB:.0f})".replace("1,000k", "1M"))


if __name__ == "__main__":
    main()
