"""cross_encoder: pairs scored by a sentence-transformers CrossEncoder, ranking = the scores.

No trained cross-encoder ships offline, so the model is built here from the bundled MiniLM
encoder with a seeded random head (the recipe in ENVIRONMENT.md §1.3): the test checks that
the stage scores exactly the pairs it should and orders by those scores, not that it helps.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ragbench.cache import Cache
from ragbench.config import parse_pipeline
from ragbench.errors import RagbenchError
from ragbench.models import resolve
from ragbench.pipeline import run_pipeline
from ragbench.progress import Reporter
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from ragbench.yamlio import load_yaml


@pytest.fixture(scope="module")
def local_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder(resolve("all-MiniLM-L6-v2").path, num_labels=1, device="cpu")
    out = tmp_path_factory.mktemp("ce") / "minilm-random-head"
    model.save(str(out))
    return out


def _pipeline(tmp_path: Path, model: Path | str) -> object:
    text = f"""name: bm25-ce
stages:
  - {{id: bm25, type: bm25, engine: bm25s, top_k: 30}}
  - {{id: ce, type: cross_encoder, model: "{model}", top_k: 10, max_words: 50}}
"""
    path = tmp_path / "p.yaml"
    path.write_text(text)
    pipeline, problems = parse_pipeline(load_yaml(path))
    assert not problems, problems
    return pipeline


def test_cross_encoder_orders_by_its_own_scores(tmp_path: Path, local_cross_encoder: Path) -> None:
    from sentence_transformers import CrossEncoder

    task = load_task(load_task_card("popqa-sample")[0], limit=5)
    result = run_pipeline(_pipeline(tmp_path, local_cross_encoder), task, Cache(tmp_path / "c"), Reporter(quiet=True))
    bm25, ce = result.stages
    reference = CrossEncoder(str(local_cross_encoder), device="cpu")
    for q in task.queries:
        first, reranked = bm25.output.get(q.id), ce.output.get(q.id)
        assert sorted(reranked.docids) == sorted(first.docids[:10])  # a permutation of the top 10
        assert reranked.scores == sorted(reranked.scores, reverse=True)
        doc = task.corpus[reranked.docids[0]]
        passage = " ".join(f"{doc.title}: {doc.text}".split()[:50])
        assert reranked.scores[0] == pytest.approx(float(reference.predict([(q.text, passage)])[0]), abs=1e-5)
    # the random head really reorders: not every query keeps BM25's order
    assert any(ce.output.get(q.id).docids != bm25.output.get(q.id).docids[:10] for q in task.queries)


def test_missing_model_is_a_one_line_error(tmp_path: Path) -> None:
    task = load_task(load_task_card("popqa-sample")[0], limit=2)
    with pytest.raises(RagbenchError, match="cannot load cross-encoder") as e:
        run_pipeline(_pipeline(tmp_path, tmp_path / "no-such-model"), task, Cache(tmp_path / "c"), Reporter(quiet=True))
    assert "\n" not in str(e.value)
