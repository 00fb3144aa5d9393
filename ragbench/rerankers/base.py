"""What every reranker shares: one input ranking, its top `top_k` reordered, passages as text.

A reranker reads the top `top_k` documents of its input stage, puts them in a new order and
returns exactly those documents (a permutation; nothing added, nothing lost). Output scores
are the new ranks turned into descending numbers (top_k, top_k - 1, ...) unless the method
has real scores (ICR, cross-encoder), so downstream metrics see the new order either way.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from ragbench.llm.config import LLMConfig, TransformersLLMConfig, make_llm
from ragbench.stage import Stage, StageOptions
from ragbench.types import Corpus, Query, Ranking, TaskData


class RerankerOptions(StageOptions):
    top_k: int = Field(20, ge=1, description="how many of the input's top documents are reranked (and returned)")
    fields: tuple[str, ...] = Field(("title", "text"), description="document fields shown to the model, joined by ': ' when both")
    max_words: int = Field(300, ge=1, description="each passage is cut to its first N whitespace words (RankGPT / ICR)")


class LLMRerankerOptions(RerankerOptions):
    llm: LLMConfig = Field(default_factory=TransformersLLMConfig, description="the LLM backend and model (see ragbench.llm.config)")

    @field_validator("llm", mode="before")
    @classmethod
    def _default_backend(cls, v: Any) -> Any:
        """`llm: {model: x}` means the transformers backend, the one that needs no setup."""
        return {"backend": "transformers", **v} if isinstance(v, dict) and "backend" not in v else v


class Reranker(Stage):
    kind = "reranker"
    Options: ClassVar[type[StageOptions]] = RerankerOptions
    min_inputs = 1
    max_inputs = 1
    narrows_input = True
    options: RerankerOptions

    def prepare(self, task: TaskData) -> None:
        if task.corpus is None:
            raise RuntimeError("rerankers need the corpus text")  # load_task already explained how to get one
        self.corpus: Corpus = task.corpus

    def passage(self, docid: str) -> str:
        """The document's text as the model sees it: chosen fields, cut to max_words."""
        doc = self.corpus.get(docid)
        if doc is None:
            return ""
        o = self.options
        parts = [doc.title if f == "title" else doc.text if f == "text" else str(doc.extra.get(f, "")) for f in o.fields]
        text = ": ".join(p.strip() for p in parts if p and p.strip())
        return truncate_words(text, o.max_words)

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


class LLMReranker(Reranker):
    """A reranker that asks an LLM backend; the backend is built lazily and shared per stage."""

    Options: ClassVar[type[StageOptions]] = LLMRerankerOptions
    options: LLMRerankerOptions

    def prepare(self, task: TaskData) -> None:
        super().prepare(task)
        self.llm  # noqa: B018 - load the model now, not inside the first batch

    @property
    def llm(self) -> Any:
        if getattr(self, "_llm", None) is None:
            self._llm = make_llm(self.options.llm, self.env.cache)
        return self._llm

    def identity(self) -> dict[str, Any]:
        return {"llm": self.llm.identity()}

    def finish(self) -> None:
        self.env.reporter.log(f"{self.env.stage_id}: {self.llm.stats.summary()}")


def truncate_words(text: str, n: int) -> str:
    words = text.split()
    return " ".join(words[:n])


def by_order(qid: str, docids: list[str]) -> Ranking:
    """A ranking in the given order with descending rank scores (n, n-1, ..., 1)."""
    n = len(docids)
    return Ranking(qid, list(docids), [float(n - i) for i in range(n)])

