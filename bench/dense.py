"""Benchmark the dense stage's corpus encoding: throughput against plain sentence-transformers,
and peak memory while encoding a large synthetic corpus.

    python bench/dense.py [--docs 100000] [--throughput-docs 5000] [--batch-size 64] [--repeats 2] [--seed 0]
                          [--threads N]

Documents are 30-60 words drawn (Zipf 1.07) from the whole-word entries of the model's own
WordPiece vocabulary, so a word is about one token (about 32-62 tokens per document).

Throughput: the same SentenceTransformer instance encodes the first --throughput-docs documents
(1) with plain `SentenceTransformer.encode(texts, batch_size, normalize_embeddings=True)` and
(2) through `Dense.prepare` on an empty temporary cache: checkpoints of batch_size x 16 texts,
each written into the on-disk memmap, flushed, and followed by an atomic progress file, then
the matrix moved into its artifact folder and opened with mmap. Both run after a warm-up,
alternating, --repeats times; each side's best docs/s is kept.

Peak RSS: a child process (so the throughput run's allocations do not count) generates --docs
documents, loads the model, and runs `Dense.prepare` on them; it reports its high-water RSS
(getrusage ru_maxrss) before encoding and at the end. The matrix size is rows x dim x 4 bytes.
The last line printed is the throughput ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from ragbench.cache import Cache  # noqa: E402
from ragbench.progress import Reporter  # noqa: E402
from ragbench.retrievers.dense import Dense, DenseOptions  # noqa: E402
from ragbench.stage import StageEnv  # noqa: E402
from ragbench.types import Corpus, Document, TaskData  # noqa: E402

DOC_WORDS = (30, 60)
ZIPF_S = 1.07
TARGET = 0.9


def vocabulary(stage: Dense) -> list[str]:
    vocab = stage.model.tokenizer.get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) >= 3)
    return words


def make_task(words: list[str], n_docs: int, seed: int) -> TaskData:
    rng = np.random.default_rng(seed)
    arr = np.array(words)
    rng.shuffle(arr)
    p = np.arange(1, len(arr) + 1, dtype=np.float64) ** -ZIPF_S
    p /= p.sum()
    lengths = rng.integers(DOC_WORDS[0], DOC_WORDS[1] + 1, n_docs)
    ids = rng.choice(len(arr), size=int(lengths.sum()), p=p)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    docs = {}
    for i in range(n_docs):
        did = f"d{i:07d}"
        docs[did] = Document(did, " ".join(arr[ids[bounds[i]:bounds[i + 1]]].tolist()))
    params = f"synthetic-dense:{n_docs}:{seed}:{DOC_WORDS}:{ZIPF_S}"
    corpus = Corpus(docs, params, source=params)
    return TaskData("synthetic-dense", "test", [], {}, corpus, params, params)


def new_stage(cache_dir: str, batch_size: int) -> Dense:
    return Dense(DenseOptions(batch_size=batch_size), StageEnv(Cache(cache_dir), Reporter(quiet=True), "bench-dense"))


def max_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def child(args: argparse.Namespace) -> int:
    """Encode --docs documents through the stage; print one JSON line of measurements."""
    with tempfile.TemporaryDirectory(prefix="ragbench-bench-dense-") as tmp:
        stage = new_stage(tmp, args.batch_size)
        task = make_task(vocabulary(stage), args.docs, args.seed)
        stage.resolved.identity()  # hash the weights before the clock starts
        before = max_rss_mb()
        t0 = perf_counter()
        stage.prepare(task)
        seconds = perf_counter() - t0
        out = {"docs": args.docs, "seconds": seconds, "rss_before_mb": before, "rss_peak_mb": max_rss_mb(),
               "matrix_mb": stage.emb.nbytes / 1e6, "shape": list(stage.emb.shape), "dtype": str(stage.emb.dtype)}
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000, help="documents for the peak-RSS run")
    ap.add_argument("--throughput-docs", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads for both sides (0 = torch's default)")
    ap.add_argument("--skip-rss", action="store_true", help="only measure throughput")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.child:
        return child(args)

    with tempfile.TemporaryDirectory(prefix="ragbench-bench-dense-") as tmp:
        probe = new_stage(tmp, args.batch_size)
        model = probe.model
        task = make_task(vocabulary(probe), args.throughput_docs, args.seed)
        texts = list(task.corpus.texts())
        tokens = sum(len(x) for x in model.tokenizer(texts, add_special_tokens=False)["input_ids"])
        print(f"corpus: {args.throughput_docs:,} docs of {DOC_WORDS[0]}-{DOC_WORDS[1]} words "
              f"({tokens / len(texts):.1f} tokens/doc) "
              f"from {len(vocabulary(probe)):,} whole-word vocabulary entries, Zipf({ZIPF_S}), seed {args.seed}")
        print(f"model: {probe.options.model} on {model.device}, max_seq_length {model.max_seq_length}, "
              f"batch {args.batch_size}, "
              f"torch threads {__import__('torch').get_num_threads()}")
        probe.resolved.identity()  # weight hash memoised before timing
        model.encode(texts[:256], batch_size=args.batch_size, normalize_embeddings=True)  # warm-up

        plain, ours = [], []
        for r in range(args.repeats):
            t0 = perf_counter()
            ref = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)
            plain.append(len(texts) / (perf_counter() - t0))
            stage = new_stage(str(Path(tmp) / f"run{r}"), args.batch_size)
            t0 = perf_counter()
            stage.prepare(task)
            ours.append(len(texts) / (perf_counter() - t0))
            diff = float(np.abs(np.asarray(stage.emb) - ref).max())
            print(f"  round {r + 1}: plain {plain[-1]:,.1f} docs/s, ragbench {ours[-1]:,.1f} docs/s "
                  f"(max |diff| {diff:.1e})", flush=True)
            del stage

    if not args.skip_rss:
        print(f"peak RSS: encoding {args.docs:,} docs in a child process ...", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--child", "--docs", str(args.docs),
                               "--batch-size", str(args.batch_size), "--seed", str(args.seed),
                               "--threads", str(args.threads)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {m['docs']:,} docs encoded in {m['seconds']:.0f} s ({m['docs'] / m['seconds']:,.1f} docs/s)")
        print(f"  peak RSS {m['rss_peak_mb']:,.0f} MB (before encoding, with model and corpus loaded: "
              f"{m['rss_before_mb']:,.0f} MB; "
              f"growth {m['rss_peak_mb'] - m['rss_before_mb']:,.0f} MB)")
        print(f"  vector matrix {m['matrix_mb']:,.1f} MB ({m['shape'][0]:,} x {m['shape'][1]} {m['dtype']}, "
              "on disk, mmap)")

    best_plain, best_ours = max(plain), max(ours)
    print(f"throughput (best of {args.repeats}): plain SentenceTransformer.encode {best_plain:,.1f} docs/s, "
          f"ragbench Dense {best_ours:,.1f} docs/s")
    ratio = best_ours / best_plain
    print(f"ratio ragbench/plain encoding docs/s: {ratio:.3f} (target >= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
