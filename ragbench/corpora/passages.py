"""DPR-style passages (docs/methods.md, "Passages (DPR-style splitting)"): long documents become short,
retrievable passages that point back to their document.

`unit: words` is DPR's rule (Karpukhin et al. 2020): a document's text split on whitespace into windows of
`size` words (100), `stride` words apart (default `size`: disjoint), joined by single spaces; `unit: tokens`
counts `size` tokens of a tokenizer instead and keeps the original text between the window's first and last
token. Windows start at 0, stride, 2*stride, ... and stop after the first one that reaches the end, so the
last may be shorter and no window lies wholly inside the previous one. A document without text is one
passage with an empty text, so every document stays retrievable. Each passage keeps its document's title
(DPR indexes title and passage together); `size` counts the text only.

A passage's id is `{doc_id}#{n}` (n from 0), its extra `{"doc": doc_id, "start": word or token offset}`.
The passages are streamed from the source corpus into an Arrow store (`corpus_store.Writer`), cached as an
artifact keyed by the source corpus' fingerprint, the splitting options, the tokenizer's hash and VERSION;
that key is the passage corpus' fingerprint. `counts.npy` holds each source row's number of passages.

The task's qrels are mapped onto passages: every passage of a judged document inherits its grade
(`relevant: document`), or only those whose text contains one of the query's gold answers (`relevant:
answer`, DPR's `has_answer`). Rankings over passages are also scored over documents (MaxP, `DocumentLevel`).
"""

from __future__ import annotations

import dataclasses
import json
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ragbench import corpus_store
from ragbench.cache import Cache, make_key
from ragbench.corpora import distribution
from ragbench.errors import RagbenchError
from ragbench.llm.loading import DEFAULT_MODEL, load_tokenizer
from ragbench.metrics.answers import gold_answers, has_answer, recall_text
from ragbench.outputs import DerivedCorpus
from ragbench.outputs.corpus import DocumentLevel
from ragbench.progress import Reporter
from ragbench.stage import CorpusStage, StageOptions
from ragbench.types import Corpus, Document, Qrels, TaskData

#: Bump when the same options would now produce different passages: it invalidates cached passages.
VERSION = "1"
SEP = "#"
_BATCH = 1000  # documents per tokenizer call


class PassagesOptions(StageOptions):
    """How documents are split, and which passages of a relevant document are relevant."""

    unit: Literal["words", "tokens"] = Field("words", description="words (DPR: whitespace words) | tokens")
    size: int = Field(100, ge=1, description="words or tokens of text per passage (DPR: 100 words)")
    stride: int | None = Field(None, ge=1, description="distance between window starts (default size: disjoint)")
    tokenizer: str = Field(DEFAULT_MODEL, description="unit: tokens: bundled name, local folder or Hub id")
    relevant: Literal["document", "answer"] = Field(
        "document", description="document: a passage inherits its document's grade | "
                                "answer: only passages whose text contains a gold answer")

    @model_validator(mode="after")
    def _stride_fits(self) -> PassagesOptions:
        if self.stride is not None and self.stride > self.size:
            raise ValueError(f"stride {self.stride} is larger than size {self.size}: text would be skipped")
        return self

    @property
    def step(self) -> int:
        return self.stride or self.size

    def splitting(self) -> dict[str, Any]:
        """What the passages depend on (not `relevant`, which changes only the qrels)."""
        out: dict[str, Any] = {"unit": self.unit, "size": self.size, "stride": self.step}
        if self.unit == "tokens":
            out["tokenizer"] = self.tokenizer
        return out


@dataclass(frozen=True)
class PassageStats:
    unit: str
    size: int
    stride: int
    documents: int
    passages: int
    lengths: dict[str, float]  # min, median, mean, max passage length in units

    def summary(self) -> str:
        n = self.lengths
        return (f"passages ({self.size} {self.unit}, stride {self.stride}): {self.documents:,} docs -> "
                f"{self.passages:,} passages; length min {n['min']:.0f} median {n['median']:.0f} "
                f"mean {n['mean']:.1f} max {n['max']:.0f}")


