"""Corpus encoding on a real Ray cluster (`--executor ray`), against the same encoding in this process.

- The executor comes from `--executor/--workers/--ray-address` or the pipeline's `executor:` block,
  is checked in one line, and never changes the run folder's name or a stage's cache key.
- Bar 2: `ragbench run pipelines/dense.yaml --executor ray --workers 2` writes a byte-identical
  run.trec, the same corpus matrix and equal metrics to a local run.
- Bar 5: killing a Ray worker mid-encoding loses only the part it was encoding (Ray restarts the
  actor, the part is encoded again); killing the driver mid-encoding and running again encodes only
  the parts not on disk. Both end with the vectors of a local encoding.

"Only the missing parts" is checked by content, not by the code's own count: once some parts are
on disk, one finished part is replaced with a marker of the same shape; the assembled matrix must
hold the marker there (the part was reused, not encoded again) and the local vectors everywhere
else (every other part was encoded, each exactly as locally). The clusters are real local ones
(`ray.init(num_cpus=2)`); worker processes are found under this test's own processes in /proc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ragbench import cli
from ragbench.cache import Cache
from ragbench.config import load_pipeline, validate_file
from ragbench.executors import ExecutorSpec, from_options, ray_session
from ragbench.progress import Reporter
from ragbench.retrievers.dense import Dense, DenseOptions
from ragbench.stage import StageEnv
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from ragbench.types import Corpus, TaskData

try:
    import ray  # noqa: F401
except ImportError:
    HAS_RAY = False
else:
    HAS_RAY = True
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install 'ragbench[ray]'): "
                                                   "no Ray executor to test")

REPO = Path(__file__).resolve().parent.parent
#: parts of 8 documents cut to 128 tokens: 185 short parts for the 1,475 passages of the PopQA sample, time
#: enough to kill something mid-encoding
SMALL_PARTS = {"batch_size": 8, "checkpoint_every": 1, "max_length": 128}
PART_ROWS = SMALL_PARTS["batch_size"] * SMALL_PARTS["checkpoint_every"]
# The sample encoded, locally and on a Ray cluster: minutes each, so `make test-all` runs them
# (tests/test_ray_runs.py keeps a dense run on Ray in `make test`).
def SLOW(test):  # noqa: N802 - used as a decorator, like pytest's marks
    return pytest.mark.slow(pytest.mark.timeout(1800)(test))


MARKER = 7.0
ACTOR = "MapBatches(_Actor)"  # in a Ray Data actor's process title


# ----------------------------------------------------------------------------- choosing the executor
def test_executor_block_and_command_line(tmp_path):
    """`executor:` in the YAML and --executor/--workers/--ray-address: parsed, checked in one line each, and never
    part of what names the run folder or keys the cache."""
    text = (REPO / "pipelines/dense.yaml").read_text()
    (tmp_path / "ray.yaml").write_text(text + "executor: {kind: ray, workers: 2}\n")
    plain, on_ray = load_pipeline(REPO / "pipelines/dense.yaml"), load_pipeline(tmp_path / "ray.yaml")
    assert plain.executor is None and on_ray.executor == ExecutorSpec(kind="ray", workers=2)
    assert on_ray.until("dense").executor == on_ray.executor
    assert on_ray.config_hash() == plain.config_hash()
    assert [st.as_dict() for st in on_ray.stages] == [st.as_dict() for st in plain.stages]

    for block, message in [("{kind: local, workers: 2}", "workers and address are for kind: ray"),
                           ("{kind: ray, workers: 0}", "executor.workers: Input should be greater than or equal to 1"),
                           ("{kind: spark}", "executor.kind: Input should be 'local' or 'ray'")]:
        (tmp_path / "bad.yaml").write_text(text + f"executor: {block}\n")
        problems = [str(p) for p in validate_file(tmp_path / "bad.yaml")]
        assert len(problems) == 1 and message in problems[0], problems

    assert from_options(None, None, None) is None  # the pipeline's block, else local
    assert from_options(None, 3, None) == ExecutorSpec(kind="ray", workers=3)
    assert from_options("ray", None, "auto") == ExecutorSpec(kind="ray", address="auto")
    result = CliRunner().invoke(cli.main, ["run", "pipelines/dense.yaml", "--executor", "local", "--workers", "2"])
    assert result.exit_code == 2 and "--workers and --ray-address need --executor ray" in result.output


# ----------------------------------------------------------------------------- encoding on Ray
@pytest.fixture(scope="module")
def popqa() -> TaskData:
    card, _ = load_task_card("popqa-sample")
    return load_task(card)


@pytest.fixture(scope="module")
def local_vectors(popqa: TaskData, tmp_path_factory) -> np.ndarray:
    """The corpus matrix encoded in this process, in the same parts."""
    s = Dense(DenseOptions(**SMALL_PARTS), StageEnv(Cache(tmp_path_factory.mktemp("local")), Reporter(quiet=True), "d"))
    s.prepare(popqa)
    return np.asarray(s.emb)


def ragbench(*args: str, cache: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ragbench.cli", "run", *args, "--cache-dir", str(cache),
                             "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "160"})


def finished(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


def descendants(pid: int) -> dict[int, str]:
    """Every process under `pid`, with its command line (read from /proc): the processes this test started."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            commands[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = commands.get(child, "")
            todo.append(child)
    return out


