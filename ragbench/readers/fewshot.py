"""PopQA's own reader prompt (Mallen et al., ACL 2023; docs/methods.md, "PopQA's protocol (Mallen et al.)").

The authors (AlexTMallen/adaptive-retrieval, `run_model.py`) prompt a completion model with
    <demo 1>\\n\\n<demo 2>\\n\\n ... <demo n>\\n\\n[<retrieved paragraph>\\n\\n]Q: <question> A:
where every demonstration is "Q: <question> A: <obj>" for another PopQA question (`obj`: the
Wikidata object label). Demonstrations are drawn per test question from the dataset itself:
in their templated mode one question from each relation other than the test question's
(15 other relations: 15 demos), then shuffled.

ragbench draws them with its own seeded sampler (not the authors' numpy/pandas draws): per
question, from a `random.Random` seeded by (seed, question id), so the demonstrations of a
question do not depend on the batch it is in. With R other relations in the pool, each gives
shots // R demos and shots % R relations, chosen by the same generator, give one more: with
PopQA's 16 relations this is the authors' one per relation; with the 2 relations of the local
1,000-question subset all 15 come from the other relation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import Field

from ragbench.errors import RagbenchError
from ragbench.stage import StageOptions
from ragbench.types import Query

QA_TEMPLATE = "Q: {question} A:"


class PopQAPromptOptions(StageOptions):
    shots: int = Field(15, ge=0, description="demonstrations per question (the authors' --n_examples, 15)")
    seed: int = Field(633, description="seeds ragbench's demo sampler, per question (633: the authors' seed value)")
    relation_field: str = Field("prop", description="query field with the relation (PopQA: prop)")
    answer_field: str = Field("obj", description="query field a demonstration answers with (PopQA: obj, the object "
                                                 "label)")
    other_relations: bool = Field(True, description="true: demos only from relations other than the question's (the "
                                                     "authors' templated mode) | false: from any other question")
    chat: bool = Field(False, description="false: the prompt is plain text continued by the model, as the authors send "
                                          "it to completion models | true: the single user turn of the chat template")


def demo_text(question: str, answer: str) -> str:
    """One demonstration: the question in PopQA's completion template, then its answer."""
    return f"{QA_TEMPLATE.format(question=question)} {answer}"


def popqa_prompt(question: str, demos: Sequence[tuple[str, str]], paragraph: str | None) -> str:
    """The authors' layout: demos separated and followed by a blank line, the paragraph (if read), then 'Q: ... A:'."""
    text = "".join(demo_text(q, a) + "\n\n" for q, a in demos)
    if paragraph is not None:
        text += paragraph + "\n\n"
    return text + QA_TEMPLATE.format(question=question)


class DemoSampler:
    """Draws each question's demonstrations from a pool of the task's own questions."""

    def __init__(self, pool: Sequence[Query], options: PopQAPromptOptions, where: str = "reader"):
        self.options = options
        self.where = where
        self.by_relation: dict[str, list[Query]] = {}
        for q in pool:
            if options.answer_field not in q.extra:
                raise RagbenchError.at(where, f"query {q.id} has no field '{options.answer_field}' for PopQA "
                                       "demonstrations", path="popqa.answer_field")
            self.by_relation.setdefault(self.relation(q), []).append(q)

    def relation(self, query: Query) -> str:
        value = query.extra.get(self.options.relation_field)
        if value is None and self.options.other_relations:
            raise RagbenchError.at(self.where, f"query {query.id} has no field '{self.options.relation_field}' "
                                   "(the relation demonstrations must differ from)", path="popqa.relation_field")
        return str(value)

    def draw(self, query: Query) -> list[Query]:
        """The question's demonstrations, in prompt order: never the question itself, nor one of its relation."""
        o = self.options
        rng = random.Random(f"popqa-demos:{o.seed}:{query.id}")

        def others(group: Sequence[Query]) -> list[Query]:
            return [p for p in group if p.id != query.id and p.text != query.text]

        if not o.other_relations:
            picks = self._sample(rng, others([p for g in self.by_relation.values() for p in g]), o.shots, "the pool")
        else:
            own = self.relation(query)
            rels = sorted(r for r in self.by_relation if r != own)
            if o.shots and not rels:
                raise RagbenchError.at(self.where, f"no relation other than '{own}' among the task's questions to draw "
                                       "PopQA demonstrations from; set popqa.other_relations: false",
                                       path="popqa.other_relations")
            extra = set(rng.sample(rels, o.shots % len(rels))) if rels else set()
            picks = []
            for rel in rels:
                n = o.shots // len(rels) + (rel in extra)
                picks += self._sample(rng, others(self.by_relation[rel]), n, f"relation '{rel}'")
        rng.shuffle(picks)
        return picks

    def _sample(self, rng: random.Random, candidates: list[Query], n: int, what: str) -> list[Query]:
        if len(candidates) < n:
            raise RagbenchError.at(self.where, f"{what} has {len(candidates)} questions, fewer than the {n} "
                                   "demonstrations asked", path="popqa.shots")
        return rng.sample(candidates, n)

    def demos(self, query: Query) -> list[tuple[str, str]]:
        """(question, answer) of each demonstration, in prompt order."""
        return [(p.text, str(p.extra[self.options.answer_field])) for p in self.draw(query)]
