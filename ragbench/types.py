"""Plain data that flows between stages.

Everything here is serialisable (rankings as TREC run lines, the rest as JSON) so that any
stage's output can be cached, inspected, or replaced by a file from another tool.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from ragbench.corpus_store import Store


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


class Corpus(Mapping[str, Document]):
    """Documents by id, in file order, with a content fingerprint that cache keys depend on.

    The rows live in Arrow (`corpus_store`): memory-mapped from the cache for a task's corpus, in
    memory for a small derived one. Documents are built only for the rows asked for: stages that walk
    the corpus stream it (`batches`, `texts`), the others fetch by id (`corpus[id]`, `fetch`). A corpus
    pickles as its store's path, so workers reopen the memory map instead of receiving the rows.
    """

    __slots__ = ("store", "fingerprint", "source")

    def __init__(self, docs: Store | Mapping[str, Document] | Iterable[Document], fingerprint: str,
                 source: str = ""):
        """`docs`: a store, or documents (a mapping by id, or in order) held in an in-memory Arrow table."""
        from ragbench.corpus_store import Store

        if not isinstance(docs, Store):
            values = docs.values() if isinstance(docs, Mapping) else docs
            docs = Store.from_rows((d.id, d.title, d.text, json.dumps(d.extra, ensure_ascii=False) if d.extra else None)
                                   for d in values)
        self.store: Store = docs
        self.fingerprint = fingerprint
        self.source = source

    @classmethod
    def from_documents(cls, docs: Mapping[str, Document] | Iterable[Document], fingerprint: str,
                       source: str = "") -> Corpus:
        """A corpus held in memory, for derived corpora built in one go."""
        return cls(docs, fingerprint, source)

    @classmethod
    def open(cls, folder: str | Path, fingerprint: str, source: str) -> Corpus:
        """A corpus memory-mapped from a store folder (`corpus_store.Writer` made it)."""
        from ragbench.corpus_store import Store

        return cls(Store.open(folder), fingerprint, source)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} documents, source={self.source!r})"

    # -- by id ---------------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Document:
        row = self.store.lookup([key])[0] if isinstance(key, str) else -1
        if row < 0:
            raise KeyError(key)
        return self.at([int(row)])[0]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.store.lookup([key])[0] >= 0)

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Each id's row (position in file order), -1 for ids the corpus does not have; one vectorised lookup."""
        return self.store.lookup(ids)

    def fetch(self, ids: Iterable[str]) -> dict[str, Document]:
        """The documents the corpus has among `ids`, in the order asked (repeats once): what readers,
        rerankers and judges fetch per query, in one lookup and one Arrow take."""
        wanted = list(dict.fromkeys(ids))
        rows = self.store.lookup(wanted)
        found = [(i, int(r)) for i, r in zip(wanted, rows.tolist(), strict=True) if r >= 0]
        return dict(zip((i for i, _ in found), self.at([r for _, r in found]), strict=True))

    def at(self, rows: Sequence[int]) -> list[Document]:
        """The documents at rows (positions in file order)."""
        return _documents(self.store.take(rows, _FIELDS))

    def id_at(self, rows: Sequence[int]) -> list[str]:
        """The ids of rows (positions in file order)."""
        return self.store.take(rows, ("id",))["id"]

    # -- streaming: what stages that walk the whole corpus use -----------------------------------------
    def __iter__(self) -> Iterator[str]:
        for cols in self.store.columns(("id",), size=4096):
            yield from cols["id"]

    def __len__(self) -> int:
        return len(self.store)

    def batches(self, size: int = 1024, start: int = 0, stop: int | None = None) -> Iterator[list[Document]]:
        """Rows `start`..`stop` (file order) as lists of `size` documents (the last may be shorter)."""
        for cols in self.store.columns(_FIELDS, start, stop, size):
            yield _documents(cols)

    def texts(self, fields: tuple[str, ...] = ("title", "text"), start: int = 0,
              stop: int | None = None) -> Iterator[str]:
        """Each row's indexed text (`Document.contents(fields)`), in file order."""
        if not set(fields) <= {"title", "text"}:  # extra fields: decoded per document
            for batch in self.batches(start=start, stop=stop):
                yield from (d.contents(fields) for d in batch)
            return
        names = tuple(dict.fromkeys(fields))
        for cols in self.store.columns(names, start, stop, 1024):
            for values in zip(*(cols[f] for f in fields), strict=True):
                yield " ".join(v for v in values if v)


_FIELDS = ("id", "title", "text", "extra")


def _documents(cols: dict[str, list[Any]]) -> list[Document]:
    return [Document(i, text or "", title or "", json.loads(extra) if extra else {})
            for i, title, text, extra in zip(cols["id"], cols["title"], cols["text"], cols["extra"], strict=True)]


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

    def same_up_to_ties(self, other: Ranking, tol: float) -> bool:
        """The same list up to ties: scores equal rank by rank within `tol`, and a document in one list only ties
        the last score (so two engines that order or cut ties differently, or round scores, still agree)."""
        if len(self) != len(other) or any(abs(a - b) > tol for a, b in zip(self.scores, other.scores, strict=True)):
            return False
        mine, theirs = dict(zip(self.docids, self.scores, strict=True)), dict(zip(other.docids, other.scores,
                                                                                  strict=True))
        return (all(abs(mine[d] - self.scores[-1]) <= tol for d in mine.keys() - theirs.keys())
                and all(abs(theirs[d] - other.scores[-1]) <= tol for d in theirs.keys() - mine.keys()))

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


@dataclass(slots=True)
class SearchTrace:
    """One query's multi-step search: the ranking it accumulated and, per step, the queries the LLM wrote,
    what each found and which documents were new (multi_step)."""

    qid: str
    docids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    # {step, queries, found: [[doc ids] per query], new: [doc ids], prompt, output}
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ranking(self) -> Ranking:
        return Ranking(self.qid, self.docids, self.scores)

    def to_json(self) -> dict[str, Any]:
        return {"query_id": self.qid, "docids": self.docids, "scores": self.scores, "steps": self.steps}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SearchTrace:
        return cls(d["query_id"], d.get("docids", []), d.get("scores", []), d.get("steps", []))
