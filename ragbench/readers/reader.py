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

from typing import Any, Literal

from pydantic import Field, model_validator

from ragbench.errors import RagbenchError
from ragbench.llm.base import Chat, Sampling, plain_prompt
from ragbench.llm.stage import LLMOptions, UsesLLM
from ragbench.readers.answer_rules import AnswerRule, clean_answer, extract_answer
from ragbench.readers.fewshot import QA_TEMPLATE, DemoSampler, PopQAPromptOptions, popqa_prompt
from ragbench.stage import Stage, StageOptions
from ragbench.types import Answer, Corpus, Query, Ranking, TaskData

RAG_PROMPT = ("Answer the question based on the given passages. Only give me the answer and do not output any other words."
              "\n\nThe following are given passages.\n{context}\n\nQuestion: {question}\nAnswer:")
CLOSED_BOOK_PROMPT = "Answer the question. Only give me the answer and do not output any other words.\n\nQuestion: {question}\nAnswer:"
LONG_PROMPT = ("Answer the question based on the given passages. Use the exact words of the passages where you can, "
               "and answer in one or two sentences.\n\nThe following are given passages.\n{context}\n\nQuestion: {question}\nAnswer:")
# LongRAG's extraction prompt (utils/gpt_inference.py, extract_answer), its layout kept: no space after
# "redundant words.", "Here are some examples: " before the demos, a space after the last "Short Answer:"
EXTRACT_PROMPT = ("As an AI assistant, you have been provided with a question and its long answer. Your task is to derive a "
                  "very concise short answer, extracting a substring from the given long answer. Short answer is typically "
                  "an entity without any other redundant words.It's important to ensure that the output short answer "
                  "remains as simple as possible.\n\n{examples}Question: {question}\nLong Answer: {long_answer}\nShort Answer: ")


class Example(StageOptions):
    question: str
    long_answer: str
    short_answer: str


#: written for ragbench (LongRAG's own 8 demos live in the Hub dataset TIGER-Lab/LongRAG,
#: config answer_extract_example, which cannot be fetched offline; set `examples:` to use them)
DEFAULT_EXAMPLES = (
    Example(question="what is the capital of france", long_answer="The passages say that Paris is the capital and largest city of France.", short_answer="Paris"),
    Example(question="who wrote the novel emma", long_answer="Emma is a novel written by the English author Jane Austen, published in 1815.", short_answer="Jane Austen"),
    Example(question="What is Marie Curie's occupation?", long_answer="Marie Curie was a Polish and naturalised-French physicist and chemist who conducted pioneering research on radioactivity.", short_answer="physicist"),
    Example(question="In what city was Alan Turing born?", long_answer="According to the passage, Alan Turing was born in Maida Vale, London, England.", short_answer="London"),
)


class AdaptiveOptions(StageOptions):
    field: str = Field("s_pop", description="query field holding popularity (PopQA: s_pop, monthly page views)")
    threshold: float = Field(description="retrieve only when the field is below this; answer closed-book otherwise")


