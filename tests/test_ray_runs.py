"""`--executor ray --workers 2` writes the same run folder as a local run (issue 16, bar 2).

Each pipeline runs twice through the CLI on a 240-paragraph slice of popqa-sample: locally into
one cache, and on a real local Ray cluster (2 CPUs) into another, both fresh for the module, so
the Ray run computes every stage itself (corpus encoding included) or reuses what an earlier Ray
run computed. run.trec and answers.jsonl must be byte-identical and the metrics equal. Exact
dense search is cut into blocks of 60 rows so that its 2 Ray shards each search 2 blocks.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragbench.cli import main
from ragbench.retrievers.dense import Dense

from .conftest import EMBEDDED, REPO

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ragbench[ray]')")

ENCODES = {"dense", "splade"}  # corpus encoding on a Ray actor pool
LIMIT = {"popqa-rag": 2}  # the reader generates on CPU; retrieval pipelines read 40 queries


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    started = not ray.is_initialized()
    yield tmp_path_factory.mktemp("local-cache"), tmp_path_factory.mktemp("ray-cache")
    if started and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """popqa-sample's first 240 paragraphs, with the questions whose relevant paragraphs are among them."""
    src, out = EMBEDDED, tmp_path_factory.mktemp("popqa-slice")
    with gzip.open(src / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [line for _, line in zip(range(240), f, strict=False)]
    kept = {json.loads(line)["id"] for line in docs}
    with gzip.open(out / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(docs)
    header, *rows = (src / "qrels.tsv").read_text().splitlines()
    rows = [r for r in rows if r.split("\t")[1] in kept]
    (out / "qrels.tsv").write_text("\n".join([header, *rows]) + "\n")
    judged = {r.split("\t")[0] for r in rows}
    queries = [q for q in (src / "queries.jsonl").read_text().splitlines() if json.loads(q)["id"] in judged]
    (out / "queries.jsonl").write_text("\n".join(queries) + "\n")
    assert len(queries) >= 40
    return out


def run(pipeline: str, data: Path, cache: Path, out: Path, *extra: str) -> Path:
    args = ["run", str(REPO / "pipelines" / f"{pipeline}.yaml"), "--task", "popqa-sample", "--data", str(data),
            "--limit", str(LIMIT.get(pipeline, 40)), "--cache-dir", str(cache), "--out", str(out), *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, f"ragbench {' '.join(args)}\n{result.output}"
    return out


@pytest.mark.parametrize("pipeline", [
    pytest.param("bm25", marks=pytest.mark.slow),  # nothing of a BM25 run goes to Ray: `make test-all`
    "dense",
    pytest.param("splade", marks=pytest.mark.slow),  # SPLADE encoding: ~1 min more; `make test-all`
    "hybrid",
    pytest.param("popqa-rag", marks=pytest.mark.slow),  # the reader: ~4 min on a busy 2-core machine
])
def test_ray_run_equals_local_run(pipeline: str, data: Path, caches: tuple[Path, Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Dense, "block_rows", 60)
    local_cache, ray_cache = caches
    local = run(pipeline, data, local_cache, tmp_path / "local")
    distributed = run(pipeline, data, ray_cache, tmp_path / "ray", "--executor", "ray", "--workers", "2")
    if pipeline in ENCODES:  # BM25 alone has nothing to place on Ray
        assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2
    cached = [[s["from_cache"] for s in json.loads((d / "timings.json").read_text())["stages"]]
              for d in (local, distributed)]
    assert cached[1] == cached[0] and not cached[1][-1]  # the Ray run computed (or reused a Ray run's) as local did
    assert (local / "run.trec").read_bytes() == (distributed / "run.trec").read_bytes()
    assert (local / "run.trec").stat().st_size > 0
    if (local / "answers.jsonl").exists() or (distributed / "answers.jsonl").exists():
        assert (local / "answers.jsonl").read_bytes() == (distributed / "answers.jsonl").read_bytes()
    metrics = [json.loads((d / "metrics.json").read_text())["metrics"] for d in (local, distributed)]
    assert metrics[0] and metrics[0] == metrics[1]
