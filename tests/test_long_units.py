"""LongRAG long units: the greedy merge on hand-worked graphs, title packing, qrels mapping, the
cache round trip, and real runs on PopQA (unit counts and sizes printed as REPORT lines)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ragbench.cache import Cache
from ragbench.corpora import long_units as lu
from ragbench.corpora.long_units import (
    LongUnitsOptions,
    UnitCorpus,
    build_units,
    count_tokens,
    group_by_links,
    group_by_title,
    load_tokenizer,
    map_qrels,
)
from ragbench.tasks import load_task
from ragbench.tasks.beir import load_corpus
from ragbench.tasks.card import load_task_card
from ragbench.types import Corpus, Document
from tests.conftest import SHARED_DATA


def grouped(links: tuple[list[int], list[int]], size: list[int], k: int) -> list[list[str]]:
    """group_by_links over rows, its units named d<row> for readability."""
    return [[f"d{i}" for i in u] for u in group_by_links(*links, size, k)]


def sizes(*values: int) -> list[int]:
    return list(values)


def edges(*pairs: tuple[int, int]) -> tuple[list[int], list[int]]:
    return [a for a, _ in pairs], [b for _, b in pairs]  # one direction only: the merge must make links undirected


# -- group_by_links on hand-worked graphs -------------------------------------------------------------
def test_chain_absorbed_groups_disappear() -> None:
    # degrees d0:1 d3:1 d1:2 d2:2 -> d0={d0}, d3={d3}, d1 absorbs {d0} (20), d2 absorbs {d3} (10) then {d0,d1} (20)
    chain = edges((0, 1), (1, 2), (2, 3))
    assert grouped(chain, sizes(10, 10, 10, 10), 100) == [["d0", "d1", "d2", "d3"]]
    # K=25: d2 takes {d3} (20 tokens), then {d0,d1} (20) would make 40 > 25
    assert grouped(chain, sizes(10, 10, 10, 10), 25) == [["d0", "d1"], ["d2", "d3"]]


def test_star_merges_smallest_first_ties_by_corpus_order() -> None:
    # leaves (degree 1) become singletons first; the centre then takes d1, d2 (ties by order): 30, +d3 = 40 > 35
    star = edges((0, 1), (0, 2), (0, 3), (0, 4))
    assert grouped(star, sizes(10, 10, 10, 10, 10), 35) == [["d0", "d1", "d2"], ["d3"], ["d4"]]


def test_merge_stops_at_first_group_that_does_not_fit() -> None:
    # centre d0 (10) and leaves d1 (50), d2 (5), d3 (30), K=50: sorted 5, 30, 50 -> 15, 45, then 95 > 50: stop
    star = edges((0, 1), (0, 2), (0, 3))
    assert grouped(star, sizes(10, 50, 5, 30), 50) == [["d0", "d2", "d3"], ["d1"]]
    # whole groups are compared: d2 takes {d4} (45); d3 then takes {d1} (20) but not {d2, d4} (20 + 45 > 50)
    graph = edges((2, 3), (3, 1), (4, 2))
    assert grouped(graph, sizes(10, 10, 25, 10, 20), 50) == [["d0"], ["d1", "d3"], ["d2", "d4"]]


def test_isolated_kept_self_and_repeated_links_ignored() -> None:
    links = edges((0, 1), (1, 0), (0, 1), (2, 2))
    assert grouped(links, sizes(1, 1, 1), 100) == [["d0", "d1"], ["d2"]]


def test_oversize_document_is_a_unit_of_its_own() -> None:
    # d0 (500 > K) is processed first and stays alone; d1 later takes d2's group but not d0's
    assert grouped(edges((0, 1), (1, 2)), sizes(500, 10, 10), 100) == [["d0"], ["d1", "d2"]]
    # processed last, an oversize document merges nothing
    assert grouped(edges((0, 1), (0, 2)), sizes(500, 10, 10), 100) == [["d0"], ["d1"], ["d2"]]


def test_degree_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lu, "MAX_DEGREE", 2)  # the centre (degree 3) is never processed: all singletons
    star = edges((0, 1), (0, 2), (0, 3))
    assert grouped(star, sizes(1, 1, 1, 1), 100) == [["d0"], ["d1"], ["d2"], ["d3"]]


def test_deterministic_partition_within_k() -> None:
    rng = random.Random(7)
    n, k = 300, 200
    size = [rng.randint(1, 120) for _ in range(n)]
    size[5] = 900
    pairs = [(rng.randrange(n), rng.randrange(n)) for _ in range(600)]
    first = group_by_links(*edges(*pairs), size, k)
    rng.shuffle(pairs)
    again = group_by_links(*edges(*[(b, a) for a, b in pairs]), size, k)  # other direction and order
    assert first == again
    assert sorted(m for u in first for m in u) == list(range(n))
    assert all(sum(size[m] for m in u) <= k for u in first if len(u) > 1)
    assert [5] in first


def test_resolve_links_by_id_then_title_then_lowercase_title() -> None:
    rows = [("a", "Alpha", ["b", "Gamma", "delta", "Nowhere"]), ("b", "Beta", "a"), ("c", "Gamma", []),
            ("d", "Delta", ["Delta"]), ("e", "Gamma", [])]  # a second "Gamma": links resolve to the first
    corpus = Corpus({i: Document(i, "x", t, {"links": links}) for i, t, links in rows}, "fp")
    src, dst, unresolved = lu.resolve_links(corpus, "links")
    assert list(zip(corpus.id_at(src), corpus.id_at(dst), strict=True)) == [
        ("a", "b"), ("a", "c"), ("a", "d"), ("b", "a"), ("d", "d")]
    assert unresolved == 1


# -- group_by_title ---------------------------------------------------------------------------------
def test_title_packing() -> None:
    titles = ["A", "A", "A", "B", "A", "", "", "C", "C"]
    units = group_by_title(titles, sizes(40, 40, 40, 40, 40, 5, 5, 150, 10), 100)
    # A's run is packed 80 + 40; A after B starts anew; untitled docs stay alone; C's oversize passage is alone
    assert units == [[0, 1], [2], [3], [4], [5], [6], [7], [8]]


# -- map_qrels --------------------------------------------------------------------------------------
def test_map_qrels_max_grade() -> None:
    units = UnitCorpus({"u0": Document("u0", "", extra={"members": ["d0", "d2"]}),
                        "u1": Document("u1", "", extra={"members": ["d1"]})}, "fp")
    qrels = {"q1": {"d0": 1, "d2": 2, "d1": 0}, "q2": {"gone": 1}, "q3": {"d2": 1}}
    assert map_qrels(qrels, units) == {"q1": {"u0": 2, "u1": 0}, "q3": {"u0": 1}}
    assert units.members("u0") == ["d0", "d2"]


# -- tokenizer, build_units and the cache -------------------------------------------------------------
def test_count_tokens_matches_tokenizer(smollm2_dir: Path) -> None:
    tok, digest = load_tokenizer(str(smollm2_dir))
    texts = ["Paris is the capital of France.", "", "naïve café " * 50]
    assert count_tokens(tok, texts) == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert load_tokenizer(lu.DEFAULT_MODEL)[1] == digest  # the bundled name loads offline, same tokenizer


def linked_corpus() -> Corpus:
    rows = [("a", "Alpha", ["Beta"]), ("b", "Beta", ["gamma"]), ("c", "Gamma", []), ("d", "Delta", ["a", "Nowhere"])]
    return Corpus({i: Document(i, f"{t} text.", t, {"links": links}) for i, t, links in rows}, "src-fp")


def test_build_units_cache_round_trip(smollm2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path / "cache")
    options = LongUnitsOptions(tokenizer=str(smollm2_dir))
    units, stats = build_units(linked_corpus(), options, cache)
    assert stats.group_by == "links" and stats.unresolved_links == 1 and stats.units == 1
    (unit,) = units.values()
    assert unit.id == "u000000" and unit.title == "Alpha | Beta | Gamma | Delta"
    assert unit.text == "Alpha text. Beta text. Gamma text. Delta text."
    assert units.members("u000000") == ["a", "b", "c", "d"]
    assert unit.extra["tokens"] == stats.tokens["max"]
    assert units.fingerprint != "src-fp" and "units" in stats.summary()

    def fail(*args: object) -> None:
        raise AssertionError("rebuilt instead of reading the cache")

    monkeypatch.setattr(lu, "group_by_links", fail)
    again, stats2 = build_units(linked_corpus(), options, cache)
    assert again.fingerprint == units.fingerprint and again == units and stats2 == stats
    monkeypatch.undo()
    small, small_stats = build_units(
        linked_corpus(), LongUnitsOptions(tokenizer=str(smollm2_dir), max_tokens=8), cache)
    assert small.fingerprint != units.fingerprint and small.source != units.source
    assert small_stats.units > 1
    titled, title_stats = build_units(
        linked_corpus(), LongUnitsOptions(tokenizer=str(smollm2_dir), group_by="title"), cache)
    assert title_stats.group_by == "title" and title_stats.singletons == 4
    assert list(titled) == ["u000000", "u000001", "u000002", "u000003"]


# -- real data ------------------------------------------------------------------------------------
def _report(name: str, corpus: Corpus, smollm2_dir: Path, cache: Cache) -> None:
    for k in (4000, 1000):
        units, stats = build_units(corpus, LongUnitsOptions(tokenizer=str(smollm2_dir), max_tokens=k), cache)
        assert sorted(m for u in units.values() for m in u.extra["members"]) == sorted(corpus)
        assert stats.units == len(units) and stats.documents == len(corpus)
        print(f"REPORT {name}: {stats.summary()}")


def test_popqa_sample_units(smollm2_dir: Path, tmp_path: Path) -> None:
    task = load_task(load_task_card("popqa-sample")[0])
    assert task.corpus is not None
    _report("popqa-sample", task.corpus, smollm2_dir, Cache(tmp_path))
    units, _ = build_units(task.corpus, LongUnitsOptions(tokenizer=str(smollm2_dir)), Cache(tmp_path))
    mapped = map_qrels(task.qrels, units)
    assert sum(map(len, mapped.values())) <= sum(map(len, task.qrels.values())) and set(mapped) == set(task.qrels)


def test_popqa_full_units(smollm2_dir: Path, tmp_path: Path) -> None:
    path = SHARED_DATA / "popqa" / "corpus.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    _report("popqa", load_corpus(path), smollm2_dir, Cache(tmp_path))


# -- mention links ------------------------------------------------------------------------------------
def test_mention_links_word_boundaries_longest_title_and_no_self_links() -> None:
    rows = [("a", "New York", "New York City lies in New York State."),
            ("b", "New York City", "A city; see also York and Yorkshire."),
            ("c", "York", "York is in Yorkshire, unlike New Yorkers."),
            ("d", "Ann", "Ann and Annapolis.")]  # titles under 4 characters link nothing
    corpus = Corpus({i: Document(i, text, title) for i, title, text in rows}, "fp")
    # a: "New York City" (longest match first) and "New York" (a's own: dropped) -> b only
    # b: "York" -> c, "Yorkshire" is not "York"; c: "New Yorkers" does not mention "New York" at a boundary
    src, dst = lu.mention_links(corpus)
    assert list(zip(corpus.id_at(src), corpus.id_at(dst), strict=True)) == [("a", "b"), ("b", "c")]


# -- long units in a pipeline -------------------------------------------------------------------------
UNITS_PIPELINE = """\
name: units
stages:
  - {id: units, type: long_units, group_by: mentions, max_tokens: 1000, tokenizer: %s}
  - {id: passages, type: bm25, top_k: 50}
  - {id: long, type: bm25, corpus: units, top_k: 50}
  - {id: long2, type: bm25, corpus: units, k1: 1.5, top_k: 50}
  - {id: fused, type: fusion, inputs: [long, long2], top_k: 20}