class ReaderOptions(LLMOptions):
    top_k: int = Field(5, ge=1, description="documents (or units) from the input put in the prompt, at most")
    closed_book: bool = Field(False, description="read no context (no-retrieval baseline)")
    order: Literal["score", "reverse", "both_ends"] = Field("score", description="score: best first | reverse: best last | both_ends: d1, d3, ..., d4, d2")
    fields: tuple[str, ...] = Field(("title", "text"), description="document fields shown: the title on its own line, then the text")
    context_tokens: int | None = Field(None, ge=1, description="token budget for the passages; default: the model's context minus the prompt and the answer")
    steps: Literal[1, 2] = Field(1, description="1: the reply is the answer | 2: LongRAG's long answer, then a short answer extracted from it")
    max_new_tokens: int = Field(32, ge=1, description="tokens for the (short) answer")
    long_max_new_tokens: int = Field(256, ge=1, description="tokens for the long answer (steps: 2)")
    prompt: str | None = Field(None, description="user-turn template with {context} and {question} (closed book: {question}); default: LongRAG's NQ-style prompt")
    examples: tuple[Example, ...] = Field(DEFAULT_EXAMPLES, description="few-shot demos for the short-answer extraction (steps: 2)")
    adaptive: AdaptiveOptions | None = Field(None, description="{field, threshold}: retrieve only for less popular subjects")
    popqa: PopQAPromptOptions | None = Field(None, description="Mallen et al.'s prompt: 'Q: ... A:' after few-shot demos "
                                                               "{shots, seed, relation_field, answer_field, other_relations}")
    answer_rule: AnswerRule | None = Field(None, description="popqa: first line (Mallen et al.) | longrag: after the first "
                                                             "'answer:' (LongRAG) | lenient; default: longrag for steps 2, else popqa")

    @model_validator(mode="after")
    def _popqa_is_one_step(self) -> ReaderOptions:
        if self.popqa is not None and self.steps != 1:
            raise ValueError("popqa: Mallen et al.'s prompt is answered in one step; set steps: 1")
        return self


def both_ends(items: list[Any]) -> list[Any]:
    """Jin et al.'s reordering: odd ranks from the front, even ranks from the back (d1 d3 d5 ... d6 d4 d2)."""
    return items[0::2] + items[1::2][::-1]


