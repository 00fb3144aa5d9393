"""The hard-negative experiment (docs/methods.md, "Hard negatives and the inverted U"): its scores on hand-made
trials, its options, and the stage run end to end with a real LLM on the embedded PopQA sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragbench.cache import Cache
from ragbench.cli import main
from ragbench.config import validate_file
from ragbench.experiments.hard_negatives import HardNegatives, gold_position
from ragbench.metrics.degradation import headline, summarize
from ragbench.progress import Reporter
from ragbench.readers.reader import Reader
from ragbench.stage import StageEnv
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from ragbench.types import Probe, Query, Ranking, TaskData


def _trial(source: str, m: int, right: bool) -> dict:
    return {"probe": "negatives", "source": source, "m": m, "m_used": m, "answer": "Paris" if right else "Rome"}


def _curve(k: int, reorder: bool, right: bool) -> dict:
    return {"probe": "top_k", "source": "bm25", "k": k, "reorder": reorder, "k_used": k,
            "answer": "Paris" if right else "Rome"}


def test_hnd_relative_drop_and_peak_on_hand_made_trials() -> None:
    # two queries; accuracies: gold alone 1.0; random m=5: 1.0, m=10: 0.5; bm25 m=5: 0.5, m=10: 0.0
    outcome = {("random", 5): (1, 1), ("random", 10): (1, 0), ("bm25", 5): (1, 0), ("bm25", 10): (0, 0)}
    probes = {}
    for i, qid in enumerate(("a", "b")):
        trials = [_trial("none", 0, True)] + [_trial(s, m, bool(v[i])) for (s, m), v in outcome.items()]
        # curve: k=1 0.5, k=5 1.0, k=20 0.5 in score order; reordered flat 1.0 up to k=20
        trials += [_curve(1, False, i == 0), _curve(5, False, True), _curve(20, False, i == 1)]
        trials += [_curve(1, True, i == 0), _curve(5, True, True), _curve(20, True, True)]
        probes[qid] = Probe(qid, "g", trials)
    queries = [Query("a", "q", {"answers": ["Paris"]}), Query("b", "q", {"answers": ["Paris"]})]
    task = TaskData("t", "test", queries, {}, None, "", "")
    s = summarize(probes, task, "popqa_acc", (0, 5, 10))
    assert s["negatives"]["bm25"]["5"]["acc"] == 0.5 and s["negatives"]["bm25"]["0"]["acc"] == 1.0
    assert s["HND"] == {"bm25": pytest.approx(((1.0 - 0.5) + (0.5 - 0.0)) / 2)}
    assert s["relative_drop"] == {"bm25": 1.0, "random": 0.5}
    score_order = s["curve"]["orders"]["score"]
    assert score_order["k_star"] == 5 and score_order["peak_drop"] == 0.5
    assert s["curve"]["orders"]["reordered"]["k_star"] == 5  # ties: the smallest k
    assert headline(s) == {"HND[bm25]": 1.0 / 2, "rel_drop[bm25]": 1.0, "rel_drop[random]": 0.5, "k_star[score]": 5.0,
                           "peak_drop[score]": 0.5, "k_star[reordered]": 5.0, "peak_drop[reordered]": 0.0}


def test_gold_position_is_seeded_and_in_range() -> None:
    positions = [gold_position(13, "q1", m) for m in (0, 5, 40)]
    assert positions == [gold_position(13, "q1", m) for m in (0, 5, 40)]
    assert positions[0] == 0 and all(0 <= p <= m for p, m in zip(positions, (0, 5, 40), strict=True))
    assert len({gold_position(s, "q1", 40) for s in range(20)}) > 5


PIPELINE = """\
name: hn
stages:
  - {id: bm25, type: bm25, engine: bm25s, top_k: 20}
  - id: probe
    type: hard_negatives
    inputs: [bm25]
    m: [0, 1]
    k: [1, 3]
    max_new_tokens: 4
    llm: {backend: transformers, model: SmolLM2-135M-Instruct}