def wait_for_parts(cache: Path, n: int, timeout: float = 600) -> list[Path]:
    """The finished part files once at least `n` are on disk, oldest first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = list((cache / "work").rglob("part-*.npy"))
        if len(parts) >= n:
            return sorted(parts, key=lambda p: p.stat().st_mtime_ns)
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} parts after {timeout}s")


def mark(part: Path) -> int:
    """Replace a finished part with the marker (same shape and dtype, written atomically); returns its index."""
    rows = np.load(part)
    tmp = part.with_name(".marker.npy")
    np.save(tmp, np.full_like(rows, MARKER))
    os.replace(tmp, part)
    return int(part.stem.split("-")[1])


def assert_marker_kept_and_rest_local(emb: np.ndarray, local: np.ndarray, marked: int) -> None:
    start, stop = marked * PART_ROWS, (marked + 1) * PART_ROWS
    assert (emb[start:stop] == MARKER).all(), "the finished part was encoded again"
    rest = np.s_[start:stop]
    np.testing.assert_array_equal(np.delete(emb, rest, axis=0), np.delete(local, rest, axis=0))


@needs_ray
@SLOW
def test_dense_on_ray_writes_the_local_run_byte_for_byte(tmp_path):
    """Bar 2, through the command line: separate caches, so each run encodes the corpus itself."""
    local = ragbench("pipelines/dense.yaml", "--task", "popqa-sample", cache=tmp_path / "c1", out=tmp_path / "local")
    finished(local)
    on_ray = ragbench("pipelines/dense.yaml", "--task", "popqa-sample", "--executor", "ray", "--workers", "2",
                      cache=tmp_path / "c2", out=tmp_path / "ray")
    err = finished(on_ray)
    assert "parts on Ray, 2 workers" in err
    assert (tmp_path / "ray/run.trec").read_bytes() == (tmp_path / "local/run.trec").read_bytes()
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text())["metrics"] for run in ("local", "ray")]
    assert metrics[0] == metrics[1]
    matrices = [next((tmp_path / c / "artifacts").rglob("embeddings.npy")).read_bytes() for c in ("c1", "c2")]
    assert matrices[0] == matrices[1]


def artifact_files(stage_dir: Path) -> dict[str, bytes]:
    """An artifact's files (its integrity stamps aside, which hold modification times)."""
    return {p.name: p.read_bytes() for p in stage_dir.iterdir() if not p.name.startswith(".")}


