"""`type: hard_negatives`: how answer quality falls as a reader reads more, and harder, passages.

Two probes per query (docs/methods.md, "Hard negatives and the inverted U"; Jin et al., ICLR 2025),
both answered in one step with the reader's prompt (readers/prompt.py; of the reader's options it takes
those that shape a prompt and its answer: llm, fields, context_tokens, max_new_tokens, prompt, popqa,
answer_rule):

- **Hard negatives.** For a query with a gold passage g (a qrels-relevant document that
  contains a gold answer, DPR `has_answer`), the context is g plus m negatives, m over `m`
  (default 0, 5, 10, 20, 40). Negatives come from each source: every input stage (its
  top-ranked documents, best first) and, with `random: true`, documents drawn at random.
  A negative is never relevant in the qrels and never contains a gold answer. m is capped by
  the context: negatives that do not fit the token budget are left out (as are those a source
  does not have), and the number actually read is stored with the trial. g sits at a position
  drawn from (seed, query, m) among the positions every source can offer, 0..min over sources
  of the negatives read, so it is the same for every source and sources differ only in which
  (and, when capped, how many) negatives they bring.
- **Inverted U.** The context is the top-k of `curve` (default: the first input), k over
  `k`, in score order and with Jin et al.'s reordering (best passages at both ends).

Each trial keeps its context ids, raw reply and answer; `metrics/degradation.py` scores them
(accuracy per condition, HND, relative drop, k*, peak drop) and draws the curves.
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import Field, field_validator

from ragbench.errors import RagbenchError
from ragbench.llm.base import Sampling
from ragbench.llm.stage import UsesLLM
from ragbench.metrics.answers import gold_answers, has_answer, parse_answer_metric
from ragbench.outputs import Output, Probes, Rankings
from ragbench.passages import render
from ragbench.readers.answer_rules import AnswerRule, extract_answer
from ragbench.readers.prompt import PROMPT_VERSION, RAG_PROMPT, PromptOptions, ReaderPrompt, draws_demos
from ragbench.stage import Contract, Stage, StageOptions
from ragbench.types import Corpus, Probe, Query, Ranking, TaskData

RANDOM = "random"


class HardNegativeOptions(PromptOptions):
    """The reader's prompt options (no top_k, order, closed_book, adaptive or steps: contexts are built here,
    every one is read, and the reply is the answer) and the experiment's grid."""

    m: tuple[int, ...] = Field((0, 5, 10, 20, 40), description="numbers of negatives read with the gold passage")
    k: tuple[int, ...] = Field((1, 2, 5, 10, 20, 40), description="top-k of the `curve` input for the inverted-U "
                                                                  "curve; () skips it")
    random: bool = Field(True, description="also draw negatives at random from the corpus (the length-only baseline "
                                           "HND is measured against)")
    curve: str | None = Field(None, description="input stage whose top-k makes the inverted-U curve (default: the "
                                                "first input)")
    reorder: tuple[bool, ...] = Field((False, True), description="inverted-U curve in score order (false) and "
                                                                 "reordered to both ends (true)")
    seed: int = Field(13, description="seeds the gold position and the random negatives")
    metric: str = Field("popqa_acc", description="answer metric that decides whether a trial's answer is right (EM, "
                                                 "F1, popqa_acc, token_recall)")

    @field_validator("m")
    @classmethod
    def _grid_m(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(x < 0 for x in v):
            raise ValueError("expected a non-empty list of numbers >= 0")
        return tuple(sorted(set(v)))

    @field_validator("k")
    @classmethod
    def _grid_k(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(x < 1 for x in v):
            raise ValueError("expected numbers >= 1")
        return tuple(sorted(set(v)))

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        try:
            needs = parse_answer_metric(v).needs
        except ValueError as e:
            raise ValueError(str(e)) from None
        if needs != "prediction":
            raise ValueError(f"'{v}' does not score an answer on its own (expected EM, F1, popqa_acc or token_recall)")
        return v


def gold_position(seed: int, qid: str, m: int, cap: int | None = None) -> int:
    """Where the gold passage goes among the negatives at grid point m: the same for every source (0 = first).

    `cap` is the fewest negatives any source read at this m (context budget, short rankings): the
    position is drawn from 0..cap so it exists in every source's context. Uncapped (cap = m), the
    draw is the one from 0..m, so runs where nothing is capped keep their positions.
    """
    cap = m if cap is None else min(cap, m)
    return random.Random(f"{seed}:{qid}:{m}").randint(0, cap)


def draws(rng: random.Random, n: int) -> Any:
    """Indices 0..n-1 in random order, drawn lazily (a huge corpus is never shuffled whole)."""
    seen: set[int] = set()
    while len(seen) < n:
        i = rng.randrange(n)
        if i not in seen:
            seen.add(i)
            yield i


class HardNegatives(UsesLLM, Stage):
    contract = Contract("experiment", Probes, consumes=Rankings, inputs=(1, 8))
    # the reader's prompt version plus this stage's own; hn2: the gold position is shared by all sources
    # even when the context caps some of them; hn3: its options are only those it uses (no reader-only ones)
    version = f"{PROMPT_VERSION}.hn3"
    Options = HardNegativeOptions
    options: HardNegativeOptions

    @classmethod
    def reads_query_pool(cls, options: StageOptions) -> bool:
        return draws_demos(options)

    @classmethod
    def output(cls, options: HardNegativeOptions, records: dict[str, Any], upstream: list[Output],  # type: ignore[override]
               task: TaskData) -> Probes:
        return Probes(records, options.metric, tuple(options.m))

    def prepare(self, task: TaskData) -> None:
        o, where = self.options, f"stage {self.env.stage_id}"
        if task.corpus is None:
            raise RagbenchError.at(where, "the hard-negative experiment needs the task's corpus")
        if o.curve is not None and o.curve not in self.env.inputs:
            raise RagbenchError.at(where, f"curve '{o.curve}' is not one of its inputs ({', '.join(self.env.inputs)})",
                                   path="curve")
        self.reader = ReaderPrompt(o, lambda: self.llm, task, where, template=o.prompt or RAG_PROMPT,
                                   reply_tokens=o.max_new_tokens)
        self.llm  # noqa: B018 - load the model now, not inside the first batch
        self.corpus: Corpus = task.corpus
        self.qrels = task.qrels
        self.answers_field = task.answers_field

    # -- contexts -----------------------------------------------------------------------------
    @property
    def rule(self) -> AnswerRule:
        """The answer rule: the option, else PopQA's first line (the reader's one-step rule)."""
        return self.options.answer_rule or "popqa"

    def text(self, docid: str) -> str:
        """Where has_answer looks: the title and text as a retriever indexes them."""
        return render(self.corpus[docid], "words")

    def gold(self, query: Query, golds: list[str]) -> str | None:
        """The query's gold passage: its most relevant qrels document that contains an answer."""
        judged = sorted((-g, d) for d, g in self.qrels.get(query.id, {}).items() if g > 0 and d in self.corpus)
        return next((d for _, d in judged if has_answer(self.text(d), golds)), None)

    def is_negative(self, query: Query, golds: list[str], docid: str) -> bool:
        return self.qrels.get(query.id, {}).get(docid, 0) <= 0 and not has_answer(self.text(docid), golds)

    def negatives(self, query: Query, golds: list[str], source: str, ranking: Ranking | None, m: int) -> list[str]:
        """Up to m negatives from a source, best first (random: in the order drawn)."""
        if source == RANDOM:
            rng = random.Random(f"{self.options.seed}:{query.id}:random")
            candidates = (self.corpus.id_at([i])[0] for i in draws(rng, len(self.corpus)))  # rows: no id list
        else:
            candidates = iter(ranking.docids if ranking is not None else [])
        out: list[str] = []
        for d in candidates:
            if len(out) == m:
                break
            if d in self.corpus and self.is_negative(query, golds, d):
                out.append(d)
        return out

    def fit(self, gold: str, negatives: list[str]) -> list[str]:
        """The leading negatives that fit the token budget next to the gold passage."""
        budget = self.reader.budget() - (self.llm.count_tokens(self.reader.passage(gold)) + 2)
        kept: list[str] = []
        for d in negatives:
            n = self.llm.count_tokens(self.reader.passage(d)) + 2
            if n > budget:
                break
            kept.append(d)
            budget -= n
        return kept

    def negative_trials(self, query: Query, golds: list[str], gold: str,
                        rankings: dict[str, Ranking | None]) -> list[dict[str, Any]]:
        """Gold plus m negatives per source and m, the gold at one position per (query, m) shared by all sources.

        A source whose negatives are capped (budget, short ranking) must not move the gold: the
        position is drawn under the smallest cap across sources, so it exists in every context.
        """
        o = self.options
        out: list[dict[str, Any]] = []
        for m in o.m:
            kept: dict[str, list[str]] = {"none": []}  # m = 0: the gold passage alone, shared by all sources
            if m > 0:
                kept = {s: self.fit(gold, self.negatives(query, golds, s, rankings.get(s), m)) for s in self.sources()}
            cap = min(len(negs) for negs in kept.values())
            position = gold_position(o.seed, query.id, m, cap)
            for source, negs in kept.items():
                context = negs[:position] + [gold] + negs[position:]
                out.append({"probe": "negatives", "source": source, "m": m, "m_used": len(negs), "m_shared": cap,
                            "gold": gold, "gold_position": position, "context_ids": context})
        return out

    # -- the stage ------------------------------------------------------------------------------
    def sources(self) -> list[str]:
        return [*self.env.inputs, *([RANDOM] if self.options.random else [])]

    def trials(self, query: Query, rankings: dict[str, Ranking | None]) -> list[dict[str, Any]]:
        o = self.options
        golds = gold_answers(query, self.answers_field)
        out: list[dict[str, Any]] = []
        gold = self.gold(query, golds)
        if gold is not None:
            out += self.negative_trials(query, golds, gold, rankings)
        curve = o.curve or self.env.inputs[0]
        ranking = rankings.get(curve)
        for k in o.k if ranking is not None else ():
            for reorder in o.reorder:
                passages = self.reader.select(ranking, k, "both_ends" if reorder else "score")
                out.append({"probe": "top_k", "source": curve, "k": k, "reorder": reorder, "k_used": len(passages),
                            "context_ids": [d for d, _ in passages], "texts": [t for _, t in passages]})
        return out

    def process(self, queries: list[Query], inputs: list[dict[str, Any]]) -> dict[str, Probe]:
        names = self.env.inputs
        probes: dict[str, Probe] = {}
        chats: dict[str, Any] = {}  # distinct prompts (k=1 reordered is k=1 in order): asked once
        for q in queries:
            trials = self.trials(q, {name: inp.get(q.id) for name, inp in zip(names, inputs, strict=True)})
            for t in trials:
                texts = t.pop("texts", None) or [self.reader.passage(d) for d in t["context_ids"]]
                chat = self.reader.chat(q, list(zip(t["context_ids"], texts, strict=True)), retrieved=True)
                t["prompt_key"] = chat[0]["content"]
                chats.setdefault(t["prompt_key"], chat)
            probes[q.id] = Probe(q.id, gold=next((t["gold"] for t in trials if "gold" in t), None), trials=trials)
        keys = list(chats)
        asked = self.llm.chat([chats[k] for k in keys], Sampling(max_tokens=self.options.max_new_tokens))
        replies = dict(zip(keys, asked, strict=True))
        for probe in probes.values():
            for t in probe.trials:
                reply = replies[t.pop("prompt_key")]
                t["output"] = reply.text
                t["answer"] = extract_answer(reply.text, self.rule)
        return probes

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "prompt": self.options.prompt or "RAG_PROMPT (ragbench.readers.prompt)"}