metrics: [nDCG@10]
"""


def test_stage_runs_end_to_end_and_keeps_negatives_clean(tmp_path: Path, tiny_llm_dir: Path) -> None:
    """What is read in each trial, not what the model answers: a 2-layer random Llama (conftest) runs the stage."""
    p = tmp_path / "hn.yaml"
    p.write_text(PIPELINE.replace("model: SmolLM2-135M-Instruct", f"model: {tiny_llm_dir}"))
    result = CliRunner().invoke(main, ["run", str(p), "--task", "popqa-sample", "--limit", "3",
                                       "--out", str(tmp_path / "run")], env={"RAGBENCH_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    exp = metrics["experiments"]["probe"]
    assert set(exp["negatives"]) == {"bm25", "random"} and set(exp["negatives"]["bm25"]) == {"0", "1"}
    assert "HND[bm25]" in metrics["metrics"] and "k_star[reordered]" in metrics["metrics"]
    assert (run / "hard_negatives.png").stat().st_size > 1000 and (run / "inverted_u.png").stat().st_size > 1000
    from ragbench.metrics.answers import has_answer
    from ragbench.tasks import load_task
    from ragbench.tasks.card import load_task_card

    task = load_task(load_task_card("popqa-sample")[0], limit=3)
    for row in map(json.loads, (run / "experiment.jsonl").read_text().splitlines()):
        q = next(q for q in task.queries if q.id == row["query_id"])
        negatives = [t for t in row["trials"] if t["probe"] == "negatives"]
        for t in negatives:
            assert t["context_ids"][t["gold_position"]] == row["gold"] and len(t["context_ids"]) == t["m_used"] + 1
            for d in t["context_ids"]:
                if d != row["gold"]:  # a negative is never relevant and never holds the answer
                    assert task.qrels[q.id].get(d, 0) <= 0
                    assert not has_answer(task.corpus[d].contents(), q.extra["answers"])
        # the same seeded gold position for every source at the same m, drawn under the fewest negatives read
        by_m: dict[int, list[dict]] = {}
        for t in negatives:
            by_m.setdefault(t["m"], []).append(t)
        for ts in by_m.values():
            assert len({t["gold_position"] for t in ts}) == 1 and ts[0]["gold_position"] <= min(t["m_used"] for t in ts)
            assert all(t["m_shared"] == min(u["m_used"] for u in ts) for t in ts)
        curve = {(t["k"], t["reorder"]): t["context_ids"] for t in row["trials"] if t["probe"] == "top_k"}
        assert sorted(curve[(3, True)]) == sorted(curve[(3, False)]) and curve[(3, True)][-1] == curve[(3, False)][1]

    # the leaderboard's HTML page embeds this run's curves (regenerated from metrics.json, not copied)
    page = CliRunner().invoke(main, ["leaderboard", str(tmp_path), "--format", "html"])
    assert page.exit_code == 0, page.output
    for fig in ("hard_negatives", "inverted_u"):
        assert f'id="{fig}-popqa-sample-' in page.output


def test_reader_only_options_are_refused_where_they_stand(tmp_path: Path) -> None:
    """The experiment takes the reader's prompt options only: `closed_book` (and `steps`, whose second step it would
    not run) are unknown fields, reported at their line like any other."""
    p = tmp_path / "hn.yaml"
    p.write_text(PIPELINE.replace("    m: [0, 1]\n", "    m: [0, 1]\n    closed_book: true\n    steps: 2\n"))
    problems = [str(x) for x in validate_file(p)]
    assert any(x.startswith(f"{p}:8: stages[1].closed_book: unknown field for type 'hard_negatives'") for x in problems)
    assert any(x.startswith(f"{p}:9: stages[1].steps: unknown field for type 'hard_negatives'") for x in problems)
    assert len(problems) == 2


def test_a_context_the_reader_also_reads_is_the_same_request(tmp_path: Path) -> None:
    """Both stages build their prompts with readers/prompt.py: the experiment's top-3 trial, reordered, asks the
    very request a `type: reader` with top_k 3 and order both_ends asked (an LLM cache hit, the same reply)."""
    task = load_task(load_task_card("popqa-sample")[0], limit=1)
    q = task.queries[0]
    ranking = Ranking(q.id, list(task.corpus)[:5], [5.0, 4, 3, 2, 1])
    llm = {"backend": "transformers", "model": "SmolLM2-135M-Instruct"}
    env = StageEnv(Cache(tmp_path), Reporter(quiet=True), "reader", ("bm25",))
    reader_options = {"llm": llm, "top_k": 3, "order": "both_ends", "max_new_tokens": 4}
    reader = Reader(Reader.Options.model_validate(reader_options), env)
    reader.prepare(task)
    answer = reader.process([q], [{q.id: ranking}])[q.id]
    probe_options = {"llm": llm, "m": [0], "k": [3], "reorder": [True], "random": False, "max_new_tokens": 4}
    probe = HardNegatives(HardNegatives.Options.model_validate(probe_options), env)
    probe.prepare(task)
    (trial,) = [t for t in probe.process([q], [{q.id: ranking}])[q.id].trials if t["probe"] == "top_k"]
    assert trial["context_ids"] == answer.context_ids and trial["output"] == answer.outputs[0]
    assert probe.llm.stats.cached >= 1
