"""Benchmark corpus encoding in this process against a Ray Data actor pool of 1 and 2 workers.

    python bench/scale.py [--docs 3000] [--batch-size 64] [--checkpoint-every 2] [--no-two-threads]

The corpus is the first --docs SciFact passages (title + abstract; $RAGBENCH_DATA/scifact), or
synthetic passages when SciFact is not there. Each configuration encodes it with the dense stage
(all-MiniLM-L6-v2, `Dense.prepare` on an empty temporary cache: parts of batch-size x
checkpoint-every rows, each written to the work folder, then assembled):

- in-process: one torch thread (`torch.set_num_threads(1)`), the model loaded again first;
- Ray, 1 worker and 2 workers: `--executor ray` on a local cluster started once beforehand
  (`ray.init(num_cpus=2)`, timed apart: a cluster outlives many encodings); each actor holds one
  CPU and one torch thread and loads the model itself, which the timing includes.

One thread per worker makes the comparison per core: 1 worker / in-process is Ray's overhead
(actor start, model load in the actor, a part's round trip), 2 workers / 1 worker its scaling.
With --two-threads (default on) the in-process run is also timed with two torch threads, as a
local run uses a 2-core machine, for reference. Every configuration must write the same
embeddings.npy, byte for byte. Passages/s per worker is the steady rate: rows of the parts
finished after the first one per worker, over the time since then, divided by the workers (model
load and warm-up excluded): what a projection to a large corpus should use. The last line is the pair of ratios.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from ragbench import executors  # noqa: E402
from ragbench.cache import Cache  # noqa: E402
from ragbench.executors import ExecutorSpec  # noqa: E402
from ragbench.models import forget_loaded  # noqa: E402
from ragbench.progress import Reporter  # noqa: E402
from ragbench.retrievers.dense import Dense, DenseOptions  # noqa: E402
from ragbench.stage import StageEnv  # noqa: E402
from ragbench.types import Corpus, Document, TaskData  # noqa: E402


def passages(n: int, seed: int = 0) -> tuple[list[Document], str]:
    """The first n SciFact passages, or n synthetic ones (150-250 words) when SciFact is absent."""
    path = Path(os.environ.get("RAGBENCH_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
    path = path / "scifact/corpus.jsonl.gz"
    if path.exists():
        docs = []
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                docs.append(Document(str(d.get("id", d.get("_id"))), d.get("text", ""), d.get("title", "")))
                if len(docs) == n:
                    break
        return docs, f"SciFact (first {len(docs):,} passages)"
    rng = random.Random(seed)
    words = [f"{a}{b}{c}" for a in "bdfgklmnprstvz" for b in "aeiou" for c in ("", "n", "r", "s", "l")]
    docs = [Document(f"s{i}", " ".join(rng.choices(words, k=rng.randint(150, 250))), f"passage {i}") for i in range(n)]
    return docs, f"synthetic ({n:,} passages of 150-250 words)"


class Clock(Reporter):
    """A quiet reporter that times each finished part (the protocol advances once per part)."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.finished: list[tuple[float, int]] = []  # (time, rows) per part, in the order they finished

    @contextmanager
    def task(self, description: str, total: int, unit: str = "items") -> Iterator[Callable[[int], None]]:
        yield lambda n=1: self.finished.append((time.perf_counter(), n))

    def steady(self, warm: int) -> float:
        """Rows/s over the parts finished after the first `warm` (each worker's first: model load, warm-up)."""
        if len(self.finished) <= warm + 1:
            return float("nan")
        start = self.finished[warm - 1][0]
        rows = sum(n for _, n in self.finished[warm:])
        return rows / (self.finished[-1][0] - start)


def timed(corpus: Corpus, options: DenseOptions, executor: ExecutorSpec) -> tuple[float, bytes, float]:
    """(seconds, embeddings.npy bytes, steady rows/s per worker) of one encoding on an empty cache."""
    task = TaskData("scale", "bench", [], {}, corpus, "bench", corpus.fingerprint)
    forget_loaded()
    clock = Clock()
    workers = executor.workers or 1
    with tempfile.TemporaryDirectory(prefix="ragbench-scale-") as tmp:
        stage = Dense(options, StageEnv(Cache(tmp), clock, "dense", executor=executor))
        start = time.perf_counter()
        stage.prepare(task)
        seconds = time.perf_counter() - start
        data = (stage.embeddings_path / "embeddings.npy").read_bytes()
    return seconds, data, clock.steady(workers) / workers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--checkpoint-every", type=int, default=2, help="batches per part (parts of 128 rows)")
    ap.add_argument("--no-two-threads", dest="two_threads", action="store_false",
                    help="skip the in-process run with two torch threads")
    args = ap.parse_args()
    logging.getLogger("ray").setLevel(logging.ERROR)

    docs, what = passages(args.docs)
    fingerprint = hashlib.sha256(json.dumps([(d.id, d.title, d.text) for d in docs]).encode()).hexdigest()
    corpus = Corpus({d.id: d for d in docs}, fingerprint)
    options = DenseOptions(batch_size=args.batch_size, checkpoint_every=args.checkpoint_every)
    part_rows = args.batch_size * args.checkpoint_every
    print(f"corpus: {what}; all-MiniLM-L6-v2, max_seq_length 256, parts of {part_rows} rows "
          f"({-(-len(docs) // part_rows)} parts); {os.cpu_count()} CPUs", flush=True)

    results: dict[str, tuple[float, bytes, float]] = {}
    if args.two_threads:
        torch.set_num_threads(2)
        results["in-process, 2 threads"] = timed(corpus, options, executors.LOCAL)
    torch.set_num_threads(1)
    results["in-process, 1 thread"] = timed(corpus, options, executors.LOCAL)

    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    print(f"ray.init(num_cpus=2): {time.perf_counter() - start:.1f}s (not counted below)", flush=True)
    try:
        for workers in (1, 2):
            results[f"Ray, {workers} worker{'s' * (workers > 1)}"] = timed(corpus, options,
                                                                          ExecutorSpec(kind="ray", workers=workers))
    finally:
        ray.shutdown()

    reference = results["in-process, 1 thread"][1]
    print(f"{'configuration':24} {'seconds':>8} {'passages/s':>11} {'steady passages/s per worker':>29}  vectors")
    for name, (seconds, data, steady) in results.items():
        same = "identical" if data == reference else "DIFFERENT"
        print(f"{name:24} {seconds:8.1f} {len(docs) / seconds:11.1f} {steady:29.1f}  {same}")
    if any(data != reference for _, data, _ in results.values()):
        sys.exit("vectors differ between configurations")
    one, two, local = results["Ray, 1 worker"][0], results["Ray, 2 workers"][0], results["in-process, 1 thread"][0]
    print(f"2 workers / 1 worker: {one / two:.2f}; 1 worker / in-process: {local / one:.2f}")


if __name__ == "__main__":
    main()
