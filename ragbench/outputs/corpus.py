"""The output of a corpus stage (long_units, passages): the task as later stages see it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ragbench.metrics.spec import DOC_SUFFIX
from ragbench.outputs.base import Output
from ragbench.types import Qrels, Ranking, TaskData


@dataclass(frozen=True)
class DocumentLevel:
    """How rankings over a derived corpus of pieces (passages) are also scored over the task's own documents.

    MaxP (Dai & Callan 2019): a document ranks where its best piece ranks, i.e. at its first occurrence in
    the ranking, with that piece's score; the document ranking is scored against the task's original qrels.
    Its metrics are the requested names with SUFFIX (`R@10[doc]`), next to the same names over pieces.
    """

    SUFFIX: ClassVar[str] = DOC_SUFFIX
    DESCRIPTION: ClassVar[str] = ("metrics named M over passages against the mapped qrels; M[doc] over documents "
                                  "(MaxP: a document at its best passage) against the task's qrels")

    qrels: Qrels  # the task's document qrels
    document_of: Callable[[str], str | list[str]]  # a piece's id -> its document's id (a unit's: its documents')

    def rank(self, ranking: Ranking) -> Ranking:
        """The document ranking a piece ranking makes: each document once, at its first (best) piece (a unit
        of several documents ranks them all at its score, in member order)."""
        seen: dict[str, float] = {}
        for pid, score in zip(ranking.docids, ranking.scores, strict=True):
            for doc in self.documents(pid):
                seen.setdefault(doc, score)
        return Ranking(ranking.qid, list(seen), list(seen.values()))

    def through(self, members: Callable[[str], list[str]]) -> DocumentLevel:
        """The same documents for a corpus derived from these pieces (units of consecutive passages):
        a derived document's documents are its members'."""

        def documents(uid: str) -> list[str]:
            return list(dict.fromkeys(d for m in members(uid) for d in self.documents(m)))

        return DocumentLevel(self.qrels, documents)

    def documents(self, piece: str) -> list[str]:
        """The documents one piece stands for: a passage's one, a unit's several."""
        docs = self.document_of(piece)
        return [docs] if isinstance(docs, str) else docs


class DerivedCorpus(Output):
    """A derived corpus with the task's qrels mapped onto it, and how it was made.

    Stages that name it with `corpus:` rank `view` in place of the task; its statistics go to
    metrics.json `corpora`.
    """

    label = "a corpus"
    section = "corpora"

    def __init__(self, view: TaskData, stats: dict[str, Any] | None = None, built: bool = True,
                 documents: DocumentLevel | None = None, members: Callable[[str], list[str]] | None = None):
        super().__init__({})
        self.view = view  # the task with the derived corpus and its qrels (fingerprint includes the derivation)
        self.stats = stats or {}
        self.built = built  # made by this run (False: read from the cache)
        self.documents = documents  # pieces of the task's documents (passages): rankings also scored over documents
        self.members = members  # a derived document's documents in the corpus it was made from (units), if any

    def summary(self, task: TaskData) -> dict[str, Any]:
        return self.stats
