"""`type: listwise`: an LLM writes a permutation of a window of passages (RankGPT / RankZephyr).

The prompt is RankZephyr's single turn (castorini/rank_llm `rank_zephyr_template.yaml`; the
letter variant is `rank_zephyr_alpha_template.yaml`, FIRST's identifiers), each passage laid
out as rank_llm writes it (`Title: ... Content: ...`); see docs/methods.md, Listwise sliding
window (RankGPT/RankZephyr). Long lists go through rank_llm's sliding window from the bottom
up ([n-w, n), then `stride` higher, down to start 0), each window's permutation written back
in place, so strong documents bubble up.

Windows of a query are sequential by nature, but the same window position of every query in
a batch is one `llm.chat` call ("wave"): server backends see concurrent requests and the
transformers backend batches them. On a server pool several batches are in flight at once
(`batches_in_flight`), so the waves of several batches overlap in the server's queue.
"""

from __future__ import annotations

import re
import threading
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from typing_extensions import Self

from ragbench.errors import RagbenchError
from ragbench.llm.base import Chat, Sampling
from ragbench.passages import cut_words, render
from ragbench.rerankers.base import LLMReranker, LLMRerankerOptions, by_order
from ragbench.stage import StageOptions
from ragbench.types import Query, Ranking

Identifiers = Literal["numeric", "letters"]
PassageFormat = Literal["rank_llm", "plain"]

SYSTEM = "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query"
PREFIX = ("I will provide you with {num} passages, each indicated by a{kind} identifier []. "
          "Rank the passages based on their relevance to the search query: {query}.\n")
SUFFIX = ("Search Query: {query}.\nRank the {num} passages above based on their relevance to the search query. "
          "All the passages should be included and listed using identifiers, in descending order of relevance. "
          "The output format should be [] > [], e.g., {example}, Answer concisely and directly and only respond "
          "with the ranking results, do not say any word or explain.")
#: a bracketed number in the query or a passage reads like an identifier: rewritten [3] -> (3),
#: letters left alone (rank_llm `_replace_number`, applied to both, in both templates)
_NUMBER_ID = re.compile(r"\[(\d+)\]")
#: the most letters a window can use (A..Z)
MAX_LETTERS = 26
_count_lock = threading.Lock()


def identifier(i: int, identifiers: Identifiers) -> str:
    """The label of the i-th (0-based) passage in a window: 1, 2, ... or A, B, ..."""
    return chr(ord("A") + i) if identifiers == "letters" else str(i + 1)


def parse_permutation(text: str, n: int, identifiers: Identifiers) -> list[int]:
    """A permutation of range(n) from a model's reply, whatever the reply is.

    Bracketed ids are read first; a reply with none falls back to bare numbers (numeric, as
    rank_llm reads any digits) or lone capital letters. Ids are 1-based (A = 1); out-of-range
    and repeated ids are dropped and the missing ones appended in their original order.
    """
    text = text.split("</think>")[-1]  # reasoning models: only the answer counts
    if identifiers == "letters":
        found = re.findall(r"\[\s*([A-Z])\s*\]", text) or re.findall(r"\b([A-Z])\b", text)
        ids = [ord(c) - ord("A") for c in found]
    else:
        found = re.findall(r"\[\s*(\d+)\s*\]", text) or re.findall(r"\d+", text)
        ids = [int(x) - 1 for x in found if len(x) < 6]  # absurdly long digit runs are not ids
    seen: set[int] = set()
    order = []
    for i in ids:
        if 0 <= i < n and i not in seen:
            seen.add(i)
            order.append(i)
    return order + [i for i in range(n) if i not in seen]


def rank_llm_windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """rank_llm's sliding windows [start, end) over n candidates, bottom first (`sliding_windows`).

    The loop runs while end > 0 and the unclamped start + stride != 0, so when n - window is
    not a multiple of stride a last, shorter window re-ranks the top (25, 20, 10: [5, 25),
    [0, 15), [0, 5)). One-passage windows, which cannot reorder anything, are not asked.
    """
    out = []
    end, start = n, n - min(window, n)
    while end > 0 and start + stride != 0:
        if end - max(start, 0) > 1:
            out.append((max(start, 0), end))
        end, start = end - stride, start - stride
    return out