def windows(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """(start, stop) of each window over n units; one empty window when n is 0."""
    out = []
    start = 0
    while True:
        out.append((start, min(start + size, n)))
        if start + size >= n:
            return out
        start += stride


def word_passages(text: str, size: int, stride: int) -> list[tuple[int, int, str]]:
    """(first word, words, text) of each window of whitespace words, joined by single spaces (DPR)."""
    words = text.split()
    return [(a, b - a, " ".join(words[a:b])) for a, b in windows(len(words), size, stride)]


def token_passages(text: str, offsets: Sequence[tuple[int, int]], size: int,
                   stride: int) -> list[tuple[int, int, str]]:
    """(first token, tokens, text) of each window of tokens: the original text from its first token's start
    to its last token's end (`offsets`: each token's character span, from a fast tokenizer)."""
    if not offsets:
        return [(0, 0, "")]
    return [(a, b - a, text[offsets[a][0]:offsets[b - 1][1]].strip()) for a, b in windows(len(offsets), size, stride)]


def document_of(passage_id: str) -> str:
    """The document a passage id points to (document ids may contain the separator; n never does)."""
    return passage_id.rpartition(SEP)[0] or passage_id


def passage_id(doc_id: str, n: int) -> str:
    return f"{doc_id}{SEP}{n}"


def _split(corpus: Corpus, options: PassagesOptions,
           tokenizer: Any) -> Iterator[tuple[Document, list[tuple[int, int, str]]]]:
    """Each source document with its passages, streamed a batch at a time."""
    for batch in corpus.batches(size=_BATCH):
        if options.unit == "words":
            yield from ((d, word_passages(d.text, options.size, options.step)) for d in batch)
            continue
        encoded = tokenizer.backend_tokenizer.encode_batch([d.text for d in batch], add_special_tokens=False)
        for d, e in zip(batch, encoded, strict=True):
            yield d, token_passages(d.text, e.offsets, options.size, options.step)


def passages_key(corpus: Corpus, options: PassagesOptions, tokenizer_hash: str | None) -> str:
    return make_key("passages", corpus.fingerprint, options.splitting(), tokenizer_hash, VERSION)


def _tokenizer(options: PassagesOptions, cache: Cache) -> tuple[Any, str | None]:
    if options.unit == "words":
        return None, None
    tok, tok_hash = load_tokenizer(options.tokenizer, cache.root)
    if not getattr(tok, "is_fast", False):
        raise RagbenchError.at("passages", f"tokenizer '{options.tokenizer}' has no fast (Rust) version, "
                               "which token windows need for character offsets", path="tokenizer")
    return tok, tok_hash


def build_passages(corpus: Corpus, options: PassagesOptions, cache: Cache,
                   reporter: Reporter | None = None) -> tuple[Corpus, PassageStats, np.ndarray, bool]:
    """(the passage corpus, its statistics, each source row's passage count, whether this call built it),
    built once per key.

    Memory: one batch of documents and one record batch of passages, plus a length and a count per row."""
    tokenizer, tok_hash = _tokenizer(options, cache)
    key = passages_key(corpus, options, tok_hash)

    def build(tmp: Path) -> None:
        counts = np.zeros(len(corpus), dtype=np.int32)
        lengths = array("i")
        with ((reporter or Reporter(quiet=True)).task("passages: splitting", len(corpus), "docs") as advance,
              corpus_store.Writer(tmp) as writer):
            for row, (doc, parts) in enumerate(_split(corpus, options, tokenizer)):
                counts[row] = len(parts)
                for n, (start, _, text) in enumerate(parts):
                    extra = json.dumps({"doc": doc.id, "start": start}, ensure_ascii=False)
                    writer.add((passage_id(doc.id, n), doc.title, text, extra))
                lengths.extend(length for _, length, _ in parts)
                advance(1)
            dup = writer.close(source=corpus.fingerprint)
        if dup is not None:
            raise RagbenchError.at(str(corpus.source), f"passage id '{dup[1]}' repeats: document ids are not unique")
        np.save(tmp / "counts.npy", counts)
        sizes = np.frombuffer(lengths, dtype=np.int32) if len(lengths) else np.zeros(0, np.int32)
        stats = PassageStats(options.unit, options.size, options.step, len(corpus), int(counts.sum()),
                             distribution(sizes))
        (tmp / "stats.json").write_text(json.dumps(asdict(stats), indent=2))

    built = not cache.artifact_path(key).exists()
    path = cache.artifact(key, build)
    stats = PassageStats(**json.loads((path / "stats.json").read_text()))
    return Corpus.open(path, key, source=str(path)), stats, np.load(path / "counts.npy"), built


def map_qrels(task: TaskData, passages: Corpus, counts: np.ndarray, relevant: str = "document") -> Qrels:
    """The task's qrels over passage ids: each passage of a judged document gets the document's grade
    (`relevant: answer`: only passages of a relevant document whose text has one of the query's gold answers,
    DPR's has_answer on the text alone). Documents the corpus lacks are dropped, as are queries left empty."""
    assert task.corpus is not None
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    out: Qrels = {}
    golds = {q.id: q for q in task.queries}
    for qid, rels in task.qrels.items():
        dids = list(rels)
        rows = task.corpus.rows(dids)
        mapped: dict[str, int] = {}
        if relevant == "document":
            for did, row in zip(dids, rows.tolist(), strict=True):
                if row >= 0:
                    mapped.update((passage_id(did, n), rels[did]) for n in range(int(counts[row])))
        elif qid in golds:
            answers = gold_answers(golds[qid], task.answers_field)
            keep = [(did, row) for did, row in zip(dids, rows.tolist(), strict=True) if row >= 0 and rels[did] > 0]
            spans = [np.arange(starts[row], starts[row + 1]) for _, row in keep]
            taken = passages.store.take(np.concatenate(spans) if spans else [], ("id", "text"))
            grade = {pid: rels[document_of(pid)] for pid in taken["id"]}
            mapped = {pid: grade[pid] for pid, text in zip(taken["id"], taken["text"], strict=True)
                      if has_answer(recall_text("", text or ""), answers)}
        if mapped:
            out[qid] = mapped
    return out


class Passages(CorpusStage):
    """`type: passages`: a corpus of DPR-style passages; stages that name it with `corpus:` retrieve over it.

    Their rankings are scored over passages (the qrels mapped here) and over the task's documents (MaxP)."""

    Options = PassagesOptions
    options: PassagesOptions
    document_level = True

    def derive(self, task: TaskData) -> DerivedCorpus:
        if task.corpus is None:
            raise RagbenchError.at(f"stage {self.env.stage_id}", "passages needs the task's corpus (give --data)")
        passages, stats, counts, built = build_passages(task.corpus, self.options, self.env.cache,
                                                        self.env.reporter)
        self.env.reporter.log(f"{self.env.stage_id}: {stats.summary()}")
        qrels = map_qrels(task, passages, counts, self.options.relevant)
        view = dataclasses.replace(task, corpus=passages, qrels=qrels,
                                   fingerprint=make_key(task.fingerprint, passages.fingerprint, self.options.relevant))
        summary = {**asdict(stats), "relevant": self.options.relevant, "summary": stats.summary(),
                   "levels": DocumentLevel.DESCRIPTION}
        return DerivedCorpus(view, summary, built, DocumentLevel(task.qrels, document_of))

    def identity(self) -> dict[str, Any]:
        return {"tokenizer": self.options.tokenizer} if self.options.unit == "tokens" else {}
