"""What a reader sends: passages from the corpus within a token budget, laid into a template or PopQA's prompt.

`type: reader` and the hard-negative experiment both build their prompts here (a `ReaderPrompt`
each, from the options below), so the same context sends the same request, and hits the same
LLM cache entry, whichever of them asks. What differs between them stays with each stage: the
reader picks its context from a ranking and may answer closed-book or in LongRAG's two steps;
the experiment builds contexts of gold and negative passages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from ragbench.llm.base import LLM, Chat, plain_prompt
from ragbench.llm.stage import LLMOptions
from ragbench.passages import render
from ragbench.readers.answer_rules import AnswerRule
from ragbench.readers.fewshot import QA_TEMPLATE, DemoSampler, PopQAPromptOptions, popqa_prompt
from ragbench.stage import StageOptions
from ragbench.types import Query, Ranking, TaskData

#: bump when the same options send other prompts or cut replies otherwise: the reader's and the
#: hard-negative experiment's versions follow it. 2: answers cut by `answer_rule` (PopQA's first
#: line, LongRAG's first 'answer:'), LongRAG's extraction prompt; PopQA's prompt as plain text
PROMPT_VERSION = "2"

RAG_PROMPT = ("Answer the question based on the given passages. Only give me the answer and do not output any other "
              "words.\n\nThe following are given passages.\n{context}\n\nQuestion: {question}\nAnswer:")
CLOSED_BOOK_PROMPT = ("Answer the question. Only give me the answer and do not output any other words.\n\n"
                      "Question: {question}\nAnswer:")


class PromptOptions(LLMOptions):
    """The options a reader's prompt and answer are made of, shared by `type: reader` and `type: hard_negatives`."""

    fields: tuple[str, ...] = Field(("title", "text"), description="document fields shown: the title on its own line, "
                                                                   "then the text")
    context_tokens: int | None = Field(None, ge=1, description="token budget for the passages; default: the model's "
                                                               "context minus the prompt and the answer")
    max_new_tokens: int = Field(32, ge=1, description="tokens for the (short) answer")
    prompt: str | None = Field(None, description="user-turn template with {context} and {question} (a closed-book "
                                                 "reader's: {question}); default: LongRAG's NQ-style prompt")
    popqa: PopQAPromptOptions | None = Field(None, description="Mallen et al.'s prompt: 'Q: ... A:' after few-shot "
                                                               "demos {shots, seed, relation_field, answer_field, "
                                                               "other_relations}")
    answer_rule: AnswerRule | None = Field(None, description="popqa: first line (Mallen et al.) | longrag: after the "
                                                             "first 'answer:' (LongRAG) | lenient; default: popqa "
                                                             "(longrag for a two-step reader)")


def draws_demos(options: StageOptions) -> bool:
    """Whether the prompts hold PopQA demonstrations, drawn from the whole split (so the pool is in the cache key)."""
    return isinstance(options, PromptOptions) and options.popqa is not None and options.popqa.shots > 0


def both_ends(items: list[Any]) -> list[Any]:
    """Jin et al.'s reordering: odd ranks from the front, even ranks from the back (d1 d3 d5 ... d6 d4 d2)."""
    return items[0::2] + items[1::2][::-1]


class ReaderPrompt:
    """One stage's prompts: passages in the reader's layout, the token budget they share, the first chat.

    `template` is the user turn for a read context ({context}, {question}), `closed_template` the one
    for a question answered without one, `reply_tokens` what the first reply may take from the context.
    """

    def __init__(self, options: PromptOptions, llm: Callable[[], LLM], task: TaskData, where: str, *,
                 template: str, reply_tokens: int, closed_template: str = CLOSED_BOOK_PROMPT):
        self.options = options
        self._llm = llm  # the stage's backend, built on first use (prompts alone need no model)
        self.corpus = task.corpus
        self.template, self.closed_template, self.reply_tokens = template, closed_template, reply_tokens
        popqa = options.popqa
        self.demo_sampler = DemoSampler(task.pool or task.queries, popqa, where) if popqa and popqa.shots else None
        self._budget: int | None = None

    def passage(self, docid: str) -> str:
        """A document as the reader shows it: 'Title: ...' on its own line, then the other fields (passages.py)."""
        return self.passages([docid])[0]

    def passages(self, docids: list[str]) -> list[str]:
        """`passage` for several documents, fetched from the corpus in one lookup."""
        docs = self.corpus.fetch(docids) if self.corpus is not None else {}
        return [render(docs.get(d), "titled", self.options.fields) for d in docids]

    def budget(self) -> int:
        """Tokens the passages may take (the same for every query: computed once)."""
        if self._budget is None:
            self._budget = self._compute_budget()
        return self._budget

    def _compute_budget(self) -> int:
        o = self.options
        if o.context_tokens:
            return o.context_tokens
        llm = self._llm()
        template = QA_TEMPLATE if o.popqa is not None else self.template
        overhead = llm.prompt_tokens([{"role": "user", "content": template}]) + 64  # + the question
        if o.popqa is not None:  # + the demonstrations, a generous 64 tokens each
            overhead += 64 * o.popqa.shots
        return max(1, llm.context_length - overhead - self.reply_tokens)

    def select(self, ranking: Ranking, top_k: int, order: str) -> list[tuple[str, str]]:
        """(doc id, text) of the top `top_k` documents that fit the budget, the last one cut to fit, in prompt
        order: `score` best first, `reverse` best last, `both_ends` Jin et al.'s reordering."""
        llm, budget, chosen = self._llm(), self.budget(), []
        docids = ranking.docids[:top_k]
        for docid, text in zip(docids, self.passages(docids), strict=True):
            n = llm.count_tokens(text) + 2  # + the blank line between passages
            if n > budget:
                if budget > 32:  # keep a cut passage only if something useful is left
                    words = text.split()
                    keep = max(1, int(len(words) * (budget - 2) / n))
                    while keep > 1 and llm.count_tokens(" ".join(words[:keep])) + 2 > budget:
                        keep = int(keep * 0.9)
                    chosen.append((docid, " ".join(words[:keep])))
                break
            chosen.append((docid, text))
            budget -= n
        if order == "reverse":
            return chosen[::-1]
        if order == "both_ends":
            return both_ends(chosen)
        return chosen

    def chat(self, query: Query, passages: list[tuple[str, str]], retrieved: bool) -> Chat:
        """The first (often only) request: the template, or PopQA's prompt, with the passages (if read) and question."""
        o = self.options
        if o.popqa is not None:
            demos = self.demo_sampler.demos(query) if self.demo_sampler is not None else []
            paragraph = "\n\n".join(text for _, text in passages) if retrieved else None
            text = popqa_prompt(query.text, demos, paragraph)
            return [{"role": "user", "content": text}] if o.popqa.chat else plain_prompt(text)
        if not retrieved:
            content = self.closed_template.format(question=query.text)
        else:
            context = "\n\n".join(text for _, text in passages)
            content = self.template.format(context=context, question=query.text)
        return [{"role": "user", "content": content}]
