"""`type: multi_step`: an LLM writes search queries, step after step, run through a first-stage retriever
(docs/methods.md, "Multi-step retrieval"): FRAMES' multi-step setting (Krishna et al., 2024) and, when the
LLM sees what was found, the interleaving of IRCoT (Trivedi et al., ACL 2023).

Per question:

step 0   the question itself: the top `question_docs` documents of the input ranking (0: none).
step s   (1..`steps`) the LLM reads the question (and with `show_found` the documents gathered so far,
         the first `found_docs` of them, `found_words` words each) and writes `queries_per_step` search
         queries, one per line. Each is run through the input stage, a first-stage retriever the pipeline
         lends as `env.search`; of each query's top `docs_per_query` documents, those not yet gathered are
         added. A query already asked for this question (or the question itself) is not asked again.

The ranking is the documents in the order they were gathered: by step; within a step by their retrieval
score (a document found by several queries at its best score; ties by query order, then rank). With
`fill`, the rest of the question's input ranking follows, to `top_k`, so that recall at a depth compares
with single-step retrieval at the same depth. Scores are positions (`top_k` - rank), since retrieval scores
of different queries and steps are not on one scale. The queries of every step, what each found, the
prompts and replies are in the cache and the run folder (queries.generated.jsonl).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from ragbench.errors import RagbenchError
from ragbench.llm.base import Sampling
from ragbench.llm.stage import LLMOptions, UsesLLM
from ragbench.outputs import Output, Rankings, SearchedRankings
from ragbench.passages import render
from ragbench.stage import Contract, Stage
from ragbench.types import Corpus, Query, Ranking, SearchTrace, TaskData

PROMPT = """Answering the question below takes facts from several documents. Write {k} short search queries, \
one per line, that would find the facts still missing. Write only the queries: no numbering, no explanation.

