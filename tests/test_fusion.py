"""Fusion: RRF exactly as Cormack et al. define it, weighted min-max fusion, and cache chaining."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragbench.cache import Cache
from ragbench.config import parse_pipeline
from ragbench.pipeline import run_pipeline
from ragbench.progress import Reporter
from ragbench.retrievers.fusion import Fusion, FusionOptions
from ragbench.stage import StageEnv
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from ragbench.types import Query, Ranking
from ragbench.yamlio import load_yaml


def _fuse(options: FusionOptions, *rankings: Ranking) -> Ranking:
    stage = Fusion(options, StageEnv(Cache("/nonexistent"), Reporter(quiet=True), "fusion"))
    return stage.process([Query("q", "x")], [{"q": r} for r in rankings])["q"]


def test_rrf_matches_the_definition() -> None:
    a = Ranking("q", ["d1", "d2", "d3"], [9.0, 5.0, 1.0])
    b = Ranking("q", ["d3", "d4"], [0.9, 0.1])
    fused = _fuse(FusionOptions(), a, b)
    expected = {"d1": 1 / 61, "d2": 1 / 62, "d3": 1 / 63 + 1 / 61, "d4": 1 / 62}
    assert fused.docids == ["d3", "d1", "d2", "d4"]  # d2 and d4 tie: broken by id
    assert dict(zip(fused.docids, fused.scores, strict=True)) == pytest.approx(expected)


def test_weighted_min_max_fusion() -> None:
    a = Ranking("q", ["d1", "d2", "d3"], [10.0, 6.0, 2.0])  # min-max: 1, .5, 0
    b = Ranking("q", ["d2", "d3"], [0.8, 0.4])  # 1, 0
    fused = _fuse(FusionOptions(method="weighted", weights=(0.25, 0.75)), a, b)
    expected = {"d1": 0.25, "d2": 0.25 * 0.5 + 0.75, "d3": 0.0}
    got = dict(zip(fused.docids, fused.scores, strict=True))
    assert got == pytest.approx(expected, abs=1e-9)
    assert fused.docids[0] == "d2"


def test_top_k_and_empty_inputs() -> None:
    a = Ranking("q", [f"d{i}" for i in range(50)], [float(50 - i) for i in range(50)])
    alone = _fuse(FusionOptions(top_k=10), a, Ranking("q", [], []))
    assert alone.docids == a.docids[:10] and alone.scores[0] == pytest.approx(1 / 61)
    assert len(_fuse(FusionOptions(), Ranking("q", [], []), Ranking("q", [], []))) == 0


def test_changing_an_upstream_stage_recomputes_the_fusion_below_it(tmp_path: Path) -> None:
    card, _ = load_task_card("popqa-sample")
    task = load_task(card, limit=40)
    cache = Cache(tmp_path)
    text = """name: two-bm25
stages:
  - {id: a, type: bm25, k1: %s}
  - {id: b, type: bm25, engine: bm25s, b: 0.75}
  - {id: f, type: fusion, inputs: [a, b]}
"""

    def run(k1: str):
        p = tmp_path / "p.yaml"
        p.write_text(text % k1)
        pipeline, problems = parse_pipeline(load_yaml(p))
        assert not problems
        return run_pipeline(pipeline, task, cache, Reporter(quiet=True))

    first = run("0.9")
    assert [s.cached for s in first.stages] == [False, False, False]
    changed = run("1.2")
    assert [s.cached for s in changed.stages] == [False, True, False]
    assert run("1.2").final.cached


def test_fusion_needs_two_inputs(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("name: x\nstages:\n  - {type: bm25}\n  - {type: fusion}\n")
    problems = [str(x) for x in parse_pipeline(load_yaml(p))[1]]
    assert problems == [f"{p}:4: stages[1].inputs: type 'fusion' takes 2 to 16 input stage(s), got 1"]
