"""F1-AUC and rank agreement of judge scores with human labels, on a hand-worked example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from scipy import stats

from ragbench.cli import main
from ragbench.report.calibration import calibrate, f1_curve

SCORES = [0.9, 0.6, 0.2, 0.0]
LABELS = [1, 1, 0, 0]
# th 0: all positive -> P 2/4, R 1 -> F1 2/3; th .1-.2: 3 positive -> 0.8; th .3-.6: exactly the two -> 1;
# th .7-.9: only 0.9 -> P 1, R 1/2 -> 2/3; th 1: none -> 0
CURVE = [2 / 3, 0.8, 0.8, 1, 1, 1, 1, 2 / 3, 2 / 3, 2 / 3, 0]


def test_hand_worked_curve_area_and_mean() -> None:
    assert f1_curve(SCORES, LABELS) == pytest.approx(CURVE)
    out = calibrate(SCORES, LABELS)
    assert out["f1_auc"] == pytest.approx((CURVE[0] / 2 + sum(CURVE[1:10]) + CURVE[10] / 2) / 10)  # 0.79333
    assert out["f1_mean"] == pytest.approx(sum(CURVE) / 11)  # 0.75152
    assert out["spearman"] == pytest.approx(stats.spearmanr(SCORES, LABELS).statistic)
    assert out["kendall_tau_b"] == pytest.approx(stats.kendalltau(SCORES, LABELS).statistic)
    # th 0 calls both positive (F1 2/3); from 0.1 to 1 only the 1.0 score (F1 1): (1/3 + 9 + 1/2) / 10
    assert calibrate([1.0, 0.0], [1, 0])["f1_auc"] == pytest.approx((1 / 3 + 9 + 0.5) / 10)


def test_cli_joins_labels_with_a_run_and_reports_what_did_not_match(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    scored = [("a", 0.9), ("b", 0.6), ("c", 0.2), ("d", 0.0), ("e", 0.5)]
    (run / "per_query.jsonl").write_text("".join(json.dumps({"query_id": q, "correctness": s}) + "\n"
                                                 for q, s in scored))
    labels = tmp_path / "human.jsonl"
    labelled = [("a", 1), ("b", True), ("c", 0), ("d", False), ("z", 1)]
    labels.write_text("".join(json.dumps({"query_id": q, "label": v}) + "\n" for q, v in labelled))
    result = CliRunner().invoke(main, ["judge-calibrate", str(labels), "--run", str(run), "--metric", "correctness",
                                       "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["n"] == 4 and out["unmatched_labels"] == 1
    assert out["f1_auc"] == pytest.approx(calibrate(SCORES, LABELS)["f1_auc"])
    inline = tmp_path / "inline.jsonl"
    inline.write_text("".join(json.dumps({"id": i, "human": v, "judge": s}) + "\n"
                              for i, (s, v) in enumerate(zip(SCORES, LABELS, strict=True))))
    result = CliRunner().invoke(main, ["judge-calibrate", str(inline), "--score-field", "judge",
                                       "--label-field", "human", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["f1_mean"] == pytest.approx(sum(CURVE) / 11)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query_id": "a", "label": "yes"}\n')
    result = CliRunner().invoke(main, ["judge-calibrate", str(bad), "--run", str(run), "--metric", "correctness"])
    assert result.exit_code == 2 and f"{bad}:1: label: expected 0/1 or true/false, got 'yes'" in result.output