Question: {question}{found}"""
FOUND = "\n\nDocuments found so far:\n{documents}"

#: what may lead a query line: a bullet, "1." "(1)" "[1]", "Query 1:", "Q1:"
_LEAD = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,2}[.):]|\[\d{1,2}\]|(?:search\s+)?query\s*\d*\s*[:.-]|q\d+\s*[:.-])\s*",
                   re.I)


def parse_queries(reply: str, k: int, asked: set[str], max_words: int | None = None) -> list[str]:
    """At most `k` queries from a reply, one per line: list marks, "Query 1:" and quotes stripped, cut to
    `max_words`; lines without a letter, headers (ending in ':') and queries in `asked` (lowercased, updated here)
    skipped."""
    out: list[str] = []
    for line in reply.splitlines():
        q = " ".join(_LEAD.sub("", line).strip().strip("\"'`").split()[:max_words])
        if not any(c.isalpha() for c in q) or q.endswith(":") or q.lower() in asked:
            continue
        asked.add(q.lower())
        out.append(q)
        if len(out) == k:
            break
    return out


def gather(found: list[Ranking], depth: int, seen: set[str]) -> list[str]:
    """The documents one step adds: each query's top `depth` not in `seen` (updated here), ordered by best
    score, ties by query order then rank."""
    best: dict[str, tuple[float, int]] = {}
    order = 0
    for r in found:
        for d, s in zip(r.docids[:depth], r.scores[:depth], strict=True):
            if d not in seen and (d not in best or s > best[d][0]):
                best[d] = (s, best[d][1] if d in best else order)
            order += 1
    new = sorted(best, key=lambda d: (-best[d][0], best[d][1]))
    seen.update(new)
    return new


class MultiStepOptions(LLMOptions):
    steps: int = Field(2, ge=1, description="n: rounds in which the LLM writes queries")
    queries_per_step: int = Field(3, ge=1, description="k: queries the LLM writes each round")
    docs_per_query: int = Field(2, ge=1, description="top documents of each generated query added (new ones)")
    question_docs: int = Field(4, ge=0, description="step 0: the input ranking's top documents for the question itself")
    show_found: bool = Field(True, description="the LLM sees what was gathered so far (IRCoT-style); "
                                               "false: every round sees the question only")
    found_docs: int = Field(12, ge=1, description="with show_found: documents shown, the first gathered")
    found_words: int = Field(40, ge=1, description="with show_found: words shown of each")
    max_query_words: int = Field(32, ge=1, description="a written query is cut to this many words")
    prompt: str = Field(PROMPT, description="template with {k}, {question} and {found} (empty at the first round)")
    max_new_tokens: int = Field(96, ge=1, description="tokens for a round's queries")
    fill: bool = Field(True, description="after the gathered documents, the rest of the question's input ranking")
    top_k: int = Field(100, ge=1, description="documents returned per query")


class MultiStep(UsesLLM, Stage):
    contract = Contract("retriever", SearchedRankings, consumes=Rankings, inputs=(1, 1), searches_input=True)
    Options = MultiStepOptions
    version = "2"  # 2: a line without a letter is not a query
    options: MultiStepOptions

    def prepare(self, task: TaskData) -> None:
        self.corpus: Corpus | None = task.corpus
        if self.env.search is None:
            raise RagbenchError.at(f"stage {self.env.stage_id}", "multi_step runs outside a pipeline that lends it "
                                   "its input retriever's search")
        self.llm  # noqa: B018 - load the model now, not inside the first batch

    def process(self, queries: list[Query], inputs: list[dict[str, Ranking]]) -> dict[str, SearchTrace]:
        o = self.options
        traces = {q.id: SearchTrace(q.id) for q in queries}
        gathered: dict[str, list[str]] = {}
        seen: dict[str, set[str]] = {}
        asked = {q.id: {q.text.strip().lower()} for q in queries}
        for q in queries:
            seen[q.id] = set()
            gathered[q.id] = gather([inputs[0][q.id]], o.question_docs, seen[q.id]) if o.question_docs else []
            top = inputs[0][q.id].docids[:o.question_docs]
            traces[q.id].steps.append({"step": 0, "queries": [q.text], "found": [top], "new": list(gathered[q.id])})
        for step in range(1, o.steps + 1):
            chats = [[{"role": "user", "content": self._prompt(q, gathered[q.id])}] for q in queries]
            replies = self.llm.chat(chats, Sampling(max_tokens=o.max_new_tokens))
            written = {q.id: parse_queries(r.text, o.queries_per_step, asked[q.id], o.max_query_words)
                       for q, r in zip(queries, replies, strict=True)}
            asks = [Query(f"{q.id}::{step}.{j}", text) for q in queries for j, text in enumerate(written[q.id])]
            assert self.env.search is not None
            results = self.env.search(asks) if asks else {}
            for q, chat, reply in zip(queries, chats, replies, strict=True):
                found = [results.get(f"{q.id}::{step}.{j}") or Ranking("", [], []) for j in range(len(written[q.id]))]
                new = gather(found, o.docs_per_query, seen[q.id])
                gathered[q.id] += new
                traces[q.id].steps.append({"step": step, "queries": written[q.id],
                                           "found": [r.docids[:o.docs_per_query] for r in found], "new": new,
                                           "prompt": chat, "output": reply.text})
        for q in queries:
            docids = gathered[q.id][:o.top_k]
            if o.fill:
                docids += [d for d in inputs[0][q.id].docids if d not in seen[q.id]][:o.top_k - len(docids)]
            traces[q.id].docids = docids
            traces[q.id].scores = [float(o.top_k - i) for i in range(len(docids))]
        return traces

    def _prompt(self, q: Query, gathered: list[str]) -> str:
        o = self.options
        found = ""
        if o.show_found and gathered and self.corpus is not None:
            docs = self.corpus.fetch(gathered[:o.found_docs])
            lines = [f"[{i}] {render(docs.get(d), 'plain', max_words=o.found_words)}"
                     for i, d in enumerate(gathered[:o.found_docs], start=1)]
            found = FOUND.format(documents="\n".join(lines))
        return o.prompt.format(k=o.queries_per_step, question=q.text, found=found)

    @classmethod
    def output(cls, options: MultiStepOptions, records: dict[str, Any], upstream: list[Output],  # type: ignore[override]
               task: TaskData) -> SearchedRankings:
        return SearchedRankings(records)

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "prompt": "default" if self.options.prompt == PROMPT else self.options.prompt}
