"""Dense retrieval with any sentence-transformers bi-encoder.

Defaults reproduce MTEB/BEIR's setup for all-MiniLM-L6-v2: title + " " + text per document,
the model's own max_seq_length (256), L2-normalised embeddings and cosine (inner product).

Corpus embeddings
    Encoded once per (model identity incl. weights hash, document prompt, effective
    max_seq_length, normalize, chunking, fields, storage dtype, corpus fingerprint) and kept in
    the cache as a `.npy` matrix opened with mmap. Encoding streams: every `checkpoint_every`
    batches the rows are written into a memmap in a work folder, flushed, and then a small
    progress file is replaced atomically, so an interrupted run resumes at the last checkpoint.
    Each checkpoint's texts go to `SentenceTransformer.encode` in one call (it sorts them by
    length internally and returns them in order). When every row is written the matrix is moved
    into its artifact folder with one rename. Peak memory is one checkpoint of texts and vectors
    plus the pages of the mapped file; the corpus is never held as embeddings in RAM.

Search
    exact       blocks of the mapped matrix times the query batch, with a running top-k per
                query; the full docs x queries score matrix never exists.
    faiss_flat  faiss IndexFlatIP (exhaustive inner product), built from the matrix, cached.
    faiss_hnsw  faiss IndexHNSWFlat with inner product (approximate), cached; `hnsw.ef_search`
                is a search-time setting.

Chunking (LongRAG-style MaxP; docs/methods.md, "Dense retrieval and MaxP chunking")
    `chunking: {size, stride}` counts tokens of the model's own tokenizer (no special tokens).
    Windows of `size` tokens start every `stride` tokens until one reaches the end of the
    document; each chunk is the original text between its first and last token's characters,
    so the encoder re-tokenises the same text. Rows of the matrix are chunks, stored doc by doc
    (`doc_offsets.npy` maps docs to their rows). A doc's score aggregates its chunks' scores:
    maxp = best chunk, firstp = first chunk, mean = mean over all of the doc's chunks.
    With `search: exact` the aggregation is exact over every chunk of every doc. With faiss the
    index returns the `chunking.depth` best chunks (default 4 x top_k); their docs are the
    candidates, and each candidate is then rescored exactly over all its chunks from the matrix.
    maxp is therefore exact up to the index's own approximation (a doc whose best chunk is not in
    the top chunks scores below all that are); firstp and mean can miss a doc none of whose
    chunks reached the top `depth`, and fewer than top_k docs come back when the top chunks
    belong to fewer docs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ragbench.cache import atomic_write, atomic_write_text, make_key
from ragbench.errors import RagbenchError
from ragbench.models import ResolvedModel, resolve
from ragbench.retrievers.base import Retriever
from ragbench.stage import StageOptions
from ragbench.types import Query, Ranking, TaskData


class ChunkingOptions(StageOptions):
    size: int = Field(ge=1, description="tokens per chunk (the model's tokenizer, special tokens excluded)")
    stride: int | None = Field(None, ge=1, description="tokens between chunk starts; default: size (no overlap)")
    depth: int | None = Field(None, ge=1, description="faiss only: chunks retrieved per query before aggregating (default 4 x top_k)")

    @model_validator(mode="after")
    def _stride(self) -> ChunkingOptions:
        if self.stride is not None and self.stride > self.size:
            raise ValueError(f"stride ({self.stride}) larger than size ({self.size}) would skip text")
        return self


class HNSWOptions(StageOptions):
    m: int = Field(32, ge=2, description="graph neighbours per node (faiss M)")
    ef_construction: int = Field(200, ge=1, description="candidate list while building")
    ef_search: int = Field(256, ge=1, description="candidate list while searching (raised to the search depth if lower)")


class DenseOptions(StageOptions):
    model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers model: bundled name, local path or Hub id")
    query_prefix: str = Field("", description="text put before each query (e5 'query: ', bge instructions)")
    document_prefix: str = Field("", description="text put before each document (e5 'passage: ')")
    query_prompt_name: str | None = Field(None, description="a prompt from the model's config, for queries")
    document_prompt_name: str | None = Field(None, description="a prompt from the model's config, for documents")
    max_length: int | None = Field(None, ge=1, description="override the model's max_seq_length (tokens)")
    batch_size: int = Field(64, ge=1, description="texts per encoder batch")
    checkpoint_every: int = Field(16, ge=1, description="batches between corpus-encoding checkpoints (resume granularity)")
    normalize: bool = Field(True, description="L2-normalise embeddings (inner product = cosine)")
    fields: tuple[Literal["title", "text"], ...] = Field(("title", "text"), min_length=1, description="document fields encoded, joined by a space")
    top_k: int = Field(1000, ge=1, description="documents returned per query")
    search: Literal["exact", "faiss_flat", "faiss_hnsw"] = Field("exact", description="exact | faiss_flat | faiss_hnsw")
    hnsw: HNSWOptions = Field(default_factory=HNSWOptions, description="faiss_hnsw graph: {m, ef_construction, ef_search}")
    chunking: ChunkingOptions | None = Field(None, description="split documents into windows of model tokens {size, stride, depth}")
    aggregate: Literal["maxp", "firstp", "mean"] = Field("maxp", description="chunk scores -> doc score (with chunking)")
    device: str = Field("cpu", description="cpu, cuda, cuda:1, mps, or auto (cuda when available)")
    dtype: Literal["float32", "float16"] = Field("float32", description="storage of the corpus matrix")

    @model_validator(mode="after")
    def _prompts(self) -> DenseOptions:
        for side in ("query", "document"):
            if getattr(self, f"{side}_prefix") and getattr(self, f"{side}_prompt_name"):
                raise ValueError(f"give {side}_prefix or {side}_prompt_name, not both")
        return self


# one loaded encoder per (path, device, max_length) per process: stages of later runs reuse it
_MODELS: dict[tuple[str, str, int | None], Any] = {}


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


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

    def _load_model(self) -> Any:
        """The SentenceTransformer, loaded once per process (the one place it is created)."""
        key = (self.resolved.path, resolve_device(self.options.device), self.options.max_length)
        if key not in _MODELS:
            from sentence_transformers import SentenceTransformer

            try:
                from transformers.utils import logging as hf_logging

                bar = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()
            except ImportError:  # pragma: no cover - transformers always comes with sentence-transformers
                hf_logging, bar = None, False
            try:
                model = SentenceTransformer(self.resolved.path, device=key[1])
            except OSError as e:
                raise RagbenchError.at("model", f"cannot load '{self.options.model}' ({self.resolved.source}: {self.resolved.path}): {e}") from e
            finally:
                if hf_logging is not None and bar:
                    hf_logging.enable_progress_bar()
            if self.options.max_length is not None:
                model.max_seq_length = self.options.max_length
            _MODELS[key] = model
        return _MODELS[key]

    @property
    def model(self) -> Any:
        if not hasattr(self, "_model"):
            self._model = self._load_model()
        return self._model

    def _prompt(self, side: str) -> str | None:
        """The text put before `side`'s inputs, resolved here so that it is part of the cache key."""
        prefix = getattr(self.options, f"{side}_prefix")
        name = getattr(self.options, f"{side}_prompt_name")
        prompts = getattr(self.model, "prompts", None) or {}
        if prefix:
            return prefix
        if name is not None:
            if name not in prompts:
                raise RagbenchError.at("model", f"{side}_prompt_name '{name}' is not among the model's prompts ({', '.join(prompts) or 'none'})")
            return prompts[name] or None
        default = getattr(self.model, "default_prompt_name", None)
        return (prompts.get(default) or None) if default else None

    def _dimension(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        dim = get()
        return int(dim) if dim else int(self._encode_documents([""]).shape[1])

    def _encode(self, texts: list[str], prompt: str | None) -> np.ndarray:
        emb = self.model.encode(texts, prompt=prompt, batch_size=self.options.batch_size, normalize_embeddings=self.options.normalize,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32).reshape(len(texts), -1)

    def _encode_documents(self, texts: list[str]) -> np.ndarray:
        """One checkpoint's worth of corpus rows (tests count these calls)."""
        return self._encode(texts, self._prompt("document"))

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self._prompt("query"))

    # -- index ------------------------------------------------------------------------------
    def embeddings_key(self, task: TaskData) -> str:
        assert task.corpus is not None
        o = self.options
        ident = self.resolved.identity()
        model = {k: ident.get(k) for k in ("path", "source", "gguf_file", "weights_sha256")}
        chunking = None if o.chunking is None else (o.chunking.size, o.chunking.stride or o.chunking.size)
        return make_key("dense-embeddings", model, self._prompt("document"), int(self.model.max_seq_length), o.normalize,
                        chunking, o.fields, o.dtype, task.corpus.fingerprint, self.version)

    def index(self, task: TaskData) -> None:
        assert task.corpus is not None
        self.doc_ids = list(task.corpus.docs)
        key = self.embeddings_key(task)
        cache = self.env.cache
        work = cache.root / "work" / key[:2] / key
        final = cache.artifact_path(key)

        def build(tmp: Path) -> None:
            self._encode_corpus(task, work, final, tmp)

        path = self.artifact_dir(key, build)
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        self.embeddings_path = path
        self.emb = np.load(path / "embeddings.npy", mmap_mode="r")
        if self.options.chunking is not None:
            self.doc_offsets = np.load(path / "doc_offsets.npy")
            self.row_doc = np.repeat(np.arange(len(self.doc_ids), dtype=np.int64), np.diff(self.doc_offsets))
        else:
            self.doc_offsets = None
            self.row_doc = None
        if len(self.emb) != (len(self.doc_ids) if self.doc_offsets is None else int(self.doc_offsets[-1])):
            raise RuntimeError(f"corrupt dense cache entry {path}: {len(self.emb)} rows")
        self.faiss_index = self._faiss_index(key) if self.options.search != "exact" else None

    # -- corpus encoding -------------------------------------------------------------------------
    def _plan_chunks(self, task: TaskData) -> tuple[np.ndarray, np.ndarray]:
        """doc_offsets (n_docs + 1) and spans (rows x 2 character offsets into Document.contents)."""
        assert task.corpus is not None and self.options.chunking is not None
        size = self.options.chunking.size
        stride = self.options.chunking.stride or size
        tok = self.model.tokenizer
        if not getattr(tok, "is_fast", False):
            raise RagbenchError.at("chunking", f"chunking needs a fast (Rust) tokenizer for character offsets; {type(tok).__name__} is not one")
        prompt = self._prompt("document") or ""
        overhead = len(tok(prompt, add_special_tokens=True)["input_ids"]) if prompt else 2
        if size + overhead > self.model.max_seq_length:
            self.env.reporter.warn(f"{self.env.stage_id}: chunks of {size} tokens + {overhead} prompt/special tokens exceed max_seq_length "
                                   f"{self.model.max_seq_length}: the encoder truncates them")
        counts = np.zeros(len(self.doc_ids), dtype=np.int64)
        spans: list[tuple[int, int]] = []
        docs = list(task.corpus.docs.values())
        for b in range(0, len(docs), 1000):
            texts = [d.contents(self.options.fields) for d in docs[b:b + 1000]]
            enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False,
                      return_token_type_ids=False, truncation=False, verbose=False)
            for j, offs in enumerate(enc["offset_mapping"]):
                n = len(offs)
                if n == 0:
                    spans.append((0, 0))
                    counts[b + j] = 1
                    continue
                start = 0
                while True:
                    end = min(start + size, n)
                    spans.append((int(offs[start][0]), int(offs[end - 1][1])))
                    counts[b + j] += 1
                    if end >= n:
                        break
                    start += stride
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return offsets, np.asarray(spans, dtype=np.int64).reshape(-1, 2)

    def _row_texts(self, task: TaskData, start: int, plan: tuple[np.ndarray, np.ndarray] | None) -> Iterator[str]:
        """Row texts from row `start` on, in matrix order."""
        assert task.corpus is not None
        docs = iter(task.corpus.docs.values())
        fields = self.options.fields
        if plan is None:
            for i, d in enumerate(docs):
                if i >= start:
                    yield d.contents(fields)
            return
        offsets, spans = plan
        first = int(np.searchsorted(offsets, start, side="right")) - 1
        for i, d in enumerate(docs):
            if i < first:
                continue
            text = d.contents(fields)
            for r in range(max(int(offsets[i]), start), int(offsets[i + 1])):
                yield text[spans[r, 0]:spans[r, 1]]

    def _encode_corpus(self, task: TaskData, work: Path, final: Path, out: Path) -> None:
        """Fill `out` with the finished matrix, resuming the work folder's memmap if one exists."""
        work.mkdir(parents=True, exist_ok=True)
        with _locked(work / ".lock"):
            if final.exists():  # another process finished it while we waited
                return
            chunked = self.options.chunking is not None
            plan = None
            if chunked:
                if (work / "plan.npz").exists():
                    with np.load(work / "plan.npz") as z:
                        plan = (z["doc_offsets"], z["spans"])
                else:
                    plan = self._plan_chunks(task)
                    atomic_write(work / "plan.npz", lambda f: np.savez(f, doc_offsets=plan[0], spans=plan[1]))
            n_rows = len(self.doc_ids) if plan is None else int(plan[0][-1])
            dim = self._dimension()
            dtype = np.dtype(self.options.dtype)
            progress_file, matrix = work / "progress.json", work / "embeddings.npy"
            done = 0
            if progress_file.exists() and matrix.exists():
                progress = json.loads(progress_file.read_text())
                if progress.get("rows") == n_rows and progress.get("dim") == dim and progress.get("dtype") == dtype.name:
                    done = int(progress["done"])
            if done:
                mm = np.load(matrix, mmap_mode="r+")
                self.env.reporter.log(f"{self.env.stage_id}: resuming corpus encoding at row {done:,} of {n_rows:,}")
            else:
                progress_file.unlink(missing_ok=True)
                mm = np.lib.format.open_memmap(matrix, mode="w+", dtype=dtype, shape=(n_rows, dim))
            window = self.options.batch_size * self.options.checkpoint_every
            unit = "chunks" if chunked else "docs"
            texts = self._row_texts(task, done, plan)
            with self.env.reporter.task(f"{self.env.stage_id}: encoding corpus ({self.options.model})", n_rows - done, unit) as advance:
                while done < n_rows:
                    batch = [t for _, t in zip(range(window), texts, strict=False)]
                    if not batch:
                        raise RuntimeError(f"corpus yielded {done} of {n_rows} rows")
                    emb = self._encode_documents(batch)
                    if emb.shape != (len(batch), dim):
                        raise RuntimeError(f"encoder returned {emb.shape} for {len(batch)} texts of dimension {dim}")
                    mm[done:done + len(batch)] = emb
                    mm.flush()  # the rows are on disk before the progress file says so
                    done += len(batch)
                    atomic_write_text(progress_file, json.dumps({"done": done, "rows": n_rows, "dim": dim, "dtype": dtype.name}))
                    advance(len(batch))
            del mm
            meta = {"rows": n_rows, "docs": len(self.doc_ids), "dim": dim, "dtype": dtype.name, "unit": unit,
                    "model": self.resolved.identity(), "max_seq_length": int(self.model.max_seq_length),
                    "document_prompt": self._prompt("document"), "normalize": self.options.normalize,
                    "fields": list(self.options.fields),
                    "chunking": None if self.options.chunking is None else self.options.chunking.model_dump()}
            (out / "meta.json").write_text(json.dumps(meta, indent=2))
            if plan is not None:
                np.save(out / "doc_offsets.npy", plan[0])
                np.save(out / "spans.npy", plan[1])
            os.replace(matrix, out / "embeddings.npy")  # last: the artifact is complete from here on

    # -- faiss ------------------------------------------------------------------------------
    def _faiss_index(self, emb_key: str) -> Any:
        import faiss

        o = self.options
        hnsw = o.search == "faiss_hnsw"
        key = make_key("dense-faiss", emb_key, o.search, (o.hnsw.m, o.hnsw.ef_construction) if hnsw else None, faiss.__version__)

        def build(tmp: Path) -> None:
            dim = self.emb.shape[1]
            if hnsw:
                index = faiss.IndexHNSWFlat(dim, o.hnsw.m, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = o.hnsw.ef_construction
            else:
                index = faiss.IndexFlatIP(dim)
            n = len(self.emb)
            with self.env.reporter.task(f"{self.env.stage_id}: building {o.search}", n, "rows") as advance:
                for a in range(0, n, self.block_rows):
                    block = np.ascontiguousarray(self.emb[a:a + self.block_rows], dtype=np.float32)
                    index.add(block)
                    advance(len(block))
            faiss.write_index(index, str(tmp / "index.faiss"))

        path = self.artifact_dir(key, build)
        index = faiss.read_index(str(path / "index.faiss"))
        if hnsw:
            index.hnsw.efSearch = o.hnsw.ef_search
        return index

    # -- search -----------------------------------------------------------------------------
    def search(self, queries: list[Query]) -> dict[str, Ranking]:
        if not queries:
            return {}
        k = min(self.options.top_k, len(self.doc_ids))
        q = np.ascontiguousarray(self._encode_queries([x.text for x in queries]), dtype=np.float32)
        if self.faiss_index is None:
            ids, scores = self._search_exact(q, k)
        else:
            ids, scores = self._search_faiss(q, k)
        out = {}
        for query, i_row, s_row in zip(queries, ids, scores, strict=True):
            keep = i_row >= 0
            out[query.id] = Ranking.from_scores(query.id, [(self.doc_ids[i], float(s)) for i, s in zip(i_row[keep], s_row[keep], strict=True)], k)
        return out

    def _aggregate(self, scores: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Chunk scores (queries x rows, docs' rows contiguous from `starts`) -> doc scores."""
        if self.options.aggregate == "maxp":
            return np.maximum.reduceat(scores, starts, axis=1)
        if self.options.aggregate == "firstp":
            return scores[:, starts]
        return np.add.reduceat(scores, starts, axis=1) / counts

    def _search_exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Blocks of the matrix against all queries, keeping a running top-k per query."""
        n_docs = len(self.doc_ids)
        best_s = np.empty((len(q), 0), dtype=np.float32)
        best_i = np.empty((len(q), 0), dtype=np.int64)
        d0 = 0
        while d0 < n_docs:
            if self.doc_offsets is None:
                d1 = min(d0 + self.block_rows, n_docs)
                r0, r1 = d0, d1
            else:
                r0 = int(self.doc_offsets[d0])
                d1 = max(d0 + 1, int(np.searchsorted(self.doc_offsets, r0 + self.block_rows, side="right")) - 1)
                d1 = min(d1, n_docs)
                r1 = int(self.doc_offsets[d1])
            block = np.asarray(self.emb[r0:r1], dtype=np.float32)
            scores = q @ block.T
            if self.doc_offsets is not None:
                starts = self.doc_offsets[d0:d1] - r0
                scores = self._aggregate(scores, starts, np.diff(self.doc_offsets[d0:d1 + 1]))
            ids = np.broadcast_to(np.arange(d0, d1, dtype=np.int64), scores.shape)
            best_s, best_i = _top_k(np.concatenate([best_s, scores], axis=1), np.concatenate([best_i, ids], axis=1), k)
            d0 = d1
        return best_i, best_s

    def _faiss_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.faiss_index
        if self.options.search == "faiss_hnsw":  # HNSW returns at most efSearch hits: widen it to k
            index.hnsw.efSearch = max(self.options.hnsw.ef_search, k)
        return index.search(q, k)

    def _search_faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.doc_offsets is None:
            scores, ids = self._faiss_search(q, k)
            return ids.astype(np.int64), scores
        assert self.options.chunking is not None and self.row_doc is not None
        depth = min(self.options.chunking.depth or 4 * self.options.top_k, len(self.emb))
        _, rows = self._faiss_search(q, depth)
        all_ids = np.full((len(q), k), -1, dtype=np.int64)
        all_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        for j in range(len(q)):
            cand = np.unique(self.row_doc[rows[j][rows[j] >= 0]])
            if not len(cand):
                continue
            counts = np.diff(self.doc_offsets)[cand]
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            cand_rows = np.concatenate([np.arange(self.doc_offsets[d], self.doc_offsets[d + 1]) for d in cand])
            scores = np.asarray(self.emb[cand_rows], dtype=np.float32) @ q[j]
            doc_scores = self._aggregate(scores[None, :], starts, counts)
            s, i = _top_k(doc_scores, cand[None, :], k)
            all_ids[j, :i.shape[1]], all_scores[j, :s.shape[1]] = i[0], s[0]
        return all_ids, all_scores

    def identity(self) -> dict[str, Any]:
        import torch

        ident: dict[str, Any] = {"model": self.resolved.identity(), "sentence-transformers": version("sentence-transformers"),
                                 "torch": str(torch.__version__), "device": resolve_device(self.options.device)}
        if hasattr(self, "_model"):
            ident["max_seq_length"] = int(self._model.max_seq_length)
        if self.options.search != "exact":
            import faiss

            ident["faiss"] = faiss.__version__
        return ident


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best (unordered): Ranking.from_scores sorts them."""
    if scores.shape[1] <= k:
        return scores, ids
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, part, axis=1), np.take_along_axis(ids, part, axis=1)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (POSIX): two processes never fill the same work folder."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process guard
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
