"""`type: first`: FIRST, a window ranked by one next-token distribution instead of a generated list.

Same prompt and sliding window as `listwise` with letter identifiers (A, B, ...), the reply
opened with "[": the log-probability of each letter as the next token orders the window
(Reddy et al., FIRST; gangiswag/llm-reranker, rank_llm `--use_logits`). A letter's
log-probability is that of the token whose text right after "[" is exactly the letter (the
likeliest, when several are), as the authors read vLLM's decoded tokens; see
`ragbench.llm.base.label_token_ids` and docs/methods.md, FIRST. The transformers and vllm
backends read the full distribution; servers that return only the top-n log-probabilities
leave some letters out, which keep their original order after the rest.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import field_validator

from ragbench.rerankers.listwise import (
    MAX_LETTERS,
    Identifiers,
    SlidingWindow,
    WindowOptions,
    identifier,
)
from ragbench.stage import StageOptions
from ragbench.types import Query


class FirstOptions(WindowOptions):
    @field_validator("window")
    @classmethod
    def _letters(cls, v: int) -> int:
        if v > MAX_LETTERS:
            raise ValueError(f"FIRST labels passages A-Z, so a window holds at most {MAX_LETTERS} passages")
        return v


def order_by_logprobs(logprobs: dict[str, float], n: int) -> list[int]:
    """Window indices by descending log-probability of their letter; unseen letters last, in order."""
    seen = sorted((i for i in range(n) if identifier(i, "letters") in logprobs),
                  key=lambda i: (-logprobs[identifier(i, "letters")], i))
    return seen + [i for i in range(n) if i not in set(seen)]


class First(SlidingWindow):
    """Sliding-window listwise reranking from the first generated token's log-probabilities."""

    Options: ClassVar[type[StageOptions]] = FirstOptions
    options: FirstOptions
    reply_prefix: ClassVar[str] = "["
    identifiers: Identifiers = "letters"
    #: 2: each letter's log-probability from the bare-letter token(s), rank_llm's passage layout and prompt budget
    version = "2"

    def rank_windows(self, queries: list[Query], docs: list[list[str]]) -> list[list[int]]:
        n = max(map(len, docs))
        chats = [self.window_chat(q, d, 1) for q, d in zip(queries, docs, strict=True)]
        letters = [identifier(i, "letters") for i in range(n)]
        # one candidate list for the wave; a shorter window ignores the letters it does not use
        logprobs = self.llm.next_token_logprobs(chats, letters, prefix=self.reply_prefix)
        return [order_by_logprobs(lp, len(d)) for lp, d in zip(logprobs, docs, strict=True)]
