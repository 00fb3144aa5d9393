"""Issue 14 (method fidelity), fusion slice: RRF ranks are input positions; the hard-negative probe's
gold position is shared by all sources even when the context caps some of them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ragbench.cache import Cache
from ragbench.experiments.hard_negatives import HardNegatives, gold_position
from ragbench.progress import Reporter
from ragbench.retrievers.fusion import Fusion, FusionOptions, rrf
from ragbench.stage import StageEnv
from ragbench.types import Corpus, Document, Query, Ranking, TaskData


def _fuse(options: FusionOptions, *rankings: Ranking) -> Ranking:
    stage = Fusion(options, StageEnv(Cache("/nonexistent"), Reporter(quiet=True), "fusion"))
    return stage.process([Query("q", "x")], [{"q": r} for r in rankings])["q"]


# 16 documents with one tied score, listed d15 first: ranks by position are d15=1, d14=2, ..., d00=16.
# (ranx's unstable sort reorders ties of 16 or more; fewer happen to keep their order, so 16 is needed.)
TIED = Ranking("q", [f"d{i:02d}" for i in reversed(range(16))], [1.0] * 16)


def test_rrf_ranks_are_input_positions_with_ties_in_input_order() -> None:
    """Rule (Cormack et al., SIGIR 2009; pyserini `pyserini/fusion/_base.py` + `pyserini/trectools/_base.py`,
    which take the run's rank column as given): RRF(d) = sum over runs of 1/(k + rank), rank = 1-based position
    in the input ranking as given, ties keeping input order; a missing document adds 0; fused ties by doc id."""
    other = Ranking("q", ["d00", "e"], [0.9, 0.1])
    fused = _fuse(FusionOptions(), TIED, other)
    expected = {f"d{j:02d}": 1 / (60 + 16 - j) for j in range(16)}
    expected["d00"] += 1 / 61  # rank 16 in TIED, rank 1 in `other`: 1/76 + 1/61
    expected["e"] = 1 / 62
    assert dict(zip(fused.docids, fused.scores, strict=True)) == pytest.approx(expected, rel=0, abs=1e-15)
    # d14 and e tie at 1/62: broken by doc id
    assert fused.docids == ["d00", "d15", "d14", "e", *[f"d{j:02d}" for j in range(13, 0, -1)]]


def test_rrf_many_inputs_depth_and_fused_ties() -> None:
    """Same rule with three inputs, read to `depth` positions each; equal fused scores ordered by doc id."""
    tied20 = Ranking("q", [f"d{i:02d}" for i in reversed(range(20))], [1.0] * 20)  # d19 rank 1 ... d00 rank 20
    b = Ranking("q", ["d00", "d19"], [2.0, 1.0])
    c = Ranking("q", ["d18"], [1.0])
    fused = _fuse(FusionOptions(depth=17), tied20, b, c)
    # depth 17 reads tied20 down to d03 (rank 17): d02, d01, d00 get nothing from it
    expected = {f"d{j:02d}": 1 / (60 + 20 - j) for j in range(3, 20)}
    expected["d19"] += 1 / 62  # 1/61 + 1/62
    expected["d18"] += 1 / 61  # 1/62 + 1/61: the same sum, so d18 < d19 by id
    expected["d00"] = 1 / 61
    assert dict(zip(fused.docids, fused.scores, strict=True)) == pytest.approx(expected, rel=0, abs=1e-15)
    assert fused.docids == ["d18", "d19", "d00", *[f"d{j:02d}" for j in range(17, 2, -1)]]


def test_rrf_one_input_path_uses_positions_too() -> None:
    """With one non-empty input the fused score is that run's own term, 1/(k + position)."""
    fused = _fuse(FusionOptions(top_k=3), TIED, Ranking("q", [], []))
    assert fused.docids == ["d15", "d14", "d13"]
    assert fused.scores == pytest.approx([1 / 61, 1 / 62, 1 / 63], rel=0, abs=1e-15)


def test_rrf_function_counts_a_repeated_document_once() -> None:
    assert rrf([["a", "b", "a"], ["b"]], k=0) == {"a": 1.0, "b": 1 / 2 + 1.0}


# -- hard-negative probe: the gold position under a context cap -------------------------------------
def _probe_task() -> TaskData:
    long = " ".join(["harbour lantern granite orchard meadow"] * 40)  # ~200 tokens: one fits the budget
    docs = [Document("g", "The capital of France is Paris.", "France")]
    docs += [Document(f"s{i}", f"A short note number {i} about rivers.", f"S{i}") for i in range(5)]
    docs += [Document(f"l{i}", f"{long} {i}", f"L{i}") for i in range(5)]
    return TaskData("hn", "test", [Query("q1", "What is the capital of France?", {"answers": ["Paris"]})],
                    {"q1": {"g": 1}}, Corpus({d.id: d for d in docs}, "hn-fp"), "", "hn-fp")


def test_gold_position_is_shared_when_the_context_caps_one_source(tmp_path: Path, smollm2_dir: Path) -> None:
    """Rule (Jin et al., ICLR 2025, no public code; ragbench's HND design): at a given m the gold passage sits at
    the same seeded position for every source. When the budget caps a source's negatives, the position is drawn
    from 0..(fewest negatives any source read) with the (seed, query, m) generator, so it exists in every context."""
    task = _probe_task()
    options = HardNegatives.Options.model_validate({"m": [0, 5], "k": [], "random": False, "seed": 19,
                                                    "context_tokens": 300,
                                                    "llm": {"backend": "transformers", "model": str(smollm2_dir)}})
    stage = HardNegatives(options, StageEnv(Cache(tmp_path), Reporter(quiet=True), "probe", ("short", "long")))
    stage.prepare(task)
    rankings: dict[str, Ranking | None] = {"short": Ranking("q1", [f"s{i}" for i in range(5)], [5.0, 4, 3, 2, 1]),
                                           "long": Ranking("q1", [f"l{i}" for i in range(5)], [5.0, 4, 3, 2, 1])}
    trials = {t["source"]: t for t in stage.trials(task.queries[0], rankings) if t["m"] == 5}
    assert trials["short"]["m_used"] == 5 and trials["long"]["m_used"] == 1  # the budget caps the long source
    # uncapped, the draw from 0..5 for seed 19 is 5: the old code put gold 6th for `short` and last (2nd) for `long`
    assert random.Random("19:q1:5").randint(0, 5) == 5
    position = gold_position(19, "q1", 5, cap=1)
    assert position == random.Random("19:q1:5").randint(0, 1) == 0
    for source, negatives in (("short", [f"s{i}" for i in range(5)]), ("long", ["l0"])):
        t = trials[source]
        assert t["gold_position"] == position and t["m_shared"] == 1
        assert t["context_ids"] == negatives[:position] + ["g"] + negatives[position:]


def test_gold_position_uncapped_is_the_draw_over_all_m() -> None:
    """Without a cap the position is the (seed, query, m) draw from 0..m, as before the cap rule."""
    for m in (0, 5, 40):
        drawn = random.Random(f"13:q1:{m}").randint(0, m)
        assert gold_position(13, "q1", m) == gold_position(13, "q1", m, cap=m) == drawn
    assert all(0 <= gold_position(s, "q1", 40, cap=3) <= 3 for s in range(50))
