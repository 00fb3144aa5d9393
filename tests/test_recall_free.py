"""Recall-free retrieval measures (docs/methods.md, "Recall-free retrieval measures") on hand-worked rankings.

Ranking a b c d e f; qrels a:1 b:0 c:2 f:1 z:1 (z never retrieved), so N_p = 4 and, binary,
the relevance down the ranking is 1 0 1 0 0 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragbench.cli import main
from ragbench.config import validate_file
from ragbench.metrics.ir import evaluate
from ragbench.metrics.recall_free import parse
from ragbench.types import Ranking

RANKING = ["a", "b", "c", "d", "e", "f"]
QRELS = {"a": 1, "b": 0, "c": 2, "f": 1, "z": 1}


def value(name: str, docids: list[str] = RANKING) -> float:
    m = parse(name)
    assert m is not None
    return m.value(docids, QRELS)


@pytest.mark.parametrize(("name", "expected"), [
    # T = (1 - a) n_p - a n_n / (n_p + n_n); top 4: n_p 2, n_n 2
    ("T@4", 0.5 * 2 - 0.5 * 2 / 4),            # 0.75 (alpha 0.5 by default)
    ("T_0.3@4", 0.7 * 2 - 0.3 * 2 / 4),         # 1.25
    ("T_0@4", 2.0),                             # alpha 0: the number of relevant documents found
    ("T_1@4", -0.5),                            # alpha 1: -(1 - P@4)
    ("T@1", 0.5 * 1 - 0.0),                     # a is relevant: 0.5
    ("T@2", 0.5 * 1 - 0.5 * 1 / 2),             # 0.25
    # F = n_p / (a K + (1 - a) N_p) with N_p = 4 (z counts although never retrieved; b's grade 0 does not)
    ("F_1@3", 2 / 3),                           # precision
    ("F_0@3", 2 / 4),                           # recall
    ("F_0.5@3", 2 / (1.5 + 2)),
    # E: N_p estimated from the top ceil(x K): x 2 -> top 6 holds a c f -> 3
    ("E_0.5@3", 2 / (1.5 + 0.5 * 3)),
    ("E_0.5@3x1", 2 / (1.5 + 0.5 * 2)),         # top 3 holds a c -> 2
    ("E_0@2x3", 1 / 3),                         # top 2: n_p 1; top 6: 3
    ("E_0.5@2x1.5", 1 / (1 + 0.5 * 2)),         # ceil(1.5 * 2) = 3 -> a c
    # nDCG_rf: binary gains, ideal = the n_p relevant found at the top (c's grade 2 counts as 1)
    ("nDCG_rf@4", (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))),
    ("nDCG_rf@6", (1 + 1 / math.log2(4) + 1 / math.log2(7)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))),
    ("nDCG_rf@1", 1.0),
])
def test_hand_worked_values(name: str, expected: float) -> None:
    assert value(name) == pytest.approx(expected, abs=1e-12)


def test_short_and_empty_rankings_count_missing_slots_as_non_relevant() -> None:
    assert value("T@4", ["a"]) == pytest.approx(0.5 * 1 - 0.5 * 3 / 4)  # n_n = K - n_p = 3
    assert value("T@4", []) == pytest.approx(-0.5)
    assert value("nDCG_rf@4", []) == 0.0 and value("nDCG_rf@4", ["b", "d"]) == 0.0
    assert value("E_0.5@4", []) == 0.0 and value("F_1@4", ["a"]) == pytest.approx(0.25)
    assert parse("E_0@2").value(["b", "d"], {"b": 0}) == 0.0  # 0 / 0 -> 0


def test_recall_free_ndcg_differs_from_ndcg_only_by_the_ideal() -> None:
    # ir_measures' nDCG@4 (graded, ideal over all 4 judged-relevant docs) vs the recall-free one
    agg, _ = evaluate({"q": Ranking("q", RANKING, [6.0, 5, 4, 3, 2, 1])}, {"q": {"a": 1, "c": 1, "f": 1, "z": 1}},
                      ["nDCG@4", "nDCG_rf@4"])
    ideal_all = sum(1 / math.log2(i + 2) for i in range(4))
    assert agg["nDCG@4"] == pytest.approx(1.5 / ideal_all)
    assert agg["nDCG_rf@4"] == pytest.approx(1.5 / (1 + 1 / math.log2(3)))


@pytest.mark.parametrize(("name", "message"), [
    ("T_1.5@10", "alpha must be between 0 and 1"),
    ("T@0", "the cutoff must be at least 1"),
    ("T_0.5@10x2", "only E takes an extension factor"),
    ("E_0.5@10x0.5", "the extension factor must be at least 1"),
])
def test_malformed_names(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(name)


def test_not_recall_free_names_are_left_to_ir_measures() -> None:
    assert parse("nDCG@10") is None and parse("P@5") is None and parse("R@100") is None


def test_run_reports_them_and_checks_the_depth_e_needs(tmp_path: Path) -> None:
    env = {"RAGBENCH_CACHE": str(tmp_path / "cache")}
    metrics = "[nDCG@10, T@10, E_0.5@10, nDCG_rf@10]"
    result = CliRunner().invoke(main, ["run", "bm25", "--set", f"metrics={metrics}", "--set", "bm25.top_k=20",
                                       "--out", str(tmp_path / "run")], env=env)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert list(written) == ["nDCG@10", "T@10", "E_0.5@10", "nDCG_rf@10"]
    # recomputed from the run file and the qrels by the formulas, independently of the CLI
    from ragbench.tasks import load_task
    from ragbench.tasks.card import load_task_card

    task = load_task(load_task_card("popqa-sample")[0])
    runs: dict[str, list[tuple[int, str]]] = {}
    for line in (tmp_path / "run" / "run.trec").read_text().splitlines():
        qid, _, doc, rank, _, _ = line.split()
        runs.setdefault(qid, []).append((int(rank), doc))
    t_values = []
    for qid, rels in task.qrels.items():
        docs = [d for _, d in sorted(runs.get(qid, []))][:10]
        n_p = sum(rels.get(d, 0) >= 1 for d in docs)
        t_values.append(0.5 * n_p - 0.5 * (10 - n_p) / 10)
    assert written["T@10"] == pytest.approx(sum(t_values) / len(t_values))
    assert written["nDCG_rf@10"] >= written["nDCG@10"] - 1e-12  # the ideal never exceeds nDCG's
    p = tmp_path / "deep.yaml"
    p.write_text("name: x\nmetrics: [E_0.5@10x3]\nstages:\n  - {type: bm25, top_k: 20}\n")
    assert any("E_0.5@10x3 needs rankings of depth 30 but the last stage returns top_k=20" in str(x)
               for x in validate_file(p))