def hide_ids(text: str) -> str:
    """rank_llm's `_replace_number`: `[12]` -> `(12)`, so no text reads like a passage identifier."""
    return _NUMBER_ID.sub(r"(\1)", text)


def build_chat(query: str, passages: list[str], identifiers: Identifiers) -> Chat:
    """RankZephyr's single-turn prompt for one window: prefix, one `[id] passage` line each, suffix."""
    from ftfy import fix_text

    num = len(passages)
    ids = [identifier(i, identifiers) for i in range(num)]
    query = hide_ids(fix_text(query))  # rank_llm runs fix_text over the whole rendered prompt
    body = "".join(f"[{x}] {hide_ids(p)}\n" for x, p in zip(ids, passages, strict=True))
    kind, example = (("n alphabetical", "[B] > [A]") if identifiers == "letters" else (" numerical", "[2] > [1]"))
    user = PREFIX.format(num=num, kind=kind, query=query) + body + SUFFIX.format(num=num, query=query, example=example)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


class WindowOptions(LLMRerankerOptions):
    window: int = Field(20, ge=2, description="passages per LLM call")
    stride: int | None = Field(None, ge=1, description="how far the window moves up each step (<= window); default "
                                                       "window // 2 (10 for 20)")
    passes: int = Field(1, ge=1, description="sliding-window sweeps over the list (rank_llm's num_passes)")
    passage_format: PassageFormat = Field("rank_llm", description="rank_llm: 'Title: {title} Content: {text}' (what "
                                          "RankZephyr and FIRST were trained on) | plain: the fields joined by ': '")
    context_size: int | None = Field(4096, ge=1, description="rank_llm's context_size: a window's prompt may use this "
                                     "many tokens minus those of a full permutation; null: only the model's context "
                                     "length limits it")

    @model_validator(mode="after")
    def _stride_fits(self) -> Self:
        if self.stride is not None and self.stride > self.window:
            raise ValueError(f"stride {self.stride} is larger than window {self.window}: documents between windows "
                             "would never be compared")
        return self

    @property
    def step(self) -> int:
        return self.stride or max(1, self.window // 2)


class ListwiseOptions(WindowOptions):
    identifiers: Identifiers = Field("numeric", description="numeric [1] [2] ... | letters [A] [B] ... (FIRST's, at "
                                                            "most 26)")
    max_new_tokens: int | None = Field(None, ge=1, description="generation budget; default: the tokens of a full "
                                                               "window permutation (rank_llm)")

    @model_validator(mode="after")
    def _letters_fit(self) -> Self:
        if self.identifiers == "letters" and self.window > MAX_LETTERS:
            raise ValueError(f"identifiers 'letters' (A-Z) label at most {MAX_LETTERS} passages, but window is "
                             f"{self.window}")
        return self


class SlidingWindow(LLMReranker):
    """The window bookkeeping shared by listwise generation and FIRST; `rank_windows` differs."""

    options: WindowOptions
    #: text the assistant's reply starts with (FIRST: "[")
    reply_prefix: ClassVar[str] = ""
    identifiers: Identifiers = "numeric"
    windows_done = 0

    def passage(self, docid: str) -> str:
        """The passage as the prompt shows it: rank_llm's layout, or `plain` (the shared 'title: text'); passages.py."""
        o = self.options
        return render(self.corpus.get(docid), o.passage_format, o.fields, o.max_words)

    def permutation_tokens(self, n: int) -> int:
        """Tokens of a full n-passage answer `[1] > [2] > ...` (rank_llm's `num_output_tokens`)."""
        return self.llm.count_tokens(" > ".join(f"[{identifier(i, self.identifiers)}]" for i in range(n)))

    def prompt_budget(self, n: int, max_new: int) -> tuple[int, str]:
        """The most prompt tokens for an n-passage window, and what sets it (for the error message).

        rank_llm: context_size minus a full permutation's tokens; the backend also needs room for
        the `max_new` generated tokens within its context length.
        """
        model = (self.llm.context_length - max_new, f"the context length {self.llm.context_length}")
        size = self.options.context_size
        return model if size is None else min(model, (size - self.permutation_tokens(n), f"context_size {size}"))

    def window_chat(self, query: Query, docids: list[str], max_new: int) -> Chat:
        """The prompt for one window, passages cut further until it fits the prompt budget.

        rank_llm's rule (`create_prompt`): the per-passage word limit starts at max_words and,
        while the prompt is over budget, drops by max(1, overflow_tokens // (4 * w)).
        """
        texts = [self.passage(d) for d in docids]
        longest = max((len(t.split()) for t in texts), default=0)
        budget, what = self.prompt_budget(len(docids), max_new)
        limit = self.options.max_words
        while True:
            chat = build_chat(query.text, [cut_words(t, limit) for t in texts], self.identifiers)
            over = self.llm.prompt_tokens(chat, self.reply_prefix) - budget
            if over <= 0:
                return chat
            if limit <= 1:
                raise RagbenchError.at("llm", f"a window of {len(docids)} passages does not fit {what} "
                                       "even at one word per passage; lower 'window'")
            step = max(1, over // (4 * len(docids)))
            limit = max(1, limit - step)
            if limit >= longest:  # no passage is cut yet, so the prompt and the step stay the same: skip those rounds
                limit = max(1, limit - ((limit - longest) // step + 1) * step)

    def rank_windows(self, queries: list[Query], docs: list[list[str]]) -> list[list[int]]:
        """One wave: a permutation (indices into each window) per (query, window)."""
        raise NotImplementedError

    def rerank_many(self, items: list[tuple[Query, Ranking]]) -> dict[str, Ranking]:
        o = self.options
        orders = {q.id: list(r.docids) for q, r in items}
        plans = {q.id: rank_llm_windows(len(r), o.window, o.step) * o.passes for q, r in items}
        for wave in range(max((len(p) for p in plans.values()), default=0)):
            active = [(q, plans[q.id][wave]) for q, _ in items if wave < len(plans[q.id])]
            docs = [orders[q.id][a:b] for q, (a, b) in active]
            perms = self.rank_windows([q for q, _ in active], docs)
            with _count_lock:  # batches in flight rank windows from several threads
                self.windows_done += len(active)
            for (q, (a, b)), d, perm in zip(active, docs, perms, strict=True):
                orders[q.id][a:b] = [d[i] for i in perm]
        return {q.id: by_order(q.id, orders[q.id]) if len(r) > 1 else r for q, r in items}

    def rerank(self, query: Query, candidates: Ranking) -> Ranking:
        return self.rerank_many([(query, candidates)])[query.id]

    def process(self, queries: list[Query], inputs: list[dict[str, Ranking]]) -> dict[str, Ranking]:
        upstream = inputs[0]
        top = self.options.top_k
        return self.rerank_many([(q, (upstream.get(q.id) or Ranking(q.id, [], [])).top(top)) for q in queries])

    def finish(self) -> None:
        s = self.llm.stats
        per = f", {s.seconds / s.requests:.2f}s per window asked" if s.requests else ""
        self.env.reporter.log(f"{self.env.stage_id}: {self.windows_done} windows, {s.summary()}{per}")


class Listwise(SlidingWindow):
    """Sliding-window listwise reranking by generated permutations."""

    Options: ClassVar[type[StageOptions]] = ListwiseOptions
    options: ListwiseOptions
    #: 2: rank_llm's passage layout, [n] rewritten in the query, its prompt budget and reply length
    version = "2"

    @property
    def identifiers(self) -> Identifiers:  # type: ignore[override]
        return self.options.identifiers

    def max_new_tokens(self, n: int) -> int:
        """Tokens to generate for an n-passage window: a full permutation's, as rank_llm generates."""
        return self.options.max_new_tokens or self.permutation_tokens(n)

    def rank_windows(self, queries: list[Query], docs: list[list[str]]) -> list[list[int]]:
        max_new = self.max_new_tokens(max(map(len, docs)))
        chats = [self.window_chat(q, d, max_new) for q, d in zip(queries, docs, strict=True)]
        replies = self.llm.chat(chats, Sampling(max_tokens=max_new), prefix=self.reply_prefix)
        return [parse_permutation(r.text, len(d), self.identifiers) for r, d in zip(replies, docs, strict=True)]
