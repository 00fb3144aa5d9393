"""`ragbench correlate`: rank correlations between metrics of run folders, checked against scipy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from scipy import stats

from ragbench.cli import main


def make_run(folder: Path, rows: dict[str, dict[str, float]]) -> Path:
    folder.mkdir(parents=True)
    (folder / "per_query.jsonl").write_text("".join(json.dumps({"query_id": q, **v}) + "\n" for q, v in rows.items()))
    names = {k for v in rows.values() for k in v}
    aggregate = {m: sum(v[m] for v in rows.values()) / len(rows) for m in names}
    (folder / "metrics.json").write_text(json.dumps({"task": "t", "pipeline": folder.name, "config_hash": "x",
                                                     "n_queries": len(rows), "metrics": aggregate}))
    return folder


def test_values_match_scipy_per_run_pooled_and_across_runs(tmp_path: Path) -> None:
    recall = [[0.0, 0.5, 0.5, 1.0, 1.0, 0.0], [1.0, 1.0, 0.5, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 1.0, 0.0, 0.5]]
    acc = [[0, 1, 0, 1, 1, 0], [1, 1, 1, 0, 0, 1], [0, 0, 1, 1, 1, 0]]
    runs = [make_run(tmp_path / f"r{i}", {str(q): {"R@5": r, "popqa_acc": float(a)}
                                          for q, (r, a) in enumerate(zip(rs, accs, strict=True))})
            for i, (rs, accs) in enumerate(zip(recall, acc, strict=True))]
    result = CliRunner().invoke(main, ["correlate", *map(str, runs), "-x", "R@5", "-y", "popqa_acc",
                                       "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["level"], r["sample"].split("/")[-1]) for r in rows] == [
        ("queries", "r0"), ("queries", "r1"), ("queries", "r2"), ("queries", "pooled"), ("runs", "runs")]
    for row, xs, ys in zip(rows, [*recall, sum(recall, [])], [*acc, sum(acc, [])], strict=False):
        assert row["n"] == len(xs)
        assert row["tau"] == pytest.approx(stats.kendalltau(xs, ys).statistic)
        assert row["rho"] == pytest.approx(stats.spearmanr(xs, ys).statistic)
        assert row["tau_p"] == pytest.approx(stats.kendalltau(xs, ys).pvalue)
    means_x = [sum(r) / 6 for r in recall]
    means_y = [sum(a) / 6 for a in acc]
    assert rows[-1]["n"] == 3 and rows[-1]["tau"] == pytest.approx(stats.kendalltau(means_x, means_y).statistic)


def test_constant_metric_and_missing_metric(tmp_path: Path) -> None:
    run = make_run(tmp_path / "flat", {str(q): {"R@5": 1.0, "popqa_acc": float(q % 2)} for q in range(5)})
    result = CliRunner().invoke(main, ["correlate", str(run), "-x", "R@5", "-y", "popqa_acc", "--format", "json"])
    (row,) = json.loads(result.output)
    assert row["tau"] is None and row["rho"] is None and row["note"] == "R@5 is constant"
    bad = CliRunner().invoke(main, ["correlate", str(run), "-x", "T@5", "-y", "popqa_acc"])
    assert bad.exit_code == 2 and "no per-query values for T@5 (it has: R@5, popqa_acc)" in bad.output
    missing = CliRunner().invoke(main, ["correlate", str(tmp_path / "nope"), "-x", "R@5", "-y", "popqa_acc"])
    assert missing.exit_code == 2 and "per_query.jsonl: file not found" in missing.output