@needs_ray
@SLOW
def test_chunked_dense_and_splade_on_ray_write_the_local_artifacts(popqa: TaskData, tmp_path, monkeypatch):
    """Workers read a chunk plan from the work folder, and sparse parts come in pairs of files: same bytes."""
    import ray

    from ragbench.retrievers.splade import Splade, SpladeOptions

    docs = next(popqa.corpus.batches(200))
    corpus = Corpus({d.id: d for d in docs}, f"{popqa.corpus.fingerprint}-first-200")
    task = TaskData("sub", "test", popqa.queries[:20], {}, corpus, "tests", corpus.fingerprint)
    monkeypatch.setattr(Splade, "chunk_docs", 32)
    stages = {"dense": lambda env: Dense(DenseOptions(batch_size=16, checkpoint_every=2, chunking={"size": 48}), env),
              "splade": lambda env: Splade(SpladeOptions(batch_size=8), env)}
    ray_session(ExecutorSpec(kind="ray", workers=2))  # as ragbench starts it: the JVM keeps its signal handler
    try:
        for name, make in stages.items():
            built = {}
            for where, executor in (("local", ExecutorSpec()), ("ray", ExecutorSpec(kind="ray", workers=2))):
                stage = make(StageEnv(Cache(tmp_path / name / where), Reporter(quiet=True), name, executor=executor))
                stage.prepare(task)
                built[where] = (artifact_files(getattr(stage, "embeddings_path", None) or stage.vectors_dir),
                                stage.search(task.queries))
            assert built["ray"][0] == built["local"][0], name
            assert built["ray"][1] == built["local"][1], name
    finally:
        ray.shutdown()


@needs_ray
@SLOW
def test_a_killed_worker_loses_only_the_part_it_was_encoding(popqa: TaskData, local_vectors, tmp_path):
    import ray

    ray_session(ExecutorSpec(kind="ray", workers=2))  # as ragbench starts it: the JVM keeps its signal handler
    try:
        cache = Cache(tmp_path / "cache")
        stage = Dense(DenseOptions(**SMALL_PARTS),
                      StageEnv(cache, Reporter(quiet=True), "d", executor=ExecutorSpec(kind="ray", workers=2)))
        failure: list[BaseException] = []

        def build() -> None:
            try:
                stage.prepare(popqa)
            except BaseException as e:  # noqa: BLE001 - reported by the test below
                failure.append(e)

        thread = threading.Thread(target=build)
        thread.start()
        parts = wait_for_parts(cache.root, 4)
        actors = [pid for pid, cmd in descendants(os.getpid()).items() if ACTOR in cmd]
        assert len(actors) == 2, descendants(os.getpid())
        os.kill(actors[0], signal.SIGKILL)
        marked = mark(parts[0])
        thread.join(timeout=900)
        assert not thread.is_alive()
        if failure:  # Ray gave up on the pool: a rerun must still encode only what is missing
            stage = Dense(DenseOptions(**SMALL_PARTS),
                          StageEnv(cache, Reporter(quiet=True), "d", executor=ExecutorSpec(kind="ray", workers=2)))
            stage.prepare(popqa)
        assert len(list((cache.root / "work").rglob("part-*"))) == 0
        assert_marker_kept_and_rest_local(np.asarray(stage.emb), local_vectors, marked)
    finally:
        ray.shutdown()


@needs_ray
@SLOW
def test_a_killed_driver_resumes_with_only_the_missing_parts(local_vectors, tmp_path):
    cache = tmp_path / "cache"
    args = ["pipelines/dense.yaml", "--task", "popqa-sample", "--executor", "ray", "--workers", "2",
            *(f"--set=dense.{k}={v}" for k, v in SMALL_PARTS.items())]
    driver = ragbench(*args, cache=cache, out=tmp_path / "run")
    try:
        wait_for_parts(cache, 4)
        started = descendants(driver.pid)
        assert any(ACTOR in cmd for cmd in started.values()), started
    finally:
        driver.kill()
        driver.communicate()
    deadline = time.monotonic() + 30  # the cluster the driver started goes down with it ...
    while (alive := [p for p in started if Path(f"/proc/{p}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in alive:  # ... else its processes (ours: they were under the driver) are stopped here
        os.kill(pid, signal.SIGKILL)
    on_disk = sorted(p for p in (cache / "work").rglob("part-*.npy"))
    n_parts = -(-len(local_vectors) // PART_ROWS)
    assert 4 <= len(on_disk) < n_parts
    marked = mark(min(on_disk, key=lambda p: p.stat().st_mtime_ns))

    err = finished(ragbench(*args, cache=cache, out=tmp_path / "run"))
    assert f"{len(on_disk)} of {n_parts} parts already encoded; encoding the {n_parts - len(on_disk)} missing" in err
    emb = np.load(next((cache / "artifacts").rglob("embeddings.npy")))
    assert_marker_kept_and_rest_local(emb, local_vectors, marked)
