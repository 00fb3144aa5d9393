"""The stage cache: identical runs recompute nothing, a changed option recomputes only its
stage, and a run killed with SIGKILL mid-retrieval resumes to identical metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragbench.cache import Cache
from ragbench.config import load_pipeline, parse_pipeline
from ragbench.metrics.ir import evaluate
from ragbench.pipeline import run_pipeline
from ragbench.progress import Reporter
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from ragbench.yamlio import load_yaml

REPO = Path(__file__).resolve().parent.parent


def _pipeline(tmp_path: Path, text: str):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    pipeline, problems = parse_pipeline(load_yaml(p))
    assert not problems, problems
    return pipeline


@pytest.fixture(scope="module")
def sample_task():
    card, _ = load_task_card("popqa-sample")
    return load_task(card, data_dir=REPO / "ragbench/data/popqa_sample")


def test_changing_one_option_recomputes_only_that_stage(tmp_path: Path, sample_task) -> None:
    cache = Cache(tmp_path / "cache")
    quiet = Reporter(quiet=True)
    two = "name: two\nstages:\n  - {type: bm25, id: a, k1: 0.9}\n  - {type: bm25, id: b, k1: %s}\n"
    first = run_pipeline(_pipeline(tmp_path, two % "1.2"), sample_task, cache, quiet, batch_size=50)
    assert [s.cached for s in first.stages] == [False, False]
    again = run_pipeline(_pipeline(tmp_path, two % "1.2"), sample_task, cache, quiet, batch_size=50)
    assert [s.cached for s in again.stages] == [True, True]
    assert again.final.output.records == first.final.output.records
    changed = run_pipeline(_pipeline(tmp_path, two % "1.5"), sample_task, cache, quiet, batch_size=50)
    assert [s.cached for s in changed.stages] == [True, False]


@pytest.mark.parametrize("engine", ["bm25s", pytest.param("auto", marks=pytest.mark.lucene)])
def test_top_k_change_reuses_the_index(tmp_path: Path, sample_task, engine: str) -> None:
    cache = Cache(tmp_path / "cache")
    quiet = Reporter(quiet=True)

    def indexes() -> list[Path]:
        return sorted(p for p in (cache.root / "artifacts").glob("*/*") if p.is_dir())

    stage = "name: x\nstages:\n  - {type: bm25, engine: %s, top_k: %d}\n"
    run_pipeline(_pipeline(tmp_path, stage % (engine, 100)), sample_task, cache, quiet)
    built = indexes()
    assert len(built) == 1
    deeper = run_pipeline(_pipeline(tmp_path, stage % (engine, 200)), sample_task, cache, quiet)
    assert not deeper.final.cached  # the search ran again ...
    assert indexes() == built  # ... on the same index
    assert max(len(r) for r in deeper.final.output.records.values()) > 100


def test_no_partial_entry_is_ever_visible(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def failing_build(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed while building")

    with pytest.raises(RuntimeError):
        cache.artifact("k" * 64, failing_build)
    assert not list((tmp_path / "artifacts").rglob("half"))
    assert cache.get("k" * 64) is None
    cache.put("k" * 64, "a b c\n", {"m": 1})
    assert cache.get("k" * 64) == "a b c\n" and cache.get_meta("k" * 64) == {"m": 1}


def _run_cmd(tmp_path: Path, data: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    pipe = tmp_path / "slow.yaml"
    # rank_bm25 scores every document for every query: slow enough to be killed mid-way
    pipe.write_text("name: slow\nstages:\n  - {type: bm25, engine: rank_bm25, top_k: 100}\n")
    return [sys.executable, "-m", "ragbench.cli", "run", str(pipe), "--task", "scifact", "--data", str(data),
            "--cache-dir", str(cache), "--out", str(out), "--batch-size", "4", *extra]


def test_sigkill_mid_retrieval_then_resume(shared_data: Path, tmp_path: Path) -> None:
    data, cache = shared_data / "scifact", tmp_path / "cache"
    proc = subprocess.Popen(_run_cmd(tmp_path, data, cache, tmp_path / "killed"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    batches = cache / "batches"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if batches.exists() and sum(1 for p in batches.rglob("*") if p.is_file() and not p.name.endswith(".tmp")) >= 5:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = sum(1 for p in batches.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert 5 <= done_before < 51, "the kill must land in the middle of retrieval (51 batches in all)"
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = subprocess.run(_run_cmd(tmp_path, data, cache, tmp_path / "resumed"), capture_output=True, text=True,
                             check=True)
    assert f"{done_before} of 51 batches already cached" in resumed.stderr
    fresh = subprocess.run(_run_cmd(tmp_path, data, tmp_path / "other-cache", tmp_path / "fresh", "--no-cache"),
                           capture_output=True, text=True, check=True)
    assert "resuming" not in fresh.stderr
    m_resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["metrics"]
    m_fresh = json.loads((tmp_path / "fresh" / "metrics.json").read_text())["metrics"]
    assert m_resumed == m_fresh
    assert (tmp_path / "resumed" / "run.trec").read_text() == (tmp_path / "fresh" / "run.trec").read_text()


def test_second_identical_run_comes_from_cache(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "ragbench.cli", "run", str(REPO / "pipelines/bm25.yaml"), "--task", "popqa-sample",
           "--cache-dir", str(tmp_path / "cache"), "--results", str(tmp_path / "results")]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    second = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "every stage came from the cache" not in first.stdout
    assert "every stage came from the cache" in second.stdout
    runs = list((tmp_path / "results" / "runs" / "popqa-sample").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("bm25-")
    timings = json.loads((runs[0] / "timings.json").read_text())
    assert all(s["from_cache"] for s in timings["stages"])
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert set(metrics) >= {"task", "pipeline", "config_hash", "n_queries", "metrics"}
    assert metrics["task"] == "popqa-sample" and metrics["n_queries"] == 300
    lock = (runs[0] / "config.lock.yaml").read_text()
    assert "bm25s:" in lock and "fingerprint:" in lock


def test_limit_is_deterministic_and_evaluates_only_those_queries(tmp_path: Path, sample_task) -> None:
    card, _ = load_task_card("popqa-sample")
    task = load_task(card, data_dir=REPO / "ragbench/data/popqa_sample", limit=20)
    assert [q.id for q in task.queries] == [q.id for q in sample_task.queries[:20]]
    result = run_pipeline(load_pipeline("bm25"), task, Cache(tmp_path), Reporter(quiet=True))
    _, per_query = evaluate(result.final.output.records, task.qrels, ["nDCG@10"])
    assert len(per_query) == 20
