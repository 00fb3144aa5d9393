"""Long units made of passages (LongRAG on long articles, issue 17): articles packed and short ones merged,
units ranked at their best passage (maxp), and units scored over the task's documents, worked by hand;
then one run over real PopQA paragraphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ragbench.cache import Cache
from ragbench.config import parse_pipeline
from ragbench.corpora.long_units import group_articles
from ragbench.corpora.passages import document_of
from ragbench.evaluation import evaluate_result
from ragbench.outputs.corpus import DocumentLevel
from ragbench.pipeline import run_pipeline
from ragbench.progress import Reporter
from ragbench.retrievers.maxp import MaxP, MaxPOptions
from ragbench.stage import StageEnv
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from ragbench.types import Corpus, Document, Query, Ranking, TaskData
from ragbench.yamlio import LocatedYaml


def test_long_articles_keep_their_own_units_and_short_ones_merge_along_mentions() -> None:
    titles = ["A", "A", "A", "B", "C", "D"]
    sizes = np.array([3, 3, 3, 2, 2, 5])
    # B mentions C, C mentions A (split over two units: never merged), D mentions B
    src, dst = np.array([3, 4, 5]), np.array([4, 0, 3])
    # A: [0, 1] (6 tokens) and [2]; then B (degree 2) takes its smallest neighbour C (2 + 2 <= 6), not D (+5)
    assert group_articles(titles, sizes, src, dst, 6) == [[0, 1], [2], [3, 4], [5]]
    assert group_articles(titles, sizes, src[:0], dst[:0], 6) == [[0, 1], [2], [3], [4], [5]]


def test_a_unit_ranks_at_its_best_passage() -> None:
    units = Corpus.from_documents([Document("u1", "", extra={"members": ["p1", "p2"]}),
                                   Document("u2", "", extra={"members": ["p3"]})], "units", "test")
    stage = MaxP(MaxPOptions(top_k=5), StageEnv(Cache(None), Reporter(quiet=True), "maxp"))
    stage.prepare(TaskData("t", "test", [], {}, units, "", "fp"))
    ranked = Ranking("q", ["p3", "p1", "px", "p2"], [0.9, 0.8, 0.7, 0.6])  # px is in no unit
    out = stage.process([Query("q", "")], [{"q": ranked}])["q"]
    assert (out.docids, out.scores) == (["u2", "u1"], [0.9, 0.8])


def test_units_of_passages_rank_every_document_they_hold() -> None:
    passages = DocumentLevel({"q": {"a": 1, "c": 1}}, document_of)
    members = {"u1": ["a#0", "a#1", "b#0"], "u2": ["c#0", "a#2"]}
    units = passages.through(members.__getitem__)
    assert units.document_of("u1") == ["a", "b"]
    ranked = units.rank(Ranking("q", ["u1", "u2"], [0.5, 0.4]))
    assert (ranked.docids, ranked.scores) == (["a", "b", "c"], [0.5, 0.5, 0.4])  # a stays at its best unit


def test_units_of_passages_run_over_popqa(tmp_path: Path, smollm2_dir: Path) -> None:
    """passages -> units (articles) -> BM25 over passages -> maxp over units: each unit is consecutive passages of
    its articles, the unit ranking is the BM25 ranking regrouped, and metrics come at both levels."""
    data = {"name": "u", "stages": [
        {"id": "passages", "type": "passages", "size": 20},
        {"id": "units", "type": "long_units", "corpus": "passages", "group_by": "articles", "max_tokens": 120,
         "tokenizer": str(smollm2_dir)},
        {"id": "bm25", "type": "bm25", "corpus": "passages", "engine": "bm25s", "top_k": 200},
        {"id": "long", "type": "maxp", "input": "bm25", "corpus": "units", "top_k": 20}],
        "metrics": ["R@5", "R@20"]}
    pipeline, problems = parse_pipeline(LocatedYaml(data, {}, "u.yaml"))
    assert pipeline is not None, [str(p) for p in problems]
    task = load_task(load_task_card("popqa-sample")[0], limit=8)
    result = run_pipeline(pipeline, task, Cache(tmp_path / "cache"), Reporter(quiet=True))
    by_id = {s.spec.id: s for s in result.stages}
    units = by_id["units"].output.view.corpus
    assert units is not None
    for u in units.values():
        members = u.extra["members"]
        per_doc: dict[str, list[int]] = {}
        for m in members:
            per_doc.setdefault(document_of(m), []).append(int(m.rsplit("#", 1)[1]))
        assert all(n == list(range(n[0], n[0] + len(n))) for n in per_doc.values())  # consecutive passages
        assert len(per_doc) == 1 or u.extra["tokens"] <= 120  # several articles only when they fit
    unit_of = {m: u.id for u in units.values() for m in u.extra["members"]}
    for q in task.queries:
        regrouped = list(dict.fromkeys(unit_of[p] for p in by_id["bm25"].output.get(q.id).docids))[:20]
        assert by_id["long"].output.get(q.id).docids == regrouped
    aggregate, _, _ = evaluate_result(result, task, ["R@5", "R@20"])
    assert {"R@5", "R@20", "R@5[doc]", "R@20[doc]"} <= set(aggregate)
    assert json.dumps(by_id["units"].output.stats)  # the unit statistics go to metrics.json
