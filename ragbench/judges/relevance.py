"""`type: relevance_judge`: an LLM grades the top documents of a ranking, for measures that need
no complete qrels (T_α, E_α, recall-free nDCG; docs/methods.md, "LLM relevance assessor (UMBRELA)")
or to fill holes in incomplete ones.

Each (query, document) pair among the input's top `depth` is graded 0-3 with the UMBRELA
prompt (Upadhyay et al., 2024, the TREC RAG'24 assessor: 0 unrelated, 1 related but does not
answer, 2 partly answers, 3 dedicated to the query with the exact answer), read from its
`##final score: N` line. A grade of at least `relevant_at` (default 2, TREC's line for binary
measures) counts as relevant.

The stage passes its input ranking through unchanged; what changes is the qrels it is scored
against: `qrels: llm` uses only the judge's grades, `qrels: fill` keeps the task's labels and
adds the judge's where the task has none. Unparseable replies give no label (counted in the
run, never taken as non-relevant). Grades, prompts and replies are cached with every LLM
request and written to the run folder (relevance.jsonl, and qrels.llm.tsv in TREC format).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from ragbench.llm.base import Sampling
from ragbench.llm.stage import LLMOptions, UsesLLM
from ragbench.outputs import JudgedRankings, Output, Rankings
from ragbench.passages import render
from ragbench.stage import Contract, Stage
from ragbench.types import Assessment, Corpus, Document, Query, Ranking, TaskData

UMBRELA_PROMPT = """Given a query and a passage, you must provide a score on an integer scale of 0 to 3 with the following meanings:
0 = represent that the passage has nothing to do with the query,
1 = represents that the passage seems related to the query but does not answer it,
2 = represents that the passage has some answer for the query, but the answer may be a bit unclear, or hidden amongst extraneous information and
3 = represents that the passage is dedicated to the query and contains the exact answer.

Important Instruction: Assign category 1 if the passage is somewhat related to the topic but not completely, category 2 if passage presents something very important related to the entire topic but also has some extra information and category 3 if the passage only and entirely refers to the topic. If none of the above satisfies give it category 0.

Query: {query}
Passage: {passage}

Split this problem into steps:
Consider the underlying intent of the search.
Measure how well the content matches a likely intent of the query (M).
Measure how trustworthy the passage is (T).
Consider the aspects above and the relative importance of each, and decide on a final score (O). Final score must be an integer value only.
Do not provide any code in result. Provide each score in the format of: ##final score: score without providing any reasoning."""  # noqa: E501

_FINAL = re.compile(r"##\s*final score:\s*\**\s*([0-3])(?:\.0+)?(?![\d.])", re.IGNORECASE)  # "2", "2.0"; not "0.5"


def parse_grade(reply: str) -> int | None:
    """The last `##final score: N` (0-3) in a reply; None when there is none."""
    found = _FINAL.findall(reply)
    return int(found[-1]) if found else None


class RelevanceOptions(LLMOptions):
    depth: int = Field(10, ge=1, description="documents graded per query: the input's top `depth`")
    qrels: Literal["llm", "fill"] = Field("llm", description="llm: score against the judge's grades only | fill: the "
                                                             "task's qrels, the judge's where they have no label")
    relevant_at: int = Field(2, ge=1, le=3, description="lowest grade that counts as relevant")
    prompt: str = Field(UMBRELA_PROMPT, description="template with {query} and {passage}")
    max_passage_tokens: int = Field(
        512, ge=16, description="a passage is cut to this many tokens (words x 1.3) in the prompt")
    max_new_tokens: int = Field(64, ge=1, description="tokens for the grade")
    prefix: str = Field("", description="text the assessor's reply is made to start with, e.g. '##final score: ' "
                                        "so a small model writes only the grade (parsed together with the reply)")


class RelevanceJudge(UsesLLM, Stage):
    contract = Contract("judge", JudgedRankings, consumes=Rankings, inputs=(1, 1))
    Options = RelevanceOptions
    options: RelevanceOptions

    def prepare(self, task: TaskData) -> None:
        self.corpus: Corpus | None = task.corpus
        self.llm  # noqa: B018 - load the model now, not inside the first batch

    def passage(self, doc: Document) -> str:
        return render(doc, "words", max_words=int(self.options.max_passage_tokens / 1.3))

    def process(self, queries: list[Query], inputs: list[dict[str, Ranking]]) -> dict[str, Assessment]:
        corpus = self.corpus
        pairs = [(q, doc) for q in queries if corpus is not None  # each query's documents in one lookup
                 for doc in corpus.fetch(inputs[0][q.id].docids[: self.options.depth]).values()]
        chats = [[{"role": "user", "content": self.options.prompt.format(query=q.text, passage=self.passage(doc))}]
                 for q, doc in pairs]
        prefix = self.options.prefix
        replies = self.llm.chat(chats, Sampling(max_tokens=self.options.max_new_tokens), prefix=prefix)
        out = {q.id: Assessment(q.id) for q in queries}
        for (q, doc), reply in zip(pairs, replies, strict=True):
            out[q.id].grades[doc.id] = parse_grade(prefix + reply.text)
            out[q.id].outputs[doc.id] = prefix + reply.text
        return out

    @classmethod
    def output(cls, options: RelevanceOptions, records: dict[str, Any], upstream: list[Output],  # type: ignore[override]
               task: TaskData) -> JudgedRankings:
        """Its input's ranking, passed on, with the qrels the grades make (`qrels: llm`, or the task's with the
        grades filling the gaps)."""
        assert isinstance(upstream[0], Rankings)
        qrels: dict[str, dict[str, int]] = {} if options.qrels == "llm" else {q: dict(d) for q, d in task.qrels.items()}
        for qid, a in records.items():
            row = qrels.setdefault(qid, {})
            for d, g in a.grades.items():
                if g is not None and (options.qrels == "llm" or d not in row):
                    row[d] = g if g >= options.relevant_at else 0
        return JudgedRankings(upstream[0].records, records, qrels, options.qrels, options.relevant_at)

    def identity(self) -> dict[str, Any]:
        prompt = "UMBRELA" if self.options.prompt == UMBRELA_PROMPT else self.options.prompt
        return {**super().identity(), "prompt": prompt}
