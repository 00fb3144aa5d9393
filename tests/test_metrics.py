"""ragbench's IR metrics equal pytrec_eval's own numbers on the same run file and qrels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytrec_eval

from ragbench.metrics.ir import evaluate, parse_measure
from ragbench.tasks.beir import load_qrels
from ragbench.trec import parse_run
from ragbench.types import Ranking

REPO = Path(__file__).resolve().parent.parent


def _trec_eval_order(run: dict[str, dict[str, float]]) -> dict[str, list[str]]:
    # trec_eval ranks by score descending, ties by doc id descending
    return {q: sorted(docs, key=lambda d: (docs[d], d), reverse=True) for q, docs in run.items()}


def test_metrics_equal_pytrec_eval_on_a_real_run(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "ragbench.cli", "run", str(REPO / "pipelines/bm25.yaml"), "--task", "scifact",
                    "--data", str(shared_data / "scifact"), "--out", str(out), "--cache-dir", str(tmp_path / "cache")],
                   check=True, capture_output=True)
    metrics = json.loads((out / "metrics.json").read_text())
    per_query = {r["query_id"]: r for r in map(json.loads, (out / "per_query.jsonl").read_text().splitlines())}
    rankings = parse_run((out / "run.trec").read_text())
    run = {q: dict(zip(r.docids, r.scores, strict=True)) for q, r in rankings.items()}
    qrels = {q: rels for q, rels in load_qrels(shared_data / "scifact" / "qrels.tsv")[0].items() if q in per_query}

    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    top10 = {q: {d: run[q][d] for d in docs[:10]} for q, docs in _trec_eval_order(run).items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)

    assert len(per_query) == 201 and metrics["n_queries"] == 201
    for q in per_query:
        assert per_query[q]["nDCG@10"] == pytest.approx(full[q]["ndcg_cut_10"], abs=1e-4)
        assert per_query[q]["R@100"] == pytest.approx(full[q]["recall_100"], abs=1e-4)
        assert per_query[q]["RR@10"] == pytest.approx(rr[q]["recip_rank"], abs=1e-4)
    mean = lambda vals: sum(vals) / len(vals)  # noqa: E731
    assert metrics["metrics"]["nDCG@10"] == pytest.approx(mean([v["ndcg_cut_10"] for v in full.values()]), abs=1e-4)
    assert metrics["metrics"]["R@100"] == pytest.approx(mean([v["recall_100"] for v in full.values()]), abs=1e-4)
    assert metrics["metrics"]["RR@10"] == pytest.approx(mean([v["recip_rank"] for v in rr.values()]), abs=1e-4)
    # and the numbers are a real BM25 result, not a degenerate one
    assert 0.6 < metrics["metrics"]["nDCG@10"] < 0.75


def test_query_with_empty_ranking_counts_as_zero() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    rankings = {"q1": Ranking("q1", ["d1", "d3"], [2.0, 1.0]), "q2": Ranking("q2", [], [])}
    aggregate, per_query = evaluate(rankings, qrels, ["RR@10", "nDCG@10"])
    assert per_query["q1"]["RR@10"] == 1.0 and per_query["q2"]["RR@10"] == 0.0
    assert aggregate["RR@10"] == 0.5  # trec_eval -c: the empty query is in the mean


def test_any_ir_measures_string_and_unknown_ones() -> None:
    for name in ("nDCG@10", "R@100", "RR@10", "AP", "P@5", "Judged@10", "nDCG"):
        parse_measure(name)
    for bad in ("nDGC@10", "Recall@", "foo"):
        with pytest.raises(ValueError, match="unknown metric"):
            parse_measure(bad)
