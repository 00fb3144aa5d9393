"""Benchmark the LLM rerankers' per-query latency against the generation baselines they replace.

    python bench/rerank.py [--task scifact] [--limit 10] [--candidates 20] [--model SmolLM2-135M-Instruct]
                           [--backend transformers|openai_server --base-url URL --served-model NAME]

Candidates: BM25 (bm25s, pyserini's BEIR flat settings) top --candidates for the first --limit
queries of the task's test split (SciFact: the 201 dev claims in ../shared/data). Every
reranker uses the same model, backend, passages (title: text, first 300 words) and candidates:

- listwise: RankZephyr-style sliding window (window 20, stride 10), numeric ids, full generation;
- icr: in-context reranking, all candidates in one prompt, two passes sharing the documents' KV cache;
- full_permutation: the FIRST prompt (letter ids) with the whole permutation generated;
- first: the same prompt, one decoding step, order read from the logits at the letter ids.

The LLM request cache is off, so every query is really asked. Methods run interleaved per
query (after one warm-up query that is not timed) so that machine noise hits all alike.
Printed: per-query latency (mean and median), nDCG@10 of BM25 and of each reranker on the
same queries, and as the last line the two ratios: ICR / listwise and FIRST / full permutation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from time import perf_counter
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ragbench import registry  # noqa: E402
from ragbench.cache import Cache  # noqa: E402
from ragbench.metrics.ir import evaluate  # noqa: E402
from ragbench.progress import Reporter  # noqa: E402
from ragbench.stage import Stage, StageEnv  # noqa: E402
from ragbench.tasks import load_task  # noqa: E402
from ragbench.tasks.card import load_task_card  # noqa: E402
from ragbench.types import Ranking, TaskData  # noqa: E402

TARGET_ICR = 0.4
TARGET_FIRST = 0.5


def make_stage(type_name: str, options: dict[str, Any], cache: Cache) -> Stage:
    cls = registry.get(type_name)
    return cls(cls.Options.model_validate(options), StageEnv(cache, Reporter(quiet=True), type_name))


def bm25_candidates(task: TaskData, k: int, cache: Cache) -> dict[str, Ranking]:
    stage = make_stage("bm25", {"engine": "bm25s", "k1": 0.9, "b": 0.4, "top_k": k}, cache)
    stage.prepare(task)
    return stage.process(task.queries, [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="scifact")
    ap.add_argument("--split", default=None)
    ap.add_argument("--data", default=None,
                    help="the task's folder (default: $RAGBENCH_DATA/<task>, or ../shared/data/<task>)")
    ap.add_argument("--limit", type=int, default=10, help="queries timed (after one warm-up query)")
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("--backend", default="transformers", choices=["transformers", "openai_server"])
    ap.add_argument("--base-url", default=None, help="openai_server: the server's /v1 URL")
    ap.add_argument("--served-model", default="smollm2", help="openai_server: the served model name")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-words", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    card, _ = load_task_card(args.task)
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / card.name
    if args.data is None and "RAGBENCH_DATA" not in os.environ and shared.exists():
        args.data = str(shared)
    task = load_task(card, args.split, data_dir=args.data, limit=args.limit + 1)
    # the default cache: the BM25 index and the converted model are reused (LLM requests are not cached)
    cache = Cache()
    candidates = bm25_candidates(task, args.candidates, cache)

    if args.backend == "transformers":
        llm: dict[str, Any] = {"backend": "transformers", "model": args.model, "device": args.device, "cache": False}
    else:
        llm = {"backend": "openai_server", "model": args.served_model, "base_url": args.base_url,
               "tokenizer": args.model, "cache": False}
    icr_llm = (dict(llm) if args.backend == "transformers"
               else {"backend": "transformers", "model": args.model, "device": args.device, "cache": False})
    common = {"top_k": args.candidates, "max_words": args.max_words}
    methods = {
        "listwise": make_stage("listwise", {**common, "llm": llm, "window": 20, "stride": 10}, cache),
        "icr": make_stage("icr", {**common, "llm": icr_llm}, cache),
        "full_permutation": make_stage(
            "listwise", {**common, "llm": llm, "window": 20, "stride": 10, "identifiers": "letters"}, cache),
        "first": make_stage("first", {**common, "llm": llm, "window": 20, "stride": 10}, cache),
    }
    for stage in methods.values():
        stage.prepare(task)

    warm, timed = task.queries[0], task.queries[1:]
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    outputs: dict[str, dict[str, Ranking]] = {m: {} for m in methods}
    for stage in methods.values():  # warm-up: first forward passes, kernels, allocator
        stage.process([warm], [{warm.id: candidates[warm.id]}])
    for i, q in enumerate(timed, 1):
        for name, stage in methods.items():
            start = perf_counter()
            outputs[name].update(stage.process([q], [{q.id: candidates[q.id]}]))
            seconds[name].append(perf_counter() - start)
        print(f"query {i}/{len(timed)} " + "  ".join(f"{m} {seconds[m][-1]:.2f}s" for m in methods),
              file=sys.stderr, flush=True)

    qrels = {q.id: task.qrels[q.id] for q in timed if q.id in task.qrels}
    before = evaluate({q.id: candidates[q.id] for q in timed}, qrels, ["nDCG@10"])[0]["nDCG@10"]
    print(f"task {task.name}/{task.split}: {len(timed)} queries timed, BM25 top-{args.candidates}, "
          f"model {args.model}, backend {args.backend}, max_words {args.max_words}")
    print(f"{'method':<18}{'mean s/query':>14}{'median':>10}{'nDCG@10':>10}")
    print(f"{'bm25 (input)':<18}{'':>14}{'':>10}{before:>10.4f}")
    for name in methods:
        ndcg = evaluate(outputs[name], qrels, ["nDCG@10"])[0]["nDCG@10"]
        print(f"{name:<18}{statistics.mean(seconds[name]):>14.2f}{statistics.median(seconds[name]):>10.2f}{ndcg:>10.4f}")
    icr = statistics.mean(seconds["icr"]) / statistics.mean(seconds["listwise"])
    first = statistics.mean(seconds["first"]) / statistics.mean(seconds["full_permutation"])
    print(f"latency ratios: icr/listwise = {icr:.3f} (target <= {TARGET_ICR})  "
          f"first/full_permutation = {first:.3f} (target <= {TARGET_FIRST})")


if __name__ == "__main__":
    main()
