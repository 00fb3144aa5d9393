"""A sparse inverted index shared by learned-sparse retrievers (SPLADE, PromptReps).

Source and deviations: docs/methods.md, "Sparse index (learned sparse retrievers)".

Documents are sparse vectors over a model's vocabulary (term id -> weight). They are encoded
once, in parts of fixed rows saved as they finish, in this process or by a Ray actor pool
(sparse_encoding.py, on the shared resumable protocol of encoding.py: an interrupted encoding
encodes only the parts not on disk), and stored as one scipy CSR matrix (`docs.npz`, N x V).
A query's score for a document is the dot product of their vectors.

Engines (`engine:`):
- scipy (default): the matrix is transposed into postings (V x N) and a batch of queries is
  scored with one sparse product, which touches only the postings of the query's terms.
  Query batches are sized so that no batch materialises more than ~16M scores, documents are
  split in blocks of 2**20, and each query keeps a running top-k (argpartition) across blocks;
  no dense N x Q matrix is ever built.
- seismic: Seismic's approximate index (seismic_index.py), built from the same matrix.
- lucene: an Anserini impact index (JsonVectorCollection, `-impact -pretokenized`, the term
  strings of the vocabulary as tokens) searched with SimpleImpactSearcher. Impacts are
  integers, so float weights are quantised as round(100 * w) on both sides (scores are divided
  by 100**2 to stay on the float scale); integer weights (PromptReps) are indexed as they are.
  It is built from the same cached matrix, so switching engines does not re-encode.

Ties: every engine returns all documents tied with the k-th score and Ranking.from_scores
breaks ties by document id, so the rankings do not depend on the engine's internal order.
"""

from __future__ import annotations

import json
import tempfile
from abc import abstractmethod
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from pydantic import Field, model_serializer, model_validator
from scipy import sparse

from ragbench.cache import make_key
from ragbench.retrievers.base import Retriever
from ragbench.retrievers.hits import Hits, IdHits, hits_by_id
from ragbench.retrievers.seismic_index import SeismicOptions, SeismicSparseIndex
from ragbench.retrievers.sparse_encoding import DocumentEncoder, Encoded, encode_corpus
from ragbench.stage import EXECUTION, StageOptions
from ragbench.types import Corpus, Query, Ranking, TaskData

#: scores materialised per query batch and document block (float32 + int32 index each)
SCORE_BUDGET = 1 << 24
DOC_BLOCK = 1 << 20
#: integer quantisation of float weights for the Lucene impact index
LUCENE_SCALE = 100


def to_csr(rows: Sequence[dict[int, float]] | Any, vocab_size: int) -> sparse.csr_matrix:
    """Rows given as {term id: weight} dicts, or a torch sparse/dense tensor, -> float32 CSR."""
    if hasattr(rows, "is_sparse") or hasattr(rows, "layout"):  # a torch tensor
        import torch

        t = rows.detach().to("cpu")
        if t.is_sparse:
            t = t.coalesce()
            idx, val = t.indices().numpy(), t.values().to(torch.float32).numpy()
            m = sparse.csr_matrix((val, (idx[0], idx[1])), shape=(t.shape[0], vocab_size), dtype=np.float32)
        else:
            m = sparse.csr_matrix(t.to(torch.float32).numpy())
    else:
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for row in rows:
            indices.extend(row.keys())
            data.extend(row.values())
            indptr.append(len(indices))
        m = sparse.csr_matrix((np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int32),
                               np.asarray(indptr, dtype=np.int64)), shape=(len(indptr) - 1, vocab_size))
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    return m


def top_k_with_ties(rows: np.ndarray, scores: np.ndarray, k: int) -> Hits:
    """The k best (row, score) pairs plus every pair tied with the k-th score."""
    if len(scores) <= k:
        return rows, scores
    kth = -np.partition(-scores, k - 1)[k - 1]
    keep = scores >= kth
    return rows[keep], scores[keep]


# ----------------------------------------------------------------------------- engines
class SparseIndex(Protocol):
    """What a sparse retriever asks of its engine."""

    def search(self, queries: sparse.csr_matrix, qids: list[str], k: int) -> IdHits: ...


