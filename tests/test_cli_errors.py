"""Bad input: one clear line naming the file and field, exit code 2, no traceback."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def ragbench(*args: str, cwd: Path | None = None, data: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"RAGBENCH_DATA": str(data)} if data else {})}
    return subprocess.run([sys.executable, "-m", "ragbench.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


def _folder(tmp_path: Path, corpus_lines: list[str], queries: list[dict] | None = None,
            qrels: str | None = None) -> Path:
    d = tmp_path / "task"
    d.mkdir()
    with gzip.open(d / "corpus.jsonl.gz", "wt") as f:
        f.write("\n".join(corpus_lines) + "\n")
    queries = queries if queries is not None else [{"id": "q1", "text": "capital of france"}]
    (d / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (d / "qrels.tsv").write_text(qrels if qrels is not None else "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return d


def _one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_corpus_line_that_is_not_json(tmp_path: Path) -> None:
    d = _folder(tmp_path, ['{"id": "d1", "title": "Paris", "text": "Paris is the capital of France."}',
                           '{"id": "d2", "text": oops}'])
    line = _one_error(ragbench("run", "pipelines/bm25.yaml", "--task", "scifact", "--data", str(d),
                               "--cache-dir", str(tmp_path / "c"), cwd=REPO))
    assert f"{d}/corpus.jsonl.gz:2: not valid JSON" in line


def test_missing_file_and_empty_query(tmp_path: Path) -> None:
    d = _folder(tmp_path, ['{"id": "d1", "text": "x"}'], queries=[{"id": "q1", "text": "  "}])
    line = _one_error(ragbench("run", "pipelines/bm25.yaml", "--task", "popqa", "--data", str(d),
                               "--cache-dir", str(tmp_path / "c"), cwd=REPO))
    assert f"{d}/queries.jsonl:1: text: query 'q1' has an empty or missing 'text'" in line
    (d / "qrels.tsv").unlink()
    line = _one_error(ragbench("run", "pipelines/bm25.yaml", "--task", "popqa", "--data", str(d), cwd=REPO))
    assert "qrels.tsv: file not found" in line


def test_unknown_metric_in_a_pipeline(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("name: x\nmetrics: [nDCG@10, MAPP]\nstages:\n  - type: bm25\n")
    line = _one_error(ragbench("run", str(p), cwd=REPO))
    assert f"{p}:2: metrics[1]: unknown metric 'MAPP'" in line


def test_missing_corpus_says_how_to_provide_one(shared_data: Path, tmp_path: Path) -> None:
    # FRAMES ships its gold articles in the shared data: a data root whose frames folder lacks them
    data = tmp_path / "data"
    for task in ("litsearch", "frames"):
        (data / task).mkdir(parents=True)
        for name in ("queries.jsonl", "qrels.tsv"):
            (data / task / name).write_bytes((shared_data / task / name).read_bytes())
    for task, hub in (("litsearch", "princeton-nlp/LitSearch"), ("frames", None)):
        line = _one_error(ragbench("run", "pipelines/bm25.yaml", "--task", task, "--cache-dir", str(tmp_path / "c"),
                                   cwd=REPO, data=data))
        assert f"task '{task}' has no corpus here" in line and "--data DIR" in line
        if hub:
            assert hub in line


def test_warnings_for_unjudged_queries_and_unknown_judged_docs(tmp_path: Path) -> None:
    d = _folder(tmp_path, ['{"id": "d1", "title": "Paris", "text": "Paris is the capital of France."}',
                           '{"id": "d2", "title": "Bananas", "text": "Bananas are yellow."}'],
                queries=[{"id": "q1", "text": "capital of france"}, {"id": "q2", "text": "yellow fruit"}],
                qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\n")
    result = ragbench("run", "pipelines/bm25.yaml", "--task", "popqa", "--data", str(d),
                      "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r"), cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "1 of 2 queries have no qrels" in result.stderr
    assert "1 of 2 judged documents are not in the corpus" in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = ragbench("--debug", "run", "no-such.yaml", cwd=REPO)
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.parametrize("args", [["run", "pipelines/bm25.yaml", "--split", "nope"],
                                  ["run", "pipelines/bm25.yaml", "--task", "nope"]])
def test_bad_options(args: list[str]) -> None:
    line = _one_error(ragbench(*args, cwd=REPO))
    assert "nope" in line
