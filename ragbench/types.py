"""Plain data that flows between stages.

Everything here is serialisable (rankings as TREC run lines, the rest as JSON) so that any
stage's output can be cached, inspected, or replaced by a file from another tool.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Document:
    id: str
    text: str
    title: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def contents(self, fields: tuple[str, ...] = ("title", "text"), sep: str = " ") -> str:
        """The text a retriever indexes: the chosen fields joined, empty ones skipped."""
        parts = [self.title if f == "title" else self.text if f == "text" else str(self.extra.get(f, ""))
                 for f in fields]
        return sep.join(p for p in parts if p)


@dataclass(slots=True)
class Query:
    id: str
    text: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Corpus(Mapping[str, Document]):
    """Documents by id, in file order, with a content fingerprint that cache keys depend on."""

    docs: dict[str, Document]
    fingerprint: str
    source: str = ""

    def __getitem__(self, key: str) -> Document:
        return self.docs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.docs)

    def __len__(self) -> int:
        return len(self.docs)

    # -- streaming access: what stages that walk the whole corpus use ----------------------
    def batches(self, size: int = 1024, start: int = 0, stop: int | None = None) -> Iterator[list[Document]]:
        """Rows `start`..`stop` (file order) as lists of at most `size` documents."""
        docs = list(self.docs.values())[start:stop]
        for i in range(0, len(docs), size):
            yield docs[i:i + size]

    def texts(self, fields: tuple[str, ...] = ("title", "text"), start: int = 0,
              stop: int | None = None) -> Iterator[str]:
        """Each row's indexed text (`Document.contents(fields)`), in file order."""
        for batch in self.batches(start=start, stop=stop):
            yield from (d.contents(fields) for d in batch)

    def id_at(self, rows: list[int]) -> list[str]:
        """The ids of rows (positions in file order)."""
        ids = list(self.docs)
        return [ids[r] for r in rows]


# qrels: query id -> doc id -> graded relevance (the shape ir_measures and pytrec_eval take)
Qrels = dict[str, dict[str, int]]


@dataclass(slots=True)
class Ranking:
    """One query's ranked list, best first."""

    qid: str
    docids: list[str]
    scores: list[float]

    def __post_init__(self) -> None:
        if len(self.docids) != len(self.scores):
            raise ValueError(f"ranking for {self.qid}: {len(self.docids)} ids but {len(self.scores)} scores")

    @classmethod
    def from_scores(cls, qid: str, scored: Mapping[str, float] | list[tuple[str, float]],
                    k: int | None = None) -> Ranking:
        """Sort by score descending, ties broken by doc id so every engine orders ties alike."""
        items = scored.items() if isinstance(scored, Mapping) else scored
        ordered = sorted(items, key=lambda x: (-x[1], x[0]))[:k]
        return cls(qid, [d for d, _ in ordered], [float(s) for _, s in ordered])

    def top(self, k: int) -> Ranking:
        return Ranking(self.qid, self.docids[:k], self.scores[:k])

    def __len__(self) -> int:
        return len(self.docids)


@dataclass(slots=True)
class Answer:
    """One query's answer from a reader, with what it read (the run folder keeps all of it)."""

    qid: str
    text: str  # the (short) answer the answer metrics score
    context_ids: list[str] = field(default_factory=list)  # documents put in the prompt, in prompt order
    long_answer: str = ""  # the first step's output in two-step extraction
    retrieved: bool = True  # False: read no context (closed book, or adaptive retrieval skipped it)
    prompts: list[Any] = field(default_factory=list)  # the chats sent, in order
    outputs: list[str] = field(default_factory=list)  # the raw replies, in order

    def to_json(self) -> dict[str, Any]:
        return {"query_id": self.qid, "answer": self.text, "long_answer": self.long_answer, "retrieved": self.retrieved,
                "context_ids": self.context_ids, "prompts": self.prompts, "outputs": self.outputs}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Answer:
        return cls(d["query_id"], d["answer"], d.get("context_ids", []), d.get("long_answer", ""),
                   d.get("retrieved", True), d.get("prompts", []), d.get("outputs", []))


@dataclass(slots=True)
class TaskData:
    """Everything a pipeline needs from a task, loaded once."""

    name: str
    split: str
    queries: list[Query]
    qrels: Qrels
    corpus: Corpus | None
    source: str  # where the data came from, for the lock file
    fingerprint: str  # of queries + qrels + corpus
    answers_field: str = "answers"  # query field with the gold answers (the card's), for judges
    #: the split's questions before --limit, and their fingerprint: few-shot demonstrations are drawn
    #: from the whole split, so that a limited run asks each question what the full run asks
    pool: list[Query] = field(default_factory=list)
    pool_fingerprint: str = ""


@dataclass(slots=True)
class Judgement:
    """One query's verdict from an LLM judge, with the prompts and raw replies it came from."""

    qid: str
    value: float | None  # the mean of the parseable samples; None when none could be parsed (never counted as wrong)
    prompts: list[Any] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    samples: list[float | None] = field(default_factory=list)  # each judging's score (samples: n), None = unparseable
    details: list[dict[str, Any]] = field(default_factory=list)  # statement methods: statements, label counts, failure
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"query_id": self.qid, "value": self.value, "samples": self.samples, "seed": self.seed,
                "details": self.details, "prompts": self.prompts, "outputs": self.outputs}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Judgement:
        return cls(d["query_id"], d["value"], d.get("prompts", []), d.get("outputs", []),
                   d.get("samples", [d["value"]]), d.get("details", []), d.get("seed"))


@dataclass(slots=True)
class Probe:
    """One query's trials in an experiment stage (hard negatives): each a context read and the reply."""

    qid: str
    gold: str | None = None  # the gold passage the negatives were read with (None: the query has none)
    # {probe, source, m | k, context_ids, output, answer, ...}
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"query_id": self.qid, "gold": self.gold, "trials": self.trials}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Probe:
        return cls(d["query_id"], d.get("gold"), d.get("trials", []))


@dataclass(slots=True)
class Assessment:
    """One query's relevance grades from an LLM assessor (None: its reply had no grade), with the replies."""

    qid: str
    grades: dict[str, int | None] = field(default_factory=dict)  # doc id -> 0..3
    outputs: dict[str, str] = field(default_factory=dict)  # doc id -> raw reply

    def to_json(self) -> dict[str, Any]:
        return {"query_id": self.qid, "grades": self.grades, "outputs": self.outputs}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Assessment:
        return cls(d["query_id"], d.get("grades", {}), d.get("outputs", {}))
