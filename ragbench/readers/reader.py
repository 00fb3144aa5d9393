"""`type: reader`: an LLM answers each question from the top passages (or units) of its input.

The prompt holds the top `top_k` documents (title, then text) that fit a token budget, in
the order `order` says, then the question:
- `score`: best first; `reverse`: best last, next to the question;
- `both_ends`: Jin et al.'s retrieval reordering (docs/methods.md, "Reader"): d1, d3, d5, ..., d6, d4, d2,
  the highest-scored passages at both ends of the context, where long-context LLMs read best.

Answers come in one step (the reply is the answer) or LongRAG's two (a long answer from the
context, then a short answer extracted from it with few-shot examples). `closed_book: true`
reads nothing (PopQA's no-retrieval baseline, FRAMES' 0.408 setting). `adaptive` retrieves
only for queries whose popularity field (PopQA `s_pop`) is below a threshold and answers the
rest closed-book, as Mallen et al.'s adaptive retrieval does. `popqa:` replaces the prompt with
Mallen et al.'s own ("Q: ... A:" with 15 demonstrations from other relations; readers/fewshot.py).

The reply becomes the answer by `answer_rule` (readers/answer_rules.py): by default LongRAG's
rule for the two-step reader and PopQA's (first line) for the one-step reader.

Every prompt and raw reply is kept in the Answer, so the run folder's answers.jsonl shows
exactly what the model read and wrote.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ragbench.errors import RagbenchError
from ragbench.llm.base import Chat, Sampling
from ragbench.llm.stage import UsesLLM
from ragbench.outputs import Answers, Rankings
from ragbench.readers.answer_rules import AnswerRule, clean_answer, extract_answer
from ragbench.readers.prompt import (
    CLOSED_BOOK_PROMPT,
    PROMPT_VERSION,
    RAG_PROMPT,
    PromptOptions,
    ReaderPrompt,
    draws_demos,
)
from ragbench.stage import Contract, Stage, StageOptions
from ragbench.types import Answer, Query, Ranking, TaskData

LONG_PROMPT = ("Answer the question based on the given passages. Use the exact words of the passages where you can, "
               "and answer in one or two sentences.\n\nThe following are given passages.\n{context}\n\n"
               "Question: {question}\nAnswer:")
# LongRAG's extraction prompt (utils/gpt_inference.py, extract_answer), its layout kept: no space after
# "redundant words.", "Here are some examples: " before the demos, a space after the last "Short Answer:"
EXTRACT_PROMPT = ("As an AI assistant, you have been provided with a question and its long answer. Your task is to "
                  "derive a very concise short answer, extracting a substring from the given long answer. Short answer "
                  "is typically an entity without any other redundant words.It's important to ensure that the output "
                  "short answer remains as simple as possible.\n\n{examples}Question: {question}\n"
                  "Long Answer: {long_answer}\nShort Answer: ")


class Example(StageOptions):
    question: str
    long_answer: str
    short_answer: str


#: written for ragbench (LongRAG's own 8 demos live in the Hub dataset TIGER-Lab/LongRAG,
#: config answer_extract_example, which cannot be fetched offline; set `examples:` to use them)
DEFAULT_EXAMPLES = (
    Example(question="what is the capital of france",
            long_answer="The passages say that Paris is the capital and largest city of France.", short_answer="Paris"),
    Example(question="who wrote the novel emma",
            long_answer="Emma is a novel written by the English author Jane Austen, published in 1815.",
            short_answer="Jane Austen"),
    Example(question="What is Marie Curie's occupation?",
            long_answer=("Marie Curie was a Polish and naturalised-French physicist and chemist who conducted "
                         "pioneering research on radioactivity."),
            short_answer="physicist"),
    Example(question="In what city was Alan Turing born?",
            long_answer="According to the passage, Alan Turing was born in Maida Vale, London, England.",
            short_answer="London"),
)


class AdaptiveOptions(StageOptions):
    field: str = Field("s_pop", description="query field holding popularity (PopQA: s_pop, monthly page views)")
    threshold: float = Field(description="retrieve only when the field is below this; answer closed-book otherwise")


class ReaderOptions(PromptOptions):
    top_k: int = Field(5, ge=1, description="documents (or units) from the input put in the prompt, at most")
    closed_book: bool = Field(False, description="read no context (no-retrieval baseline)")
    order: Literal["score", "reverse", "both_ends"] = Field(
        "score", description="score: best first | reverse: best last | both_ends: d1, d3, ..., d4, d2")
    steps: Literal[1, 2] = Field(1, description="1: the reply is the answer | 2: LongRAG's long answer, then a short "
                                                "answer extracted from it")
    long_max_new_tokens: int = Field(256, ge=1, description="tokens for the long answer (steps: 2)")
    examples: tuple[Example, ...] = Field(DEFAULT_EXAMPLES, description="few-shot demos for the short-answer "
                                                                        "extraction (steps: 2)")
    adaptive: AdaptiveOptions | None = Field(None, description="{field, threshold}: retrieve only for less popular "
                                                               "subjects")

    @model_validator(mode="after")
    def _popqa_is_one_step(self) -> ReaderOptions:
        if self.popqa is not None and self.steps != 1:
            raise ValueError("popqa: Mallen et al.'s prompt is answered in one step; set steps: 1")
        return self


class Reader(UsesLLM, Stage):
    contract = Contract("reader", Answers, consumes=Rankings, inputs=(0, 1))
    version = PROMPT_VERSION  # its prompts and answer rules (readers/prompt.py)
    Options = ReaderOptions
    options: ReaderOptions

    @classmethod
    def reads_query_pool(cls, options: StageOptions) -> bool:
        return draws_demos(options)

    def prepare(self, task: TaskData) -> None:
        self.prepare_prompts(task)
        self.llm  # noqa: B018 - load the model now, not inside the first batch

    def prepare_prompts(self, task: TaskData) -> None:
        """What the prompts take from the task (its corpus; PopQA's demonstration pool: its questions); no model."""
        o = self.options
        self.prompts = ReaderPrompt(o, lambda: self.llm, task, f"stage {self.env.stage_id}",
                                    template=o.prompt or (LONG_PROMPT if o.steps == 2 else RAG_PROMPT),
                                    closed_template=o.prompt if o.prompt and o.closed_book else CLOSED_BOOK_PROMPT,
                                    reply_tokens=o.long_max_new_tokens if o.steps == 2 else o.max_new_tokens)

    @property
    def rule(self) -> AnswerRule:
        """The answer rule: the option, else the authors' rule of the reader's method."""
        return self.options.answer_rule or ("longrag" if self.options.steps == 2 else "popqa")

    # -- prompts (readers/prompt.py) -------------------------------------------------------------
    def passage(self, docid: str) -> str:
        return self.prompts.passage(docid)

    def select(self, ranking: Ranking) -> list[tuple[str, str]]:
        """(doc id, text) of the top `top_k` documents that fit the budget, in the order `order` says."""
        return self.prompts.select(ranking, self.options.top_k, self.options.order)

    def reads_context(self, query: Query) -> bool:
        o = self.options
        if o.closed_book:
            return False
        if o.adaptive is not None:
            value = query.extra.get(o.adaptive.field)
            if value is None:
                raise RagbenchError.at(f"stage {self.env.stage_id}", f"query {query.id} has no field "
                                       f"'{o.adaptive.field}' for adaptive retrieval", path="adaptive.field")
            return float(value) < o.adaptive.threshold
        return True

    def first_chat(self, query: Query, passages: list[tuple[str, str]], retrieved: bool) -> Chat:
        return self.prompts.chat(query, passages, retrieved)

    def extract_chat(self, query: Query, long_answer: str) -> Chat:
        """LongRAG's second step; the long answer goes in as the first step's rule left it (LongRAG strips nothing)."""
        examples = "".join(f"Question: {e.question}\nLong Answer: {e.long_answer}\nShort Answer: {e.short_answer}\n\n"
                           for e in self.options.examples)
        examples = "Here are some examples: " + examples if examples else ""
        content = EXTRACT_PROMPT.format(examples=examples, question=query.text, long_answer=long_answer)
        return [{"role": "user", "content": content}]

    # -- the stage -------------------------------------------------------------------------------
    def process(self, queries: list[Query], inputs: list[dict[str, Ranking]]) -> dict[str, Answer]:
        o = self.options
        if not inputs and not o.closed_book:
            raise RagbenchError.at(f"stage {self.env.stage_id}",
                                   "a reader needs an input stage to read from, or closed_book: true")
        answers: dict[str, Answer] = {}
        chats: list[Chat] = []
        for q in queries:
            retrieved = self.reads_context(q)
            ranking = inputs[0].get(q.id) if inputs and retrieved else None
            passages = self.select(ranking) if ranking is not None else []
            chats.append(self.first_chat(q, passages, retrieved))
            answers[q.id] = Answer(q.id, "", [d for d, _ in passages], retrieved=retrieved, prompts=[chats[-1]])
        first_tokens = o.long_max_new_tokens if o.steps == 2 else o.max_new_tokens
        replies = self.llm.chat(chats, Sampling(max_tokens=first_tokens))
        for q, reply in zip(queries, replies, strict=True):
            answers[q.id].outputs.append(reply.text)
            if o.steps == 1:
                answers[q.id].text = extract_answer(reply.text, self.rule)
            elif self.rule == "lenient":
                lenient = "answer:" in reply.text.lower()
                answers[q.id].long_answer = clean_answer(reply.text) if lenient else reply.text.strip()
            else:  # LongRAG post-processes every reply, the long answer included
                answers[q.id].long_answer = extract_answer(reply.text, self.rule)
        if o.steps == 2:
            second = [self.extract_chat(q, answers[q.id].long_answer) for q in queries]
            short = self.llm.chat(second, Sampling(max_tokens=o.max_new_tokens))
            for q, chat, reply in zip(queries, second, short, strict=True):
                answers[q.id].prompts.append(chat)
                answers[q.id].outputs.append(reply.text)
                answers[q.id].text = extract_answer(reply.text, self.rule)
        return answers

