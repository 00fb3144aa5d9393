"""Tasks from ir_datasets (`--task irds:<id>`), offline: a slice of SciFact written as TSV and TREC files and
registered in ir_datasets' own registry, then loaded through its real formats and iterators; the same slice as
a BEIR folder gives the same queries, qrels, corpus and BM25 run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragbench.cli import main
from tests.conftest import SHARED_DATA

ir_datasets = pytest.importorskip("ir_datasets", reason="ir_datasets is not installed (make test installs it)")


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """`ragbench-test/scifact-slice` in ir_datasets' registry (TsvDocs, TsvQueries, TrecQrels over local files),
    and the same slice as a BEIR folder."""
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    src = SHARED_DATA / "scifact"
    if not src.is_dir():
        pytest.skip(f"{src} not found (the shared data folder)")
    tmp = tmp_path_factory.mktemp("irds")
    qrels = [line.split("\t") for line in (src / "qrels.tsv").read_text().splitlines()[1:41]]
    qids = list(dict.fromkeys(q for q, _, _ in qrels))
    queries = {r["id"]: r["text"] for r in map(json.loads, (src / "queries.jsonl").read_text().splitlines())
               if r["id"] in qids}
    gold = {d for _, d, _ in qrels}
    docs = []
    with gzip.open(src / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["id"] in gold or len(docs) < 300:
                docs.append((r["id"], " ".join((r["title"] + " " + r["text"]).split())))
    (tmp / "docs.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in docs))
    (tmp / "queries.tsv").write_text("".join(f"{q}\t{queries[q]}\n" for q in qids))
    (tmp / "qrels.trec").write_text("".join(f"{q} 0 {d} {g.strip()}\n" for q, d, g in qrels))
    name = "ragbench-test/scifact-slice"
    if name not in ir_datasets.registry:
        ir_datasets.registry.register(name, ir_datasets.Dataset(
            TsvDocs(LocalDownload(tmp / "docs.tsv")), TsvQueries(LocalDownload(tmp / "queries.tsv")),
            TrecQrels(LocalDownload(tmp / "qrels.trec"), {0: "not relevant", 1: "relevant"})))
    beir = tmp / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in qids))
    (beir / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                    + "".join(f"{q}\t{d}\t{g.strip()}\n" for q, d, g in qrels))
    return name, beir


def test_an_ir_datasets_collection_loads_like_the_same_files_on_disk(registered, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ragbench.cache import Cache
    from ragbench.tasks import load_task
    from ragbench.tasks.card import load_task_card

    name, beir = registered
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds-home"))
    irds = load_task(load_task_card(f"irds:{name}")[0], cache=Cache(tmp_path / "cache"))
    local = load_task(load_task_card("scifact")[0], data_dir=beir, cache=Cache(tmp_path / "cache"))
    assert [(q.id, q.text) for q in irds.queries] == [(q.id, q.text) for q in local.queries]
    assert irds.qrels == local.qrels and irds.source == f"irds:{name}"
    assert irds.corpus is not None and local.corpus is not None
    assert [(d.id, d.title, d.text) for b in irds.corpus.batches(500) for d in b] == \
        [(d.id, d.title, d.text) for b in local.corpus.batches(500) for d in b]
    env = {"RAGBENCH_CACHE": str(tmp_path / "cache"), "IR_DATASETS_HOME": str(tmp_path / "irds-home")}
    r1 = CliRunner().invoke(main, ["run", "bm25", "--task", f"irds:{name}", "--out", str(tmp_path / "a")], env=env)
    assert r1.exit_code == 0, r1.output
    r2 = CliRunner().invoke(main, ["run", "bm25", "--task", "scifact", "--data", str(beir), "--out",
                                   str(tmp_path / "b")], env=env)
    assert r2.exit_code == 0, r2.output
    assert (tmp_path / "a" / "run.trec").read_text() == (tmp_path / "b" / "run.trec").read_text()
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["task"] == f"irds:{name}" and metrics["metrics"]["nDCG@10"] > 0.3
    bad = CliRunner().invoke(main, ["run", "bm25", "--task", "irds:no/such/dataset"], env=env)
    assert bad.exit_code == 2 and "irds:no/such/dataset" in bad.output and "unknown ir_datasets id" in bad.output