class ScipySparseIndex:
    """Exact top-k by sparse dot product over an in-memory inverted index."""

    def __init__(self, matrix: sparse.csr_matrix, corpus: Corpus, block_docs: int = DOC_BLOCK,
                 budget: int = SCORE_BUDGET):
        matrix = matrix.tocsr()
        self.corpus = corpus
        self.n_docs, self.vocab_size = matrix.shape
        self.block_docs = max(1, min(block_docs, self.n_docs))
        self.query_batch = max(1, budget // self.block_docs)
        # postings: one V x B CSR per block of documents (row t = the documents holding term t)
        self.blocks = [(start, matrix[start:start + self.block_docs].T.tocsr())
                       for start in range(0, self.n_docs, self.block_docs)]

    def search(self, queries: sparse.csr_matrix, qids: list[str], k: int) -> IdHits:
        return hits_by_id(self.corpus, qids, self.search_rows(queries, k))

    def search_rows(self, queries: sparse.csr_matrix, k: int) -> list[Hits]:
        """Each query's top k (plus ties) as corpus rows and scores."""
        queries = queries.tocsr().astype(np.float32)
        out: list[Hits] = []
        empty: Hits = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        for qs in range(0, queries.shape[0], self.query_batch):
            batch = queries[qs:qs + self.query_batch]
            best: list[Hits] = [empty] * batch.shape[0]
            for start, postings in self.blocks:
                scores = (batch @ postings).tocsr()  # b x B, only documents sharing a term
                for i in range(batch.shape[0]):
                    lo, hi = scores.indptr[i], scores.indptr[i + 1]
                    if lo == hi:
                        continue
                    vals = scores.data[lo:hi]
                    pos = vals > 0
                    rows = scores.indices[lo:hi][pos].astype(np.int64) + start
                    rows, vals = top_k_with_ties(rows, vals[pos], k)
                    if len(best[i][0]):
                        rows, vals = top_k_with_ties(np.concatenate([best[i][0], rows]),
                                                     np.concatenate([best[i][1], vals]), k)
                    best[i] = (rows, vals)
            out.extend(best)
        return out


class LuceneImpactIndex:
    """Anserini impact index over the same vectors (integer weights, term strings as tokens)."""

    def __init__(self, stage: Retriever, vectors_dir: Path, corpus: Corpus, terms: list[str], threads: int):
        from ragbench._java import start_jvm

        start_jvm()
        from jnius import autoclass

        meta = json.loads((vectors_dir / "meta.json").read_text())
        self.scale = 1 if meta["integer"] else LUCENE_SCALE
        self.terms, self.threads = terms, threads
        key = make_key("lucene-impact", vectors_dir.name, self.scale, make_key(terms), version("pyserini"))
        n_docs = len(corpus)

        def build(tmp: Path) -> None:
            matrix = sparse.load_npz(vectors_dir / "docs.npz").tocsr()
            with tempfile.TemporaryDirectory(prefix="ragbench-impact-", dir=tmp.parent) as inp:
                with open(Path(inp) / "docs.jsonl", "w", encoding="utf-8") as f:
                    for start in range(0, n_docs, DOC_BLOCK):
                        stop = min(start + DOC_BLOCK, n_docs)
                        for i, doc_id in enumerate(corpus.id_at(list(range(start, stop))), start):
                            lo, hi = matrix.indptr[i], matrix.indptr[i + 1]
                            vector = self._quantise(matrix.indices[lo:hi], matrix.data[lo:hi])
                            f.write(json.dumps({"id": doc_id, "contents": "", "vector": vector}) + "\n")
                index_collection = autoclass("io.anserini.index.IndexCollection")
                with stage.env.reporter.task("lucene: building impact index", n_docs, "docs") as advance:
                    index_collection.main(["-collection", "JsonVectorCollection", "-input", inp, "-index", str(tmp),
                                           "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized",
                                           "-threads", str(max(1, threads)), "-memoryBuffer", "64", "-quiet"])
                    advance(n_docs)
            (tmp / "ragbench.json").write_text(json.dumps({"docs": n_docs, "scale": self.scale}))

        path = stage.artifact_dir(key, build)
        self.searcher = autoclass("io.anserini.search.SimpleImpactSearcher")(str(path))
        self._map, self._int = autoclass("java.util.HashMap"), autoclass("java.lang.Integer")
        self._list = autoclass("java.util.ArrayList")

    def _quantise(self, indices: np.ndarray, weights: np.ndarray) -> dict[str, int]:
        q = np.rint(weights * self.scale).astype(np.int64)
        return {self.terms[t]: int(w) for t, w in zip(indices, q, strict=True) if w > 0}

    def search(self, queries: sparse.csr_matrix, qids: list[str], k: int) -> IdHits:
        queries = queries.tocsr()
        jqueries, jqids, out = self._list(), self._list(), {}
        for i, qid in enumerate(qids):
            lo, hi = queries.indptr[i], queries.indptr[i + 1]
            vector = self._quantise(queries.indices[lo:hi], queries.data[lo:hi])
            out[qid] = []
            if not vector:
                continue
            jq = self._map()
            for term, w in vector.items():
                jq.put(term, self._int(w))
            jqueries.add(jq)
            jqids.add(qid)
        if jqids.size():
            results = self.searcher.batch_search(jqueries, jqids, int(k), int(self.threads))
            for entry in results.entrySet().toArray():
                # impacts and query weights are integers, so is their dot product: Lucene's float
                # accumulation can be off by a few ulps, which would break ties arbitrarily
                out[entry.getKey()] = [(h.docid, round(h.score) / self.scale ** 2) for h in entry.getValue()]
        return out


def lucene_terms(tokens: list[str]) -> list[str]:
    """Vocabulary entries as whitespace-free, unique index terms (Anserini splits on whitespace)."""
    out = []
    for i, t in enumerate(tokens):
        out.append(t if t and not any(c.isspace() for c in t) else f"__tok{i}__")
    return out


# ----------------------------------------------------------------------------- the stage base
class SparseOptions(StageOptions):
    engine: Literal["scipy", "lucene", "seismic"] = Field(
        "scipy", description="scipy (exact, in-process sparse product) | lucene (Anserini impact index via "
                             "pyserini) | seismic (approximate, pyseismic-lsr)")
    seismic: SeismicOptions | None = Field(None, description="engine seismic: its index and search knobs (default: "
                                                             "the authors' MS MARCO setting, postings scaled to "
                                                             "the collection)")
    fields: tuple[Literal["title", "text"], ...] = Field(
        ("title", "text"), min_length=1, description="document fields encoded, joined by a space")
    top_k: int = Field(1000, ge=1, description="documents returned per query")
    batch_size: int = Field(32, ge=1, json_schema_extra=EXECUTION, description="texts per encoder forward pass")
    device: str = Field("cpu", json_schema_extra=EXECUTION, description="torch device for the encoder")
    threads: int = Field(1, ge=1, json_schema_extra=EXECUTION, description="search threads (lucene, seismic)")

    @model_validator(mode="before")
    @classmethod
    def _seismic_defaults(cls, data: Any) -> Any:
        """engine: seismic without a `seismic:` block gets the default knobs, spelt out so they are in the key."""
        if isinstance(data, dict) and data.get("engine") == "seismic" and data.get("seismic") is None:
            return {**data, "seismic": {}}
        return data

    @model_serializer(mode="wrap")
    def _no_empty_seismic(self, handler: Any) -> dict[str, Any]:
        """Other engines leave `seismic` out: their cache keys stay what they were before it existed."""
        out = handler(self)
        if out.get("seismic") is None:
            out.pop("seismic", None)
        return out


class SparseRetriever(Retriever):
    """Encode the corpus once into the sparse index, then score query vectors against it.

    Subclasses provide the encoder: `load_encoder`, `encoder_key` (everything that changes the
    document vectors), `vocab` (term strings by id), `document_encoder` (loaded from the options
    alone, so that a Ray actor can load it), `encode_queries`.
    """

    options: SparseOptions
    #: documents per part while encoding the corpus (the unit of resume and of work on Ray)
    chunk_docs: ClassVar[int] = 1024

    @abstractmethod
    def load_encoder(self) -> None: ...

    @abstractmethod
    def encoder_key(self) -> Any: ...

    @abstractmethod
    def vocab(self) -> list[str]: ...

    @classmethod
    @abstractmethod
    def document_encoder(cls, options: Any) -> Callable[[list[str]], Encoded]:
        """The corpus's encoder, loaded from the options alone (in this process or a Ray actor)."""

    def encode_documents(self, texts: list[str]) -> Encoded:
        return DocumentEncoder(type(self), self.options)(texts)

    @abstractmethod
    def encode_queries(self, texts: list[str]) -> Encoded: ...

    def index(self, task: TaskData) -> None:
        assert task.corpus is not None
        o = self.options
        self.load_encoder()
        self.corpus = task.corpus
        key = make_key("sparse-vectors", type(self).__name__, self.version, self.encoder_key(), o.fields,
                       task.corpus.fingerprint)
        vocab = self.vocab()
        self.vectors_dir = encode_corpus(self, key, task.corpus, o.fields, DocumentEncoder(type(self), o), len(vocab),
                                         o.batch_size, self.chunk_docs,
                                         f"{type(self).__name__.lower()}: encoding corpus", o.device)
        self.meta = json.loads((self.vectors_dir / "meta.json").read_text())
        dense = self.vectors_dir / "dense.npy"
        self.doc_dense = np.load(dense, mmap_mode="r") if dense.exists() else None
        if o.engine == "lucene":
            self.engine: SparseIndex = LuceneImpactIndex(
                self, self.vectors_dir, task.corpus, lucene_terms(vocab), o.threads)
        elif o.engine == "seismic":
            assert o.seismic is not None
            self.engine = SeismicSparseIndex(self, self.vectors_dir, task.corpus, o.seismic, o.threads)
        else:
            self.engine = ScipySparseIndex(sparse.load_npz(self.vectors_dir / "docs.npz"), task.corpus)

    def sparse_search(self, queries: list[Query], q_sparse: sparse.csr_matrix, k: int) -> dict[str, Ranking]:
        hits = self.engine.search(q_sparse, [q.id for q in queries], k)
        return {q.id: Ranking.from_scores(q.id, hits[q.id], k) for q in queries}

    def search(self, queries: list[Query]) -> dict[str, Ranking]:
        q_sparse, _ = self.encode_queries([q.text for q in queries])
        return self.sparse_search(queries, q_sparse, min(self.options.top_k, len(self.corpus)))

    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"engine": self.options.engine}
        if self.options.engine == "lucene":
            from ragbench._java import java_version

            ident.update({"pyserini": version("pyserini"), "java": java_version()})
        elif self.options.engine == "seismic":
            assert isinstance(self.engine, SeismicSparseIndex)
            ident.update({"pyseismic-lsr": version("pyseismic-lsr"), "n_postings": self.engine.n_postings})
        else:
            ident["scipy"] = version("scipy")
        return ident