class Reader(UsesLLM, Stage):
    kind = "reader"
    #: 2: answers cut by `answer_rule` (PopQA's first line, LongRAG's first 'answer:'), LongRAG's extraction prompt;
    #: PopQA's prompt as plain text
    version = "2"
    Options = ReaderOptions
    min_inputs = 0
    max_inputs = 1
    produces = "answers"
    options: ReaderOptions

    @classmethod
    def reads_query_pool(cls, options: StageOptions) -> bool:
        popqa = getattr(options, "popqa", None)
        return bool(popqa and popqa.shots)  # the demonstrations are drawn from the whole split

    def prepare(self, task: TaskData) -> None:
        self.prepare_prompts(task)
        self.llm  # noqa: B018 - load the model now, not inside the first batch

    def prepare_prompts(self, task: TaskData) -> None:
        """What the prompts take from the task (its corpus; PopQA's demonstration pool: its questions); no model."""
        self.corpus: Corpus | None = task.corpus
        o = self.options
        self.demo_sampler = DemoSampler(task.pool or task.queries, o.popqa, f"stage {self.env.stage_id}") if o.popqa and o.popqa.shots else None

    @property
    def rule(self) -> AnswerRule:
        """The answer rule: the option, else the authors' rule of the reader's method."""
        return self.options.answer_rule or ("longrag" if self.options.steps == 2 else "popqa")

    # -- prompts -------------------------------------------------------------------------------
    def passage(self, docid: str) -> str:
        doc = self.corpus.get(docid) if self.corpus is not None else None
        if doc is None:
            return ""
        body = " ".join(str(doc.text if f == "text" else doc.extra.get(f, "")).strip() for f in self.options.fields if f != "title")
        title = doc.title.strip() if "title" in self.options.fields else ""
        return f"Title: {title}\n{body}" if title else body

    def budget(self) -> int:
        """Tokens the passages may take (the same for every query: computed once)."""
        if getattr(self, "_budget", None) is None:
            self._budget = self._compute_budget()
        return self._budget

    def _compute_budget(self) -> int:
        o = self.options
        if o.context_tokens:
            return o.context_tokens
        template = o.prompt or (LONG_PROMPT if o.steps == 2 else RAG_PROMPT)
        if o.popqa is not None:
            template = QA_TEMPLATE
        overhead = self.llm.prompt_tokens([{"role": "user", "content": template}]) + 64  # + the question
        if o.popqa is not None:  # + the demonstrations, a generous 64 tokens each
            overhead += 64 * o.popqa.shots
        new = o.long_max_new_tokens if o.steps == 2 else o.max_new_tokens
        return max(1, self.llm.context_length - overhead - new)

    def select(self, ranking: Ranking, top_k: int | None = None, order: str | None = None) -> list[tuple[str, str]]:
        """(doc id, text) of the top documents that fit the budget, the last one cut to fit, in prompt order
        (`top_k` and `order` default to the stage's options; the hard-negative experiment varies them)."""
        budget, chosen = self.budget(), []
        order = order or self.options.order
        for docid in ranking.docids[: top_k or self.options.top_k]:
            text = self.passage(docid)
            n = self.llm.count_tokens(text) + 2  # + the blank line between passages
            if n > budget:
                if budget > 32:  # keep a cut passage only if something useful is left
                    words = text.split()
                    keep = max(1, int(len(words) * (budget - 2) / n))
                    while keep > 1 and self.llm.count_tokens(" ".join(words[:keep])) + 2 > budget:
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

    def reads_context(self, query: Query) -> bool:
        o = self.options
        if o.closed_book:
            return False
        if o.adaptive is not None:
            value = query.extra.get(o.adaptive.field)
            if value is None:
                raise RagbenchError.at(f"stage {self.env.stage_id}", f"query {query.id} has no field '{o.adaptive.field}' for adaptive retrieval", path="adaptive.field")
            return float(value) < o.adaptive.threshold
        return True

    def first_chat(self, query: Query, passages: list[tuple[str, str]], retrieved: bool) -> Chat:
        o = self.options
        if o.popqa is not None:
            demos = self.demo_sampler.demos(query) if self.demo_sampler is not None else []
            paragraph = "\n\n".join(text for _, text in passages) if retrieved else None
            text = popqa_prompt(query.text, demos, paragraph)
            return [{"role": "user", "content": text}] if o.popqa.chat else plain_prompt(text)
        if not retrieved:
            content = (o.prompt if o.prompt and o.closed_book else CLOSED_BOOK_PROMPT).format(question=query.text)
        else:
            context = "\n\n".join(text for _, text in passages)
            content = (o.prompt or (LONG_PROMPT if o.steps == 2 else RAG_PROMPT)).format(context=context, question=query.text)
        return [{"role": "user", "content": content}]

    def extract_chat(self, query: Query, long_answer: str) -> Chat:
        """LongRAG's second step; the long answer goes in as the first step's rule left it (LongRAG strips nothing)."""
        examples = "".join(f"Question: {e.question}\nLong Answer: {e.long_answer}\nShort Answer: {e.short_answer}\n\n" for e in self.options.examples)
        examples = "Here are some examples: " + examples if examples else ""
        return [{"role": "user", "content": EXTRACT_PROMPT.format(examples=examples, question=query.text, long_answer=long_answer)}]

    # -- the stage -------------------------------------------------------------------------------
    def process(self, queries: list[Query], inputs: list[dict[str, Ranking]]) -> dict[str, Answer]:
        o = self.options
        if not inputs and not o.closed_book:
            raise RagbenchError.at(f"stage {self.env.stage_id}", "a reader needs an input stage to read from, or closed_book: true")
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
                answers[q.id].long_answer = clean_answer(reply.text) if "answer:" in reply.text.lower() else reply.text.strip()
            else:  # LongRAG post-processes every reply, the long answer included
                answers[q.id].long_answer = extract_answer(reply.text, self.rule)
        if o.steps == 2:
            second = [self.extract_chat(q, answers[q.id].long_answer) for q in queries]
            for q, chat, reply in zip(queries, second, self.llm.chat(second, Sampling(max_tokens=o.max_new_tokens)), strict=True):
                answers[q.id].prompts.append(chat)
                answers[q.id].outputs.append(reply.text)
                answers[q.id].text = extract_answer(reply.text, self.rule)
        return answers

