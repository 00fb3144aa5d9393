"""`type: dense`: retrieval with any sentence-transformers bi-encoder.

Defaults reproduce MTEB/BEIR's setup for all-MiniLM-L6-v2: title + " " + text per document,
the model's own max_seq_length (256), L2-normalised embeddings and cosine (inner product).

The corpus matrix is encoded once per (model identity incl. weights hash, document prompt,
effective max_seq_length, normalize, chunking, fields, storage dtype, corpus fingerprint) and kept
in the cache, in resumable parts of `checkpoint_every` batches (dense_encoder.py, encoding.py;
in this process, or on a Ray actor pool with `--executor ray`); it is searched exactly or
through faiss (vector_search.py). With `chunking`, rows are token windows and
a doc's score aggregates its chunks' (maxp / firstp / mean): exactly with `search: exact`; with
faiss over the docs of the `chunking.depth` best chunks (default 4 x top_k), each rescored over all
its chunks, so maxp is exact up to the index's approximation, while firstp and mean can miss a doc
none of whose chunks reached the top `depth`, and fewer than top_k docs come back when the top
chunks belong to fewer docs (docs/methods.md, "Dense retrieval and MaxP chunking").
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ragbench.cache import make_key
from ragbench.models import ResolvedModel, resolve, resolve_device
from ragbench.retrievers import dense_encoder
from ragbench.retrievers.base import Retriever
from ragbench.retrievers.vector_search import VectorIndex, faiss_index
from ragbench.stage import EXECUTION, StageOptions
from ragbench.types import Corpus, Query, Ranking, TaskData


class ChunkingOptions(StageOptions):
    size: int = Field(ge=1, description="tokens per chunk (the model's tokenizer, special tokens excluded)")
    stride: int | None = Field(None, ge=1, description="tokens between chunk starts; default: size (no overlap)")
    depth: int | None = Field(
        None, ge=1, description="faiss only: chunks retrieved per query before aggregating (default 4 x top_k)")

    @model_validator(mode="after")
    def _stride(self) -> ChunkingOptions:
        if self.stride is not None and self.stride > self.size:
            raise ValueError(f"stride ({self.stride}) larger than size ({self.size}) would skip text")
        return self


class HNSWOptions(StageOptions):
    m: int = Field(32, ge=2, description="graph neighbours per node (faiss M)")
    ef_construction: int = Field(200, ge=1, description="candidate list while building")
    ef_search: int = Field(256, ge=1,
                           description="candidate list while searching (raised to the search depth if lower)")


class DenseOptions(StageOptions):
    model: str = Field("all-MiniLM-L6-v2",
                       description="sentence-transformers model: bundled name, local path or Hub id")
    query_prefix: str = Field("", description="text put before each query (e5 'query: ', bge instructions)")
    document_prefix: str = Field("", description="text put before each document (e5 'passage: ')")
    query_prompt_name: str | None = Field(None, description="a prompt from the model's config, for queries")
    document_prompt_name: str | None = Field(None, description="a prompt from the model's config, for documents")
    max_length: int | None = Field(None, ge=1, description="override the model's max_seq_length (tokens)")
    batch_size: int = Field(64, ge=1, json_schema_extra=EXECUTION, description="texts per encoder batch")
    checkpoint_every: int = Field(16, ge=1, json_schema_extra=EXECUTION,
                                  description="batches per corpus-encoding part (the unit of resume and of Ray work)")
    normalize: bool = Field(True, description="L2-normalise embeddings (inner product = cosine)")
    fields: tuple[Literal["title", "text"], ...] = Field(("title", "text"), min_length=1,
                                                         description="document fields encoded, joined by a space")
    top_k: int = Field(1000, ge=1, description="documents returned per query")
    search: Literal["exact", "faiss_flat", "faiss_hnsw"] = Field("exact", description="exact | faiss_flat | faiss_hnsw")
    hnsw: HNSWOptions = Field(default_factory=HNSWOptions,
                              description="faiss_hnsw graph: {m, ef_construction, ef_search}")
    chunking: ChunkingOptions | None = Field(
        None, description="split documents into windows of model tokens {size, stride, depth}")
    aggregate: Literal["maxp", "firstp", "mean"] = Field("maxp",
                                                         description="chunk scores -> doc score (with chunking)")
    device: str = Field("cpu", json_schema_extra=EXECUTION,
                        description="cpu, cuda, cuda:1, mps, or auto (cuda when available)")
    dtype: Literal["float32", "float16"] = Field("float32", description="storage of the corpus matrix")

    @model_validator(mode="after")
    def _prompts(self) -> DenseOptions:
        for side in ("query", "document"):
            if getattr(self, f"{side}_prefix") and getattr(self, f"{side}_prompt_name"):
                raise ValueError(f"give {side}_prefix or {side}_prompt_name, not both")
        return self


class Dense(Retriever):
    Options = DenseOptions
    version = "1"
    options: DenseOptions
    #: rows of the corpus matrix scored per block in exact search (tests lower it)
    block_rows: int = 50_000

    # -- model ------------------------------------------------------------------------------
    @property
    def resolved(self) -> ResolvedModel:
        if not hasattr(self, "_resolved"):
            self._resolved = resolve(self.options.model)
        return self._resolved

    @property
    def model(self) -> Any:
        """The SentenceTransformer, shared with every stage of this process that loads the same weights."""
        if not hasattr(self, "_model"):
            o = self.options
            self._model = dense_encoder.sentence_transformer(o.model, self.resolved, o.device, o.max_length)
        return self._model

    def _prompt(self, side: str) -> str | None:
        """The text put before `side`'s inputs, resolved here so that it is part of the cache key."""
        o = self.options
        return dense_encoder.prompt(self.model, side, getattr(o, f"{side}_prefix"), getattr(o, f"{side}_prompt_name"))

    def _dimension(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        dim = get()
        return int(dim) if dim else int(self._encode_documents([""]).shape[1])

    def _encode(self, texts: list[str], prompt: str | None) -> np.ndarray:
        return dense_encoder.encode(self.model, texts, prompt, self.options.batch_size, self.options.normalize)

    def _encode_documents(self, texts: list[str]) -> np.ndarray:
        return self.document_model()(texts)

    def document_model(self) -> dense_encoder.DenseModel:
        """The encoder of corpus rows, as a picklable description: a Ray actor loads it from this."""
        o = self.options
        return dense_encoder.DenseModel(o.model, self.resolved, o.device, o.max_length, self._prompt("document"),
                                        o.batch_size, o.normalize)

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self._prompt("query"))

    # -- index ------------------------------------------------------------------------------
    def embeddings_key(self, task: TaskData) -> str:
        assert task.corpus is not None
        o = self.options
        ident = self.resolved.identity()
        model = {k: ident.get(k) for k in ("path", "source", "gguf_file", "weights_sha256")}
        chunking = None if o.chunking is None else (o.chunking.size, o.chunking.stride or o.chunking.size)
        return make_key("dense-embeddings", model, self._prompt("document"), int(self.model.max_seq_length),
                        o.normalize, chunking, o.fields, o.dtype, task.corpus.fingerprint, self.version)

    def index(self, task: TaskData) -> None:
        assert task.corpus is not None
        o = self.options
        self.corpus = task.corpus
        n_docs = len(task.corpus)
        key = self.embeddings_key(task)
        path = self.embeddings_path = self._corpus_encoding(task.corpus, key).run()
        self.emb = np.load(path / "embeddings.npy", mmap_mode="r")
        self.doc_offsets = None if o.chunking is None else np.load(path / "doc_offsets.npy")
        if len(self.emb) != (n_docs if self.doc_offsets is None else int(self.doc_offsets[-1])):
            raise RuntimeError(f"corrupt dense cache entry {path}: {len(self.emb)} rows")
        hnsw = (o.hnsw.m, o.hnsw.ef_construction, o.hnsw.ef_search) if o.search == "faiss_hnsw" else None
        index = None if o.search == "exact" else faiss_index(self.env, key, self.emb, o.search, hnsw, self.block_rows)
        self.vectors = VectorIndex(self.emb, n_docs, self.doc_offsets, o.aggregate, index, hnsw[2] if hnsw else None,
                                   executor=self.env.executor)

    def _corpus_encoding(self, corpus: Corpus, key: str) -> dense_encoder.DenseCorpusEncoding:
        o = self.options
        meta = {"model": self.resolved.identity(), "max_seq_length": int(self.model.max_seq_length),
                "document_prompt": self._prompt("document"), "normalize": o.normalize, "fields": list(o.fields),
                "chunking": None if o.chunking is None else o.chunking.model_dump()}
        return dense_encoder.DenseCorpusEncoding(
            self.env, key, o.batch_size * o.checkpoint_every, f"{self.env.stage_id}: encoding corpus ({o.model})",
            corpus, o.fields, self.document_model(), self._dimension, o.dtype,
            None if o.chunking is None else lambda: self._plan_chunks(corpus), meta, o.device)

    def _plan_chunks(self, corpus: Corpus) -> dense_encoder.Plan:
        """The chunk plan, with a warning when a chunk and its prompt would not fit the model."""
        assert self.options.chunking is not None
        size = self.options.chunking.size
        tok = dense_encoder.fast_tokenizer(self.model)
        prompt = self._prompt("document") or ""
        overhead = len(tok(prompt, add_special_tokens=True)["input_ids"]) if prompt else 2
        if size + overhead > self.model.max_seq_length:
            self.env.reporter.warn(f"{self.env.stage_id}: chunks of {size} tokens + {overhead} prompt/special tokens "
                                   f"exceed max_seq_length {self.model.max_seq_length}: the encoder truncates them")
        texts = corpus.texts(self.options.fields)
        return dense_encoder.plan_chunks(tok, texts, len(corpus), size, self.options.chunking.stride or size)

    # -- search -----------------------------------------------------------------------------
    def search(self, queries: list[Query]) -> dict[str, Ranking]:
        if not queries:
            return {}
        o = self.options
        k = min(o.top_k, len(self.corpus))
        q = np.ascontiguousarray(self._encode_queries([x.text for x in queries]), dtype=np.float32)
        depth = (o.chunking.depth if o.chunking is not None else None) or 4 * o.top_k
        ids, scores = self.vectors.search(q, k, self.block_rows, depth)
        keep = ids >= 0
        doc_ids = iter(self.corpus.id_at([int(i) for i in ids[keep]]))  # one lookup for the whole batch
        out = {}
        for query, i_row, s_row in zip(queries, keep, scores, strict=True):
            hits = [(next(doc_ids), float(s)) for s in s_row[i_row]]
            out[query.id] = Ranking.from_scores(query.id, hits, k)
        return out

    def identity(self) -> dict[str, Any]:
        import torch

        ident: dict[str, Any] = {"model": self.resolved.identity(),
                                 "sentence-transformers": version("sentence-transformers"),
                                 "torch": str(torch.__version__), "device": resolve_device(self.options.device)}
        if hasattr(self, "_model"):
            ident["max_seq_length"] = int(self._model.max_seq_length)
        if self.options.search != "exact":
            import faiss

            ident["faiss"] = faiss.__version__
        return ident
