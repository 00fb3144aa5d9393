"""Experiments (`ragbench experiment`, `ragbench.experiment`) and the Python API (`ragbench.run`): Holm's and
Bonferroni's adjustments by hand, a grid over two pipelines whose shared stage is computed once and whose rows
equal separate runs, an experiment file with a failing combination, and the API against the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import ragbench
from ragbench.cli import main
from ragbench.report.experiment import adjust


def test_holm_steps_down_and_bonferroni_multiplies() -> None:
    ps = [0.01, 0.04, 0.03, None]  # None: a metric constant over the pair, no test, not in the family (m = 3)
    assert adjust(ps, "holm") == [0.03, 0.06, 0.06, None]  # 3 x 0.01; 2 x 0.03; max(0.06, 1 x 0.04)
    assert adjust(ps, "bonferroni") == [0.03, 0.12, 0.09, None]
    assert adjust(ps, "none") == ps and adjust([0.6, 0.5], "holm") == [1.0, 1.0]  # capped at 1


def _holm(ps: list[float | None]) -> list[float | None]:
    """Holm (1979) written out again: p_(i) x (m - i + 1), then the running maximum."""
    tested = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for k, (p, i) in enumerate(tested):
        running = max(running, min(1.0, p * (len(tested) - k)))
        out[i] = running
    return out


def _fused(tmp_path: Path) -> Path:
    """A second pipeline sharing the `bm25` stage of pipelines/bm25.yaml (same options, same cache key)."""
    p = tmp_path / "fused.yaml"
    p.write_text("name: fused\nstages:\n"
                 "  - {id: bm25, type: bm25, engine: bm25s, k1: 0.9, b: 0.4, fields: [title, text],"
                 " analyzer: {lowercase: true, stopwords: en, stemmer: porter}, top_k: 1000}\n"
                 "  - {id: b2, type: bm25, engine: bm25s, k1: 1.5, b: 0.75, top_k: 1000}\n"
                 "  - {id: rrf, type: fusion, inputs: [bm25, b2], k: 60, top_k: 1000}\n")
    return p


def test_a_grid_over_two_pipelines_runs_each_stage_once_and_equals_separate_runs(tmp_path: Path) -> None:
    env = {"RAGBENCH_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "table.json"
    args = ["experiment", "bm25", str(_fused(tmp_path)), "--task", "popqa-sample", "--limit", "60",
            "--grid", "bm25.k1=0.9,0.5", "--baseline", "bm25", "--correction", "holm",
            "--results", str(tmp_path / "results"), "-o", str(out)]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["pipeline"], r["variant"]) for r in rows] == [("bm25", {"bm25.k1": 0.9}), ("bm25", {"bm25.k1": 0.5}),
                                                             ("fused", {"bm25.k1": 0.9}), ("fused", {"bm25.k1": 0.5})]
    assert rows[0]["baseline"] and all(c["p"] is None and c["p_adj"] is None for c in rows[0]["metrics"].values())
    # the baseline's bm25 stage (k1 0.9) is computed once: the fused variant with k1 0.9 reads it from the cache
    timings = json.loads((Path(rows[2]["run"]) / "timings.json").read_text())["stages"]
    assert [s["from_cache"] for s in timings if s["id"] == "bm25"] == [True]
    for r in rows:  # each row is its run folder's metrics
        metrics = json.loads((Path(r["run"]) / "metrics.json").read_text())["metrics"]
        assert {m: c["value"] for m, c in r["metrics"].items()} == {m: metrics[m] for m in r["metrics"]}
    for m in rows[0]["metrics"]:  # adjusted p: Holm over the three variants, per metric
        assert [r["metrics"][m]["p_adj"] for r in rows[1:]] == _holm([r["metrics"][m]["p"] for r in rows[1:]])
    alone = CliRunner().invoke(main, ["run", "bm25", "--task", "popqa-sample", "--limit", "60", "--set",
                                      "bm25.k1=0.5", "--out", str(tmp_path / "alone")], env=env)
    assert alone.exit_code == 0, alone.output
    separate = json.loads((tmp_path / "alone" / "metrics.json").read_text())["metrics"]
    assert {m: c["value"] for m, c in rows[1]["metrics"].items()} == {m: separate[m] for m in rows[1]["metrics"]}


def test_an_experiment_file_reports_a_failed_combination_and_finishes_the_others(tmp_path: Path) -> None:
    spec = tmp_path / "exp.yaml"
    spec.write_text("name: demo\npipelines: [bm25]\ntasks: [popqa-sample, no-such-task]\n"
                    "grid: {bm25.b: [0.4, 0.8]}\nlimit: 20\nmetrics: [nDCG@10, R@10]\n")
    result = CliRunner().invoke(main, ["experiment", str(spec), "--results", str(tmp_path / "r"), "--format", "md"],
                                env={"RAGBENCH_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 1
    assert "failed: bm25 bm25.b=0.4 on no-such-task" in result.output
    assert "### popqa-sample" in result.output and "bm25 bm25.b=0.8" in result.output
    assert (tmp_path / "r" / "experiments" / "demo" / "popqa-sample").is_dir()
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipelines: [bm25]\ntasks: [popqa-sample]\ncorection: holm\n")
    result = CliRunner().invoke(main, ["experiment", str(bad)])
    assert result.exit_code == 2 and "bad.yaml:3" in result.output and "corection" in result.output


def test_the_python_api_gives_the_command_lines_numbers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAGBENCH_CACHE", str(tmp_path / "cache"))
    r = ragbench.run("bm25", task="popqa-sample", limit=40, set={"bm25.k1": 1.2}, out=tmp_path / "api")
    cli = CliRunner().invoke(main, ["run", "bm25", "--task", "popqa-sample", "--limit", "40", "--set", "bm25.k1=1.2",
                                    "--out", str(tmp_path / "cli")])
    assert cli.exit_code == 0, cli.output
    assert r.metrics == json.loads((tmp_path / "cli" / "metrics.json").read_text())["metrics"]
    assert len(r.per_query) == 40 and r.per_query.index.name == "query_id"
    assert r.per_query["nDCG@10"].mean() == pytest.approx(r.metrics["nDCG@10"], abs=1e-12)
    table = ragbench.experiment(["bm25"], tasks=["popqa-sample"], grid={"bm25.k1": [1.2, 0.5]}, limit=40,
                                results=tmp_path / "results")
    assert list(table["variant"]) == ["bm25 bm25.k1=1.2", "bm25 bm25.k1=0.5"]
    assert table.loc[0, "nDCG@10"] == r.metrics["nDCG@10"]
