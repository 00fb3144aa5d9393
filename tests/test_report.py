"""compare and check on real SciFact BM25 runs: the paired tests agree with scipy's computed directly,
and the gate exits 0 (same run), 1 (k1 = 0.05, a real regression) and 2 (bad input)."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner
from scipy import stats

from ragbench.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "scifact" / "corpus.jsonl.gz").exists():
        pytest.skip(f"SciFact not found under {SHARED_DATA}")
    tmp = tmp_path_factory.mktemp("report")
    env = {"RAGBENCH_CACHE": str(tmp / "cache"), "RAGBENCH_DATA": str(SHARED_DATA)}
    out = []
    for name, extra in (("base", []), ("k1", ["--set", "bm25.k1=0.05"])):
        r = CliRunner().invoke(main, ["run", "pipelines/bm25.yaml", "--task", "scifact", *extra,
                                      "--out", str(tmp / name)], env=env)
        assert r.exit_code == 0, r.output
        out.append(tmp / name)
    return out[0], out[1]


def _per_query(run: Path, metric: str) -> dict[str, float]:
    return {row["query_id"]: row[metric] for row in map(json.loads, (run / "per_query.jsonl").read_text().splitlines())}


def test_compare_matches_scipy_paired_t_test(runs: tuple[Path, Path]) -> None:
    base, k1 = runs
    r = CliRunner().invoke(main, ["compare", str(base), str(k1), "-m", "nDCG@10", "--format", "json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.output)
    a, b = _per_query(base, "nDCG@10"), _per_query(k1, "nDCG@10")
    qids = sorted(a)
    expected = stats.ttest_rel([b[q] for q in qids], [a[q] for q in qids]).pvalue
    assert row["n"] == len(qids) and row["t_p"] == pytest.approx(expected, rel=1e-9)
    assert row["delta"] == pytest.approx(sum(b.values()) / len(b) - sum(a.values()) / len(a))
    assert row["wins"] + row["ties"] + row["losses"] == len(qids) and row["losses"] > row["wins"]
    assert 0 < row["rand_p"] < 0.05  # the randomization test agrees the drop is real


def test_check_gates_on_a_real_regression(runs: tuple[Path, Path], tmp_path: Path) -> None:
    base, k1 = runs
    same = CliRunner().invoke(main, ["check", str(base), "--baseline", str(base)])
    assert same.exit_code == 0, same.output
    junit = tmp_path / "junit.xml"
    worse = CliRunner().invoke(main, ["check", str(k1), "--baseline", str(base), "--junit", str(junit)])
    assert worse.exit_code == 1, worse.output
    assert "nDCG@10" in worse.output and "dropped 0.02" in worse.output and "p = " in worse.output
    suite = ET.parse(junit).getroot()
    failed = [c.get("name") for c in suite if c.find("failure") is not None]
    assert failed == ["nDCG@10"] and suite.get("failures") == "1"
    missing = CliRunner().invoke(main, ["check", str(base), "--baseline", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "file not found" in missing.output


def test_thresholds_file_rules_and_errors(runs: tuple[Path, Path], tmp_path: Path) -> None:
    base, k1 = runs
    lenient = tmp_path / "t.yaml"
    lenient.write_text("metrics:\n  nDCG@10: {max_drop: 0.05}\n  R@100: {min: 0.9}\n")
    r = CliRunner().invoke(main, ["check", str(k1), "--baseline", str(base), "--thresholds", str(lenient)])
    assert r.exit_code == 0
    strict = tmp_path / "s.yaml"
    strict.write_text("metrics:\n  R@100: {min: 0.95}\n")  # an absolute floor fails without any test
    r = CliRunner().invoke(main, ["check", str(k1), "--baseline", str(base / "metrics.json"),
                                  "--thresholds", str(strict)])
    assert r.exit_code == 1 and "< min 0.9500" in r.output
    bad = tmp_path / "b.yaml"
    bad.write_text("metrics:\n  nDCG@10: {max_drop: -1}\n")
    r = CliRunner().invoke(main, ["check", str(k1), "--baseline", str(base), "--thresholds", str(bad)])
    assert r.exit_code == 2 and f"{bad}:2" in r.output and "max_drop" in r.output


def test_check_refuses_a_baseline_scored_on_other_queries(runs: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.conftest import SHARED_DATA

    base, _ = runs
    env = {"RAGBENCH_CACHE": str(base.parent / "cache"), "RAGBENCH_DATA": str(SHARED_DATA)}
    r = CliRunner().invoke(main, ["run", "pipelines/bm25.yaml", "--task", "scifact", "--limit", "20",
                                  "--out", str(tmp_path / "few")], env=env)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["check", str(tmp_path / "few"), "--baseline", str(base)])
    n = json.loads((base / "metrics.json").read_text())["n_queries"]
    assert r.exit_code == 2 and f"baseline scored {n} queries, the run 20" in r.output.replace("\n", " ")


def _run_folder(folder: Path, values: dict[str, list[float]]) -> Path:
    """A run folder with metrics.json and per_query.jsonl only: what check reads."""
    folder.mkdir(parents=True)
    n = len(next(iter(values.values())))
    metrics = {m: sum(v) / n for m, v in values.items()}
    (folder / "metrics.json").write_text(json.dumps({"task": "t", "pipeline": "p", "config_hash": "h", "n_queries": n,
                                                     "metrics": metrics}))
    (folder / "per_query.jsonl").write_text("".join(
        json.dumps({"query_id": str(i), **{m: v[i] for m, v in values.items()}}) + "\n" for i in range(n)))
    return folder


def test_check_reads_each_metrics_direction_from_its_spec(tmp_path: Path) -> None:
    """A hard-negative degradation (HND) that grows is a regression, one that shrinks is not; k* (the best number
    of passages) has no direction and is not gated unless a thresholds file names it."""
    base = _run_folder(tmp_path / "base", {"HND[bm25]": [0.0] * 30, "k_star[score]": [5.0] * 30})
    worse = _run_folder(tmp_path / "worse", {"HND[bm25]": [0.4, 0.6] * 15, "k_star[score]": [1.0] * 30})
    better = _run_folder(tmp_path / "better", {"HND[bm25]": [-0.4, -0.6] * 15, "k_star[score]": [1.0] * 30})
    r = CliRunner().invoke(main, ["check", str(worse), "--baseline", str(base)])
    assert r.exit_code == 1 and "HND[bm25] (dropped 0.5000" in r.output.replace("\n", " ")
    assert "k_star" not in r.output
    r = CliRunner().invoke(main, ["check", str(better), "--baseline", str(base)])
    assert r.exit_code == 0, r.output


def test_a_run_over_passages_compares_with_a_run_over_documents_per_document(tmp_path: Path) -> None:
    """R@10 over passages is another quantity: against a run over whole articles only M[doc] pairs with
    M, while figures with no document level (answers) pair as they are."""
    from ragbench.report.compare import compare

    docs = _run_folder(tmp_path / "docs", {"R@10": [0.0, 0.5, 1.0, 0.5], "popqa_acc": [0.0, 1.0, 1.0, 0.0]})
    passages = _run_folder(tmp_path / "passages", {"R@10": [0.0, 0.0, 0.5, 0.0], "R@10[doc]": [0.5, 1.0, 1.0, 0.5],
                                                   "popqa_acc": [1.0, 1.0, 1.0, 0.0]})
    rows = {r.metric: r for r in compare([docs, passages], resamples=200)}
    assert list(rows) == ["R@10[doc]", "popqa_acc"]
    doc = rows["R@10[doc]"]
    assert (doc.mean_baseline, doc.mean_run) == (0.5, 0.75) and (doc.wins, doc.ties, doc.losses) == (2, 2, 0)
    assert rows["popqa_acc"].delta == 0.25
    back = {r.metric: r for r in compare([passages, docs], resamples=200)}  # the baseline over passages
    assert list(back) == ["R@10[doc]", "popqa_acc"] and back["R@10[doc]"].mean_baseline == 0.75
    same = {r.metric for r in compare([passages, passages], resamples=200)}  # same level: every shared figure
    assert same == {"R@10", "R@10[doc]", "popqa_acc"}