"""


def test_pipeline_ranks_units_and_scores_each_stage(smollm2_dir: Path, tmp_path: Path) -> None:
    from ragbench.config import parse_pipeline
    from ragbench.evaluation import evaluate_result, stage_metrics
    from ragbench.metrics.ir import evaluate as evaluate_ir
    from ragbench.pipeline import run_pipeline
    from ragbench.progress import Reporter
    from ragbench.yamlio import load_yaml

    p = tmp_path / "units.yaml"
    p.write_text(UNITS_PIPELINE % smollm2_dir)
    pipeline, problems = parse_pipeline(load_yaml(p))
    assert not problems and pipeline is not None
    # fusion inherits its inputs' corpus
    assert [s.corpus for s in pipeline.stages] == [None, None, "units", "units", "units"]
    assert pipeline.stages[1].inputs == ()  # a retriever reads no input; the corpus stage is never a default input
    task = load_task(load_task_card("popqa-sample")[0])
    cache = Cache(tmp_path / "cache")
    result = run_pipeline(pipeline, task, cache, Reporter(quiet=True))
    units = {s.spec.id: s for s in result.stages}["units"]
    assert units.view is not None and units.view.corpus is not None and units.batches_cached == 0
    unit_ids = set(units.view.corpus)
    assert len(unit_ids) < len(task.corpus)  # mentions merged some paragraphs
    long, passages = result.final_ranking, result.rankings[0]
    assert long.spec.id == "fused" and passages.spec.id == "passages"
    assert all(set(r.docids) <= unit_ids for r in long.output.records.values())
    assert all(set(r.docids) <= set(task.corpus) for r in passages.output.records.values())
    # the final ranking is scored against qrels mapped onto units, not the passage qrels
    aggregate, _, _ = evaluate_result(result, task, ["R@10", "answer_recall@1"])
    expected, _ = evaluate_ir(long.output.records, map_qrels(task.qrels, units.view.corpus), ["R@10"])
    assert aggregate["R@10"] == pytest.approx(expected["R@10"])
    by_stage = stage_metrics(result, task, ["R@10", "answer_recall@1"])
    assert list(by_stage) == ["passages", "long", "long2", "fused"] and by_stage["long"]["corpus"] == "units"
    assert by_stage["passages"]["metrics"]["R@10"] == pytest.approx(
        evaluate_ir(passages.output.records, task.qrels, ["R@10"])[0]["R@10"])
    assert by_stage["fused"]["metrics"] == {
        "R@10": pytest.approx(aggregate["R@10"]), "answer_recall@1": pytest.approx(aggregate["answer_recall@1"])}
    # a unit holding the gold passage holds its answer too: answer recall@50 over units >= over passages
    at50 = stage_metrics(result, task, ["answer_recall@50"])
    assert at50["long"]["metrics"]["answer_recall@50"] >= at50["passages"]["metrics"]["answer_recall@50"] - 1e-9
    again = run_pipeline(pipeline, task, cache, Reporter(quiet=True))
    assert all(s.cached for s in again.stages) and again.final.output.records == long.output.records


@pytest.mark.parametrize(("stages", "message"), [
    ("  - {id: u, type: long_units}\n  - {type: bm25, corpus: nope}\n",
     "'nope' is not an earlier corpus stage (type: long_units or passages); earlier: u"),
    ("  - {id: u, type: long_units}\n  - {id: a, type: bm25}\n  - {type: listwise, input: u}\n",
     "input 'u' is a corpus stage; name it with 'corpus: u' instead"),
    ("  - {id: u, type: long_units}\n  - {id: a, type: bm25}\n  - {id: b, type: bm25, corpus: u}\n"
     "  - {type: fusion, inputs: [a, b]}\n",
     "inputs a, b rank different corpora (the task corpus, u)"),
    ("  - {id: a, type: bm25}\n  - {id: v, type: long_units, corpus: a}\n",
     "'a' is not an earlier corpus stage"),
    ("  - {id: u, type: long_units}\n  - {id: a, type: bm25}\n  - {type: bm25, input: a, corpus: u}\n",
     "corpus 'u' differs from the corpus its input ranks"),
])
def test_corpus_references_are_checked(tmp_path: Path, stages: str, message: str) -> None:
    from ragbench.config import validate_file

    p = tmp_path / "p.yaml"
    p.write_text("name: x\nstages:\n" + stages)
    problems = [str(x) for x in validate_file(p)]
    assert any(message in x for x in problems), problems
