"""A shared cache stays sound: entries are created once (the first writer wins), carry checksums, and a corrupt
or truncated entry is reported in one line, discarded and recomputed to the same result, never a traceback."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from ragbench.cache import Cache
from ragbench.cache_integrity import MANIFEST, STAMP, discard, verify_folder
from ragbench.config import load_pipeline
from ragbench.pipeline import run_pipeline
from ragbench.progress import Reporter
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sample_task():
    card, _ = load_task_card("popqa-sample")
    return load_task(card, data_dir=REPO / "ragbench/data/popqa_sample", limit=100)


def _cache(root: Path) -> tuple[Cache, list[str]]:
    warnings: list[str] = []
    return Cache(root, warn=warnings.append), warnings


def _entries(cache: Cache, kind: str) -> list[Path]:
    return sorted(p for p in (cache.root / kind).rglob("*") if p.is_file() and not p.name.startswith("."))


def _truncate(path: Path, keep: float = 0.5) -> None:
    os.truncate(path, int(path.stat().st_size * keep))


def _flip(path: Path, offset: int, n: int = 16) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in f.read(n)))
        f.seek(offset)


def _records(result):
    return result.final.output.records


def test_a_truncated_stage_output_is_recomputed(tmp_path: Path, sample_task) -> None:
    cache, warnings = _cache(tmp_path)
    first = run_pipeline(load_pipeline("bm25"), sample_task, cache, Reporter(quiet=True), batch_size=50)
    data = next(p for p in _entries(cache, "outputs") if p.name == "data")
    _truncate(data)
    for p in _entries(cache, "batches"):  # make the stage run again, not resume from its batches
        p.unlink()
    again = run_pipeline(load_pipeline("bm25"), sample_task, cache, Reporter(quiet=True), batch_size=50)
    assert len(warnings) == 1 and "truncated" in warnings[0] and data.parent.name in warnings[0]
    assert not again.final.cached and _records(again) == _records(first)
    third = run_pipeline(load_pipeline("bm25"), sample_task, cache, Reporter(quiet=True), batch_size=50)
    assert third.final.cached and len(warnings) == 1  # the rewritten entry is sound


def test_a_truncated_batch_is_recomputed_alone(tmp_path: Path, sample_task) -> None:
    cache, warnings = _cache(tmp_path)
    first = run_pipeline(load_pipeline("bm25"), sample_task, cache, Reporter(quiet=True), batch_size=25)
    for p in _entries(cache, "outputs"):
        p.unlink()
    batches = _entries(cache, "batches")
    assert len(batches) == 4
    _flip(batches[1], 200)
    again = run_pipeline(load_pipeline("bm25"), sample_task, cache, Reporter(quiet=True), batch_size=25)
    assert len(warnings) == 1 and "checksum mismatch" in warnings[0] and batches[1].name in warnings[0]
    assert again.final.batches_cached == 3 and _records(again) == _records(first)


@pytest.mark.parametrize("damage", ["header", "body"])
def test_a_damaged_bm25s_index_is_rebuilt(tmp_path: Path, sample_task, damage: str) -> None:
    """Today's failures: a damaged .npy header raised numpy's pickle error; a damaged body ranked silently wrong."""
    cache, warnings = _cache(tmp_path)
    first = run_pipeline(load_pipeline("bm25"), sample_task, cache, Reporter(quiet=True))
    index = next((cache.root / "artifacts").rglob("data.csc.index.npy"))
    _flip(index, 0 if damage == "header" else index.stat().st_size // 2)
    deeper = load_pipeline("bm25", ["bm25.top_k=999"])  # a new search over the same index
    again = run_pipeline(deeper, sample_task, cache, Reporter(quiet=True))
    assert len(warnings) == 1, warnings
    assert "data.csc.index.npy: checksum mismatch" in warnings[0] and index.parent.name in warnings[0]
    fresh = run_pipeline(deeper, sample_task, Cache(tmp_path / "fresh"), Reporter(quiet=True))
    assert _records(again) == _records(fresh)
    assert {q: r.top(10) for q, r in _records(again).items()} == {q: r.top(10) for q, r in _records(first).items()}
    assert verify_folder(index.parent) is None


def test_a_truncated_llm_entry_is_asked_again(tmp_path: Path, tiny_llm_dir: Path) -> None:
    from ragbench.llm.base import Sampling
    from ragbench.llm.config import TransformersLLMConfig
    from ragbench.llm.factory import make_llm

    cache, warnings = _cache(tmp_path)
    chats = [[{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}] for i in range(3)]
    llm = make_llm(TransformersLLMConfig(model=str(tiny_llm_dir)), cache)
    first = [g.text for g in llm.chat(chats, Sampling(max_tokens=8))]
    entries = _entries(cache, "llm")
    assert len(entries) == 3
    _truncate(entries[0], 0.6)
    asked = llm.stats.requests
    again = [g.text for g in llm.chat(chats, Sampling(max_tokens=8))]
    assert again == first and llm.stats.requests == asked + 1
    assert len(warnings) == 1 and entries[0].name in warnings[0]
    assert cache.get_json(entries[0]) is not None and len(warnings) == 1


# -- the cache's own rules ------------------------------------------------------------------------------
def test_entries_written_before_checksums_stay_readable(tmp_path: Path) -> None:
    cache, warnings = _cache(tmp_path)
    key = "ab" * 32
    for path in (tmp_path / "outputs" / "ab" / key / "data", tmp_path / "batches" / "ab" / key):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('["q1", ["d1"], [1.0]]\n')
    (tmp_path / "outputs" / "ab" / key / "meta.json").write_text('{"identity": {}}')
    assert cache.get(key) == cache.get_batch(key) == '["q1", ["d1"], [1.0]]\n'
    assert cache.get_meta(key) == {"identity": {}}
    old_llm = cache.llm_entry(key)
    old_llm.parent.mkdir(parents=True)
    old_llm.write_text('{"text": "Paris"}')
    assert cache.get_json(old_llm) == {"text": "Paris"}
    old_artifact = cache.artifact_path(key)
    old_artifact.mkdir(parents=True)
    (old_artifact / "index.npy").write_bytes(b"x" * 100)
    assert cache.artifact(key, lambda tmp: pytest.fail("rebuilt a sound artifact")) == old_artifact
    assert (old_artifact / MANIFEST).exists()  # adopted: checked from now on
    assert warnings == []
    # ... and one cut short (a record without its newline, JSON that does not parse) is still caught
    (tmp_path / "batches" / "ab" / key).write_text('["q1", ["d1"], [1.')
    old_llm.write_text('{"text": "Pa')
    assert cache.get_batch(key) is None and cache.get_json(old_llm) is None
    assert len(warnings) == 2 and all("; discarded, recomputing it" in w for w in warnings)


def test_a_damaged_artifact_is_caught_by_size_at_once_and_by_hash_when_its_files_change(tmp_path: Path) -> None:
    cache, warnings = _cache(tmp_path)
    key = "cd" * 32
    builds: list[int] = []

    def build(tmp: Path) -> None:
        builds.append(1)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "vectors.bin").write_bytes(bytes(range(256)) * 40)

    folder = cache.artifact(key, build)
    assert (folder / STAMP).exists() and verify_folder(folder) is None
    _truncate(folder / "sub" / "vectors.bin")
    assert cache.artifact(key, build) == folder and len(builds) == 2
    assert "sub/vectors.bin is 5,120 bytes, 10,240 expected" in warnings[0]
    _flip(folder / "sub" / "vectors.bin", 5000)
    os.utime(folder / "sub" / "vectors.bin", ns=(1, 1))  # a change the stamp does not know
    cache.artifact(key, build)
    assert len(builds) == 3 and "sub/vectors.bin: checksum mismatch" in warnings[1]
    assert cache.artifact(key, build) == folder and len(builds) == 3 and len(warnings) == 2


def _race(root: str, key: str, text: str, start: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue):
    cache = Cache(root)
    start.wait()
    cache.put_batch(key, text)
    cache.put(key, text, {"writer": text})
    path = cache.artifact("ef" * 32, lambda tmp: (tmp / "who").write_text(text))
    out.put((cache.get_batch(key), cache.get(key), cache.get_meta(key), (path / "who").read_text()))


def test_racing_writers_end_with_the_first_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(4), ctx.Queue()
    texts = [f"[\"q\", [\"writer {i}\"], [1.0]]\n" * 2000 for i in range(4)]
    procs = [ctx.Process(target=_race, args=(str(tmp_path), "12" * 32, t, start, out)) for t in texts]
    for p in procs:
        p.start()
    seen = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    batch, whole, meta, artifact = seen[0]
    assert batch in texts and whole in texts and artifact in texts and meta["writer"] in texts
    assert all(s == seen[0] for s in seen), "every process reads the same entries"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")], "no temp file is left behind"
    cache, warnings = _cache(tmp_path)
    assert cache.get_batch("12" * 32) == batch and warnings == []


def test_a_sound_entry_written_meanwhile_is_not_discarded(tmp_path: Path) -> None:
    """Process A finds an entry corrupt; before A removes it, B has replaced it with a sound one: B's stays."""
    cache, _ = _cache(tmp_path)
    path = cache.root / "batches" / "34" / ("34" * 32)
    cache.put_batch("34" * 32, "good\n")  # B's entry, there when A removes the bad one it read
    discard(path, still_bad=lambda aside: aside.read_bytes().endswith(b"bad\n"))
    assert cache.get_batch("34" * 32) == "good\n"
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # nothing left aside
    discard(path, still_bad=lambda aside: True)
    assert cache.get_batch("34" * 32) is None and not list(path.parent.iterdir())
