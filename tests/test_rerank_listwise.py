"""Listwise sliding-window reranking (RankZephyr prompt) and FIRST.

The parser is property-tested (any text gives a permutation). The window arithmetic is checked
with a scripted test double whose ranking is known in advance. The model-facing parts (prompt
shrinking, generation, single-token log-probabilities, the request cache, the CLI) run the
bundled SmolLM2 on real PopQA-sample queries with small windows, so they stay fast on a CPU.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ragbench.cache import Cache
from ragbench.config import parse_pipeline
from ragbench.errors import RagbenchError
from ragbench.llm.base import LLM, Chat, Done, Generation, Request
from ragbench.progress import Reporter
from ragbench.rerankers.first import First, FirstOptions, order_by_logprobs
from ragbench.rerankers.listwise import (
    Listwise,
    ListwiseOptions,
    build_chat,
    parse_permutation,
)
from ragbench.rerankers.listwise import rank_llm_windows as windows
from ragbench.stage import StageEnv
from ragbench.types import Corpus, Document, Query, Ranking, TaskData
from ragbench.yamlio import load_yaml

REPO = Path(__file__).resolve().parent.parent
EMBEDDED = REPO / "ragbench" / "data" / "popqa_sample"


# ----------------------------------------------------------------------------- the parser
def _is_permutation(order: list[int], n: int) -> bool:
    return sorted(order) == list(range(n))


pieces = st.one_of(
    st.sampled_from(["[", "]", " > ", ">", " ", ",", "\n", "</think>", "[[", "]]"]),
    st.integers(-3, 40).map(str),
    st.sampled_from([*"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "a", "z", "AB", "Passage"]),
)
replies = st.one_of(st.text(), st.lists(pieces, max_size=60).map("".join))


@settings(max_examples=400, deadline=None)
@given(text=replies, n=st.integers(1, 30), identifiers=st.sampled_from(["numeric", "letters"]))
def test_any_reply_parses_to_a_permutation(text: str, n: int, identifiers: Any) -> None:
    assert _is_permutation(parse_permutation(text, n, identifiers), n)


@pytest.mark.parametrize(("text", "n", "identifiers", "expected"), [
    ("[2] > [1]", 2, "numeric", [1, 0]),
    ("[3] > [1] > [3] > [2]", 3, "numeric", [2, 0, 1]),  # duplicate dropped
    ("[9] > [2] > [0]", 3, "numeric", [1, 0, 2]),  # out of range dropped, missing appended in order
    ("[4] > [2]", 5, "numeric", [3, 1, 0, 2, 4]),
    ("The ranking is 3, 1, 2.", 3, "numeric", [2, 0, 1]),  # no brackets: bare numbers, as rank_llm reads digits
    ("[2] > [1] because passage 3 is off-topic", 3, "numeric", [1, 0, 2]),  # brackets win over prose
    ("I cannot rank these passages.", 4, "numeric", [0, 1, 2, 3]),
    ("", 3, "letters", [0, 1, 2]),
    ("[C] > [A] > [B]", 3, "letters", [2, 0, 1]),
    ("C] > [A] > [Z] > [c]", 3, "letters", [0, 1, 2]),  # only [A] is bracketed and in range
    ("C > A > B", 3, "letters", [2, 0, 1]),  # lone capitals when nothing is bracketed
    ("<think>[1] > [2]</think>[B] > [A]", 2, "letters", [1, 0]),
])
def test_parser_cases(text: str, n: int, identifiers: Any, expected: list[int]) -> None:
    assert parse_permutation(text, n, identifiers) == expected


def test_first_orders_by_logprob_and_appends_unseen_letters() -> None:
    assert order_by_logprobs({"B": -0.1, "A": -2.0, "D": -1.0}, 5) == [1, 3, 0, 2, 4]
    assert order_by_logprobs({"A": -1.0, "B": -1.0, "Z": 0.0}, 2) == [0, 1]  # ties by position; Z is out of the window
    assert order_by_logprobs({}, 3) == [0, 1, 2]


def test_windows_run_bottom_up_and_end_at_the_top() -> None:
    assert windows(100, 20, 10) == [(80 - 10 * i, 100 - 10 * i) for i in range(9)]
    assert windows(10, 4, 2) == [(6, 10), (4, 8), (2, 6), (0, 4)]
    assert windows(11, 4, 2) == [(7, 11), (5, 9), (3, 7), (1, 5), (0, 3)]
    assert windows(5, 20, 10) == [(0, 5)]
    assert windows(1, 20, 10) == [] and windows(0, 20, 10) == []


def test_prompt_is_rank_zephyrs_and_hides_ids_inside_passages() -> None:
    chat = build_chat("who is [1]?", ["see [2] and [b]", "plain"], "numeric")
    assert chat[0]["content"].startswith("You are RankLLM")
    user = chat[1]["content"]
    assert user.startswith("I will provide you with 2 passages, each indicated by a numerical identifier []. "
                           "Rank the passages based on their relevance to the search query: who is (1)?.\n"
                           "[1] see (2) and [b]\n")
    assert "[1] see (2) and [b]\n[2] plain\nSearch Query: who is (1)?.\nRank the 2 passages above" in user
    assert "e.g., [2] > [1], Answer concisely" in user
    letters = build_chat("who?", ["x", "y"], "letters")[1]["content"]
    assert "an alphabetical identifier" in letters and "[A] x\n[B] y\n" in letters and "e.g., [B] > [A]" in letters


@pytest.mark.parametrize(("stage", "options", "message"), [
    ("first", "window: 30",
     "stages[1].window: Value error, FIRST labels passages A-Z, so a window holds at most 26 passages (got 30)"),
    ("listwise", "identifiers: letters, window: 27",
     "stages[1]: Value error, identifiers 'letters' (A-Z) label at most 26 passages, but window is 27"),
    ("listwise", "window: 5, stride: 6", "stages[1]: Value error, stride 6 is larger than window 5"),
    ("first", "llm: {backend: llama}",
     "stages[1].llm.backend: unknown backend 'llama' (expected one of: 'transformers', 'vllm', 'openai_server')"),
    ("first", "llm: {backend: transformers, base_url: http://x/v1}",
     "stages[1].llm.base_url: unknown field for backend 'transformers'"),
    ("listwise", "llm: {backend: openai_server}", "stages[1].llm.base_url: required field is missing"),
])
def test_misconfigurations_are_located(tmp_path: Path, stage: str, options: str, message: str) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(f"name: x\nstages:\n  - {{type: bm25, top_k: 100}}\n  - {{type: {stage}, {options}}}\n")
    problems = [str(x) for x in parse_pipeline(load_yaml(p))[1]]
    assert len(problems) == 1 and problems[0].startswith(f"{p}:4: {message}"), problems


# ----------------------------------------------------------------------------- window bookkeeping
class ScriptedLLM(LLM):
    """A test double for the window bookkeeping only, not a stand-in for a model.

    Each passage carries its document id and a hidden relevance (`d7 rel=3`); the double
    "ranks" a window by that number, so the expected final order is known in advance. It
    records every window it was shown and how many requests each call carried (a wave).
    """

    backend = "scripted"

    def __init__(self, context: int = 1_000_000, logprob_top_n: int | None = None):
        super().__init__(None)
        self.context = context
        self.top_n = logprob_top_n
        self.seen: list[list[str]] = []
        self.waves: list[int] = []

    @property
    def model_name(self) -> str:
        return "scripted"

    def identity(self) -> dict[str, Any]:
        return {"backend": self.backend}

    @property
    def context_length(self) -> int:
        return self.context

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def render(self, chat: Chat, prefix: str = "") -> str:
        return "\n".join(m["content"] for m in chat) + prefix

    def _window(self, r: Request) -> list[tuple[str, str, int]]:
        rows = re.findall(r"^\[(\w+)\] (\S+) rel=(\d+)", r.chat[-1]["content"], re.M)
        self.seen.append([d for _, d, _ in rows])
        return [(label, d, int(rel)) for label, d, rel in rows]

    def _chat(self, requests: list[Request], done: Done) -> None:
        self.waves.append(len(requests))
        for i, r in enumerate(requests):
            ranked = sorted(self._window(r), key=lambda x: -x[2])
            done(i, Generation(" > ".join(f"[{label}]" for label, _, _ in ranked)))

    def _logprobs(self, requests: list[Request], done: Done) -> None:
        self.waves.append(len(requests))
        for i, r in enumerate(requests):
            ranked = sorted(self._window(r), key=lambda x: -x[2])[: self.top_n]
            done(i, {label: -float(k) for k, (label, _, _) in enumerate(ranked) if label in r.candidates})


def _scripted_stage(cls: type, options: Any, rels: dict[str, int], llm: ScriptedLLM) -> Any:
    docs = {d: Document(d, f"{d} rel={r} " + "filler " * 20) for d, r in rels.items()}
    stage = cls(options, StageEnv(Cache("/nonexistent"), Reporter(quiet=True), "rerank"))
    stage.corpus = Corpus(docs, "fp")
    stage._llm = llm
    return stage


def _candidates(qid: str, n: int) -> Ranking:
    return Ranking(qid, [f"d{i}" for i in range(n)], [float(n - i) for i in range(n)])


@pytest.mark.parametrize("cls", [Listwise, First])
def test_a_relevant_document_at_the_bottom_bubbles_to_the_top(cls: type) -> None:
    rels = {f"d{i}": 10 - i for i in range(10)} | {"d9": 100}
    opts = (ListwiseOptions if cls is Listwise else FirstOptions)(top_k=10, window=4, stride=2)
    llm = ScriptedLLM()
    stage = _scripted_stage(cls, opts, rels, llm)
    out = stage.process([Query("q", "x")], [{"q": _candidates("q", 10)}])["q"]
    assert llm.seen == [["d6", "d7", "d8", "d9"], ["d4", "d5", "d9", "d6"], ["d2", "d3", "d9", "d4"],
                        ["d0", "d1", "d9", "d2"]]
    assert out.docids == ["d9", *[f"d{i}" for i in range(9)]]
    assert out.scores == sorted(out.scores, reverse=True)


def test_one_llm_call_per_wave_across_the_queries_of_a_batch() -> None:
    rels = {f"d{i}": 100 - i for i in range(10)}
    llm = ScriptedLLM()
    stage = _scripted_stage(Listwise, ListwiseOptions(top_k=10, window=4, stride=2, passes=2), rels, llm)
    queries = [Query("long", "x"), Query("short", "y"), Query("single", "z")]
    out = stage.process(queries, [{"long": _candidates("long", 10), "short": _candidates("short", 5),
                                   "single": _candidates("single", 1)}])
    # two passes: long has 8 windows, short 4 (its queries are independent of long's), single none
    assert llm.waves == [2, 2, 2, 2, 1, 1, 1, 1]
    assert stage.windows_done == 12
    assert out["long"].docids == [f"d{i}" for i in range(10)]  # already in the scripted order
    assert out["single"] == _candidates("single", 1)


def test_first_with_a_top_n_server_keeps_unseen_letters_in_place() -> None:
    # the double reports only its top 2 letters, like a server capped at top-n log-probabilities
    rels = {"d0": 1, "d1": 2, "d2": 3, "d3": 4}
    llm = ScriptedLLM(logprob_top_n=2)
    stage = _scripted_stage(First, FirstOptions(top_k=4, window=4), rels, llm)
    out = stage.process([Query("q", "x")], [{"q": _candidates("q", 4)}])["q"]
    assert out.docids == ["d3", "d2", "d0", "d1"]


def test_overflowing_windows_shrink_passages_until_they_fit() -> None:
    rels = {f"d{i}": i for i in range(4)}
    llm = ScriptedLLM(context=200)  # the double counts words as tokens
    stage = _scripted_stage(Listwise, ListwiseOptions(top_k=4, window=4, max_new_tokens=20), rels, llm)
    chat = stage.window_chat(Query("q", "x"), list(rels), 20)
    full = build_chat("x", [stage.passage(d) for d in rels], "numeric")
    assert llm.prompt_tokens(chat) <= 180 < llm.prompt_tokens(full)
    assert all(f"d{i} rel={i}" in chat[1]["content"] for i in range(4))  # the passages' first words survive
    llm.context = 100  # less than the instructions alone
    with pytest.raises(RagbenchError, match="does not fit the context length 100 even at one word per passage"):
        stage.window_chat(Query("q", "x"), list(rels), 20)


# ----------------------------------------------------------------------------- the bundled model
def _need_smollm2() -> None:
    pytest.importorskip("transformers")
    from ragbench.llm.loading import DEFAULT_MODEL
    from ragbench.models import resolve

    try:
        resolve(DEFAULT_MODEL)
    except RagbenchError as e:
        pytest.skip(f"the bundled SmolLM2 is not installed: {e}")


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module; an already-converted SmolLM2 is linked in rather than converted again."""
    from ragbench.llm import loading

    _need_smollm2()
    root = tmp_path_factory.mktemp("listwise-cache")
    models = loading.models_root()
    if models.is_dir() and any(models.iterdir()):
        (root / "models").symlink_to(models, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def popqa(cache_root: Path) -> tuple[TaskData, dict[str, Ranking]]:
    """Two PopQA-sample questions and their BM25 top 10 (the CPU prefill of a window is seconds)."""
    from ragbench.pipeline import run_pipeline
    from ragbench.tasks import load_task
    from ragbench.tasks.card import load_task_card

    card, _ = load_task_card("popqa-sample")
    task = load_task(card, data_dir=EMBEDDED, limit=2)
    p = cache_root / "bm25.yaml"
    p.write_text("name: bm25\nstages:\n  - {type: bm25, engine: bm25s, top_k: 10}\n")
    pipeline, problems = parse_pipeline(load_yaml(p))
    assert pipeline is not None, problems
    return task, run_pipeline(pipeline, task, Cache(cache_root), Reporter(quiet=True)).final.output.records


def _real_stage(cls: type, cache_root: Path, task: TaskData, **options: Any) -> Any:
    options_type = ListwiseOptions if cls is Listwise else FirstOptions
    opts = options_type(**{"top_k": 10, "window": 10, "max_words": 20, **options})
    stage = cls(opts, StageEnv(Cache(cache_root), Reporter(quiet=True), cls.__name__.lower()))
    stage.prepare(task)
    return stage


def test_listwise_generation_returns_a_permutation(cache_root: Path, popqa: Any) -> None:
    task, bm25 = popqa
    stage = _real_stage(Listwise, cache_root, task, max_new_tokens=12)  # SmolLM2 tends to copy passages: cap it
    out = stage.process(task.queries, [bm25])
    for q in task.queries:
        assert sorted(out[q.id].docids) == sorted(bm25[q.id].docids) and len(out[q.id]) == 10
    assert stage.llm.stats.requests + stage.llm.stats.cached == 2  # one window of 10 per query


def test_first_sorts_the_backends_logprobs_and_is_cached(cache_root: Path, popqa: Any) -> None:
    import torch

    task, bm25 = popqa
    stage = _real_stage(First, cache_root, task)
    before = stage.llm.stats.requests
    out = stage.process(task.queries, [bm25])
    assert stage.llm.stats.requests - before == 2
    letters = [chr(ord("A") + i) for i in range(10)]
    llm = stage.llm
    for q in task.queries:
        assert sorted(out[q.id].docids) == sorted(bm25[q.id].docids)
        # the window's log-probabilities, from one unbatched forward pass
        chat = stage.window_chat(q, bm25[q.id].docids, 1)
        with torch.inference_mode():
            logits = llm.model(torch.tensor([llm.encode(chat, "[")])).logits[0, -1]
        full = torch.log_softmax(logits.float(), -1)
        lp = [max(float(full[t]) for t in tids) for tids in llm.candidate_ids(tuple(letters), "[")]
        by_doc = dict(zip(bm25[q.id].docids, lp, strict=True))
        got = [by_doc[d] for d in out[q.id].docids]
        assert all(a >= b - 1e-4 for a, b in zip(got, got[1:], strict=False)), got  # descending, up to batching noise

    again = _real_stage(First, cache_root, task)
    cached_before = again.llm.stats.cached
    asked_before = again.llm.stats.requests
    assert again.process(task.queries, [bm25]) == out
    assert again.llm.stats.cached - cached_before == 2 and again.llm.stats.requests == asked_before


def test_a_tiny_context_forces_shorter_passages_that_fit(cache_root: Path, popqa: Any) -> None:
    from ragbench.llm.config import TransformersLLMConfig

    task, bm25 = popqa
    stage = _real_stage(First, cache_root, task, max_words=300, llm=TransformersLLMConfig(max_model_len=700))
    q = task.queries[0]
    docids = bm25[q.id].docids
    full = build_chat(q.text, [stage.passage(d) for d in docids], "letters")
    assert stage.llm.prompt_tokens(full, "[") > 700
    chat = stage.window_chat(q, docids, 1)
    assert stage.llm.prompt_tokens(chat, "[") + 1 <= 700
    out = stage.process([q], [bm25])[q.id]
    assert sorted(out.docids) == sorted(docids)
    tiny = _real_stage(Listwise, cache_root, task, llm=TransformersLLMConfig(max_model_len=100))
    with pytest.raises(RagbenchError, match="even at one word per passage"):
        tiny.window_chat(q, docids, tiny.max_new_tokens(10))


def _run_cli(cache_root: Path, pipeline: Path, out: Path, limit: int) -> dict[str, Any]:
    from ragbench.cli import main

    args = ["run", str(pipeline), "--task", "popqa-sample", "--data", str(EMBEDDED), "--limit", str(limit),
            "--cache-dir", str(cache_root), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = json.loads((out / "metrics.json").read_text())
    assert written["n_queries"] == limit
    assert set(written["metrics"]) == set(yaml.safe_load(pipeline.read_text())["metrics"])
    return written


def test_cli_runs_the_shipped_pipeline_shrunk(cache_root: Path, tmp_path: Path) -> None:
    """bm25-first.yaml with 5-passage windows of 30-word passages (the shipped sizes are the slow test)."""
    name = "bm25-first"
    spec = yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())
    spec["stages"][1].update(top_k=5, window=5, stride=2, max_words=30)
    spec["metrics"] = ["nDCG@5", "R@5"]
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    _run_cli(cache_root, p, tmp_path / "run", 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bm25-first", "bm25-listwise"])
def test_cli_runs_the_shipped_pipeline(cache_root: Path, tmp_path: Path, name: str) -> None:
    _run_cli(cache_root, REPO / "pipelines" / f"{name}.yaml", tmp_path / "run", 3)
