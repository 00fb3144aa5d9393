"""`type: judge`: an LLM judges each answer of the reader it reads against the gold answer.

`method: rating` is FRAMES' autorater (Krishna et al., 2024): the judge sees the question, the
reader's answer and the gold answer, explains, and ends with TRUE or FALSE. Its reply is parsed
by `parse_judgement`, a fixed rule (the last labelled decision, negations respected), so the same
reply always gives the same verdict; a reply with no verdict is kept as unparseable (value None),
counted in the run and left out of `judge_acc`, never scored as wrong. The judge runs on any
`ragbench/llm` backend; its prompts and replies are stored per query (judgements.jsonl) and its
model in config.lock.yaml.

A task with several gold aliases (PopQA) shows the first as the gold answer and the others as
also accepted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ragbench.llm.base import Chat, Sampling
from ragbench.llm.stage import LLMOptions, UsesLLM
from ragbench.metrics.answers import JUDGE_PROMPT, gold_answers, parse_judgement
from ragbench.stage import Stage
from ragbench.types import Answer, Judgement, Query, TaskData


class JudgeOptions(LLMOptions):
    method: Literal["rating"] = Field("rating", description="rating: FRAMES' TRUE/FALSE autorater on (question, answer, gold)")
    prompt: str = Field(JUDGE_PROMPT, description="template with {question}, {response} and {gold}")
    max_new_tokens: int = Field(128, ge=1, description="tokens for the judge's explanation and decision")
    max_aliases: int = Field(5, ge=0, description="gold aliases shown besides the first")


def gold_text(golds: list[str], max_aliases: int) -> str:
    rest = [g for g in dict.fromkeys(golds[1:]) if g != golds[0]][:max_aliases]
    return golds[0] + (f" (also accepted: {'; '.join(rest)})" if rest else "")


class Judge(UsesLLM, Stage):
    kind = "judge"
    Options = JudgeOptions
    min_inputs = 1
    max_inputs = 1
    consumes = "answers"
    produces = "judgements"
    options: JudgeOptions

    def prepare(self, task: TaskData) -> None:
        self.answers_field = task.answers_field
        self.llm  # noqa: B018 - load the model now, not inside the first batch

    def chat(self, query: Query, answer: Answer) -> Chat:
        gold = gold_text(gold_answers(query, self.answers_field), self.options.max_aliases)
        content = self.options.prompt.format(question=query.text, response=answer.text, gold=gold)
        return [{"role": "user", "content": content}]

    def process(self, queries: list[Query], inputs: list[dict[str, Any]]) -> dict[str, Judgement]:
        pairs = [(q, inputs[0][q.id]) for q in queries if inputs[0].get(q.id) is not None]
        chats = [self.chat(q, a) for q, a in pairs]
        replies = self.llm.chat(chats, Sampling(max_tokens=self.options.max_new_tokens))
        out = {}
        for (q, _), chat, reply in zip(pairs, chats, replies, strict=True):
            verdict = parse_judgement(reply.text)
            out[q.id] = Judgement(q.id, None if verdict is None else float(verdict), [chat], [reply.text])
        return out
