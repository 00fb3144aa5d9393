"""What every reranker shares: one input ranking, its top `top_k` reordered, passages as text.

A reranker reads the top `top_k` documents of its input stage, puts them in a new order and
returns exactly those documents (a permutation; nothing added, nothing lost). Output scores
are the new ranks turned into descending numbers (top_k, top_k - 1, ...) unless the method
has real scores (ICR, cross-encoder), so downstream metrics see the new order either way.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ragbench.llm.stage import LLMOptions, UsesLLM
from ragbench.outputs import Rankings
from ragbench.passages import render
from ragbench.stage import Contract, Stage, StageOptions
from ragbench.types import Corpus, Query, Ranking, TaskData


class RerankerOptions(StageOptions):
    top_k: int = Field(20, ge=1, description="how many of the input's top documents are reranked (and returned)")
    fields: tuple[str, ...] = Field(("title", "text"), description="document fields shown to the model, joined by ': ' "
                                    "(listwise and FIRST: as their passage_format lays them out)")
    max_words: int = Field(300, ge=1, description="each passage is cut to its first N whitespace words (RankGPT / ICR)")


class LLMRerankerOptions(RerankerOptions, LLMOptions):
    pass


class Reranker(Stage):
    contract = Contract("reranker", Rankings, consumes=Rankings, inputs=(1, 1), narrows_input=True)
    Options: ClassVar[type[StageOptions]] = RerankerOptions
    options: RerankerOptions

    def prepare(self, task: TaskData) -> None:
        if task.corpus is None:
            raise RuntimeError("rerankers need the corpus text")  # load_task already explained how to get one
        self.corpus: Corpus = task.corpus

    def passage(self, docid: str) -> str:
        """The document's text as the model sees it: chosen fields joined by ': ', cut to max_words (passages.py)."""
        return render(self.corpus.get(docid), "plain", self.options.fields, self.options.max_words)

    def passages(self, docids: list[str]) -> list[str]:
        """`passage` for a query's candidates, fetched from the corpus in one lookup."""
        docs = self.corpus.fetch(docids)
        return [render(docs.get(d), "plain", self.options.fields, self.options.max_words) for d in docids]

    def rerank(self, query: Query, candidates: Ranking) -> Ranking:
        """Reorder one query's candidates (already cut to top_k)."""
        raise NotImplementedError

    def process(self, queries: list[Query], inputs: list[dict[str, Ranking]]) -> dict[str, Ranking]:
        upstream = inputs[0]
        out = {}
        for q in queries:
            cands = (upstream.get(q.id) or Ranking(q.id, [], [])).top(self.options.top_k)
            out[q.id] = self.rerank(q, cands) if len(cands) > 1 else cands
        return out


class LLMReranker(UsesLLM, Reranker):
    """A reranker that asks an LLM backend; the backend is built lazily and shared per stage."""

    Options: ClassVar[type[StageOptions]] = LLMRerankerOptions
    options: LLMRerankerOptions

    def prepare(self, task: TaskData) -> None:
        super().prepare(task)
        self.llm  # noqa: B018 - load the model now, not inside the first batch


def windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """RankGPT's sliding windows [start, end) over n candidates, bottom first, the last one starting at 0."""
    if n <= 1:
        return []
    out, end = [], n
    while True:
        start = max(0, end - window)
        out.append((start, end))
        if start == 0:
            return out
        end -= stride


def by_order(qid: str, docids: list[str]) -> Ranking:
    """A ranking in the given order with descending rank scores (n, n-1, ..., 1)."""
    n = len(docids)
    return Ranking(qid, list(docids), [float(n - i) for i in range(n)])

