"""Execution settings (threads, devices, batch sizes, servers, timeouts) stay out of cache keys: changing one
reuses every cached result, changing a result setting does not, and the lock file keeps the real values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ragbench import registry
from ragbench.cache import Cache
from ragbench.config import load_pipeline
from ragbench.llm.config import OpenAIServerConfig, TransformersLLMConfig, VLLMConfig
from ragbench.pipeline import run_pipeline, stage_key
from ragbench.progress import Reporter
from ragbench.stage import execution_fields
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sample_task():
    card, _ = load_task_card("popqa-sample")
    return load_task(card, data_dir=REPO / "ragbench/data/popqa_sample")


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[Path, str]:
    out = tmp_path / name
    done = subprocess.run([sys.executable, "-m", "ragbench.cli", "run", str(REPO / "pipelines/bm25.yaml"), "--task",
                           "popqa-sample", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), *extra],
                          capture_output=True, text=True, check=True)
    return out, done.stdout


def test_more_threads_reuse_every_stage_and_the_lock_keeps_them(tmp_path: Path) -> None:
    """Bar 1: `--set bm25.threads=2` after a run with threads=1 comes wholly from the cache."""
    one, _ = _run(tmp_path, "one", "--set", "bm25.threads=1")
    two, stdout = _run(tmp_path, "two", "--set", "bm25.threads=2")
    assert "every stage came from the cache" in stdout
    timings = [json.loads((run / "timings.json").read_text())["stages"] for run in (one, two)]
    assert not timings[0][0]["from_cache"] and all(s["from_cache"] for s in timings[1])
    assert [s["cache_key"] for s in timings[0]] == [s["cache_key"] for s in timings[1]]
    assert (one / "run.trec").read_bytes() == (two / "run.trec").read_bytes()
    metrics = [json.loads((run / "metrics.json").read_text())["metrics"] for run in (one, two)]
    assert metrics[0] == metrics[1]
    locks = [yaml.safe_load((run / "config.lock.yaml").read_text()) for run in (one, two)]
    assert [lock["pipeline"]["stages"][0]["threads"] for lock in locks] == [1, 2]


def test_a_result_setting_is_not_reused(tmp_path: Path, sample_task) -> None:
    cache, quiet = Cache(tmp_path / "cache"), Reporter(quiet=True)
    first = run_pipeline(load_pipeline("bm25"), sample_task, cache, quiet)
    threads = run_pipeline(load_pipeline("bm25", ["bm25.threads=2"]), sample_task, cache, quiet)
    k1 = run_pipeline(load_pipeline("bm25", ["bm25.k1=1.2"]), sample_task, cache, quiet)
    assert threads.final.cached and threads.final.key == first.final.key
    assert not k1.final.cached and k1.final.key != first.final.key
    assert k1.final.output.records != first.final.output.records


def _key(pipeline: str, stage: str, *overrides: str) -> str:
    from types import SimpleNamespace

    spec = next(s for s in load_pipeline(pipeline, list(overrides)).stages if s.id == stage)
    task = SimpleNamespace(corpus=SimpleNamespace(fingerprint="corpus"), pool_fingerprint="pool")
    return stage_key(spec, [SimpleNamespace(key="upstream")], task)  # type: ignore[arg-type]


def test_llm_servers_and_concurrency_leave_the_key_unchanged() -> None:
    server = "reader.llm={backend: openai_server, model: smollm2, base_url: %s, concurrency: %d, timeout: %g%s}"
    base = _key("popqa-rag", "reader", server % ("http://a:8000/v1", 8, 300, ""))
    assert _key("popqa-rag", "reader", server % ("[http://a:8000/v1, http://b:8001/v1]", 64, 30, "")) == base
    assert _key("popqa-rag", "reader", server % ("http://c:9/v1", 1, 5, ", retries: 0, backoff: 0")) == base
    assert _key("popqa-rag", "reader", server % ("http://a:8000/v1", 8, 300, ", api_key: sk-secret")) == base
    # what the server is asked still counts
    assert _key("popqa-rag", "reader", server % ("http://a:8000/v1", 8, 300, ", top_logprobs: 5")) != base
    assert _key("popqa-rag", "reader", "reader.llm.device=cuda") == _key("popqa-rag", "reader")
    assert _key("popqa-rag", "reader", "reader.llm.batch_size=2") != _key("popqa-rag", "reader")
    assert _key("popqa-rag", "reader", "reader.llm.dtype=bfloat16") != _key("popqa-rag", "reader")


def test_every_shipped_pipeline_keeps_its_key() -> None:
    """Execution settings are reset to their defaults, not removed: a pipeline that leaves them at their
    defaults hashes exactly as before they were declared (the reference runs still come from the cache)."""
    pipelines = sorted((REPO / "pipelines").glob("*.yaml"))
    assert len(pipelines) >= 10
    for path in pipelines:
        for spec in load_pipeline(path).stages:
            assert spec.key_dict() == spec.as_dict(), (path.name, spec.id)


def test_the_declared_execution_settings() -> None:
    """The table in docs/scaling.md, checked: what each component leaves out of its key."""
    fields = {name: set(execution_fields(registry.get(name).Options)) for name in registry.names()}
    assert fields["bm25"] == {"threads"}
    assert fields["dense"] == {"batch_size", "checkpoint_every", "device"}
    assert fields["splade"] == fields["llm_sparse"] == {"batch_size", "device", "threads"}
    assert fields["cross_encoder"] == {"batch_size", "device"}
    assert fields["fusion"] == set()
    llm = {"llm.cache", "llm.device", "llm.gpu_memory_utilization", "llm.base_url", "llm.api_key", "llm.concurrency",
           "llm.timeout", "llm.retries", "llm.backoff"}
    for name in ("reader", "judge", "relevance_judge", "listwise", "first", "icr", "hard_negatives"):
        assert fields[name] == llm, name
    # batched generation pads prompts on the left, which changes greedy replies: not an execution setting
    assert "batch_size" not in execution_fields(TransformersLLMConfig)
    # vLLM's tensor parallelism and CUDA graphs change the kernels every request runs (vLLM documents that its
    # outputs are reproducible only on the same hardware and settings): they stay in the key
    assert {"tensor_parallel_size", "enforce_eager"}.isdisjoint(execution_fields(VLLMConfig))
    assert set(execution_fields(OpenAIServerConfig)) >= {"base_url", "concurrency", "timeout", "retries", "backoff"}
