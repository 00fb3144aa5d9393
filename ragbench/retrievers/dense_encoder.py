"""The bi-encoder side of dense retrieval: the shared SentenceTransformer, its prompts, and corpus rows.

Corpus rows are documents, or token windows of them (LongRAG-style chunking; docs/methods.md,
"Dense retrieval and MaxP chunking"): windows of `size` tokens of the model's own tokenizer (no
special tokens) start every `stride` tokens until one reaches the end of the document; each chunk
is the original text between its first and last token's characters, so the encoder re-tokenises
the same text. Rows are stored doc by doc (`doc_offsets.npy` maps docs to their rows).

The matrix is encoded with the shared resumable protocol (encoding.py): every part's rows are
one `.npy` in the work folder, written atomically by the process (or Ray actor) that encoded them;
once all are there they are copied, in order, into one memory-mapped `embeddings.npy` in the
artifact. Peak memory is one part of texts and vectors plus the pages of the mapped file; the
corpus is never held as embeddings in RAM. The chunk plan is kept in the work folder as two `.npy`
files, memory-mapped by whoever encodes a part.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragbench.cache import atomic_write
from ragbench.errors import RagbenchError
from ragbench.models import ResolvedModel, resolve_device, shared
from ragbench.retrievers.encoding import CorpusEncoding, PartEncoder, TextEncoder

if TYPE_CHECKING:
    from ragbench.stage import StageEnv
    from ragbench.types import Corpus

Plan = tuple[np.ndarray, np.ndarray]  # doc_offsets (n_docs + 1), spans (rows x 2 character offsets)


def sentence_transformer(name: str, resolved: ResolvedModel, device: str, max_length: int | None) -> Any:
    """The process-wide SentenceTransformer for (weights, device, max_length): later stages reuse it."""
    device = resolve_device(device)

    def load() -> Any:
        from sentence_transformers import SentenceTransformer

        try:
            from transformers.utils import logging as hf_logging

            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - transformers always comes with sentence-transformers
            hf_logging, bar = None, False
        try:
            model = SentenceTransformer(resolved.path, device=device)
        except OSError as e:
            raise RagbenchError.at("model", f"cannot load '{name}' ({resolved.source}: {resolved.path}): {e}") from e
        finally:
            if hf_logging is not None and bar:
                hf_logging.enable_progress_bar()
        if max_length is not None:
            model.max_seq_length = max_length
        return model

    return shared(("sentence_transformer", resolved.path, device, max_length), load)


def prompt(model: Any, side: str, prefix: str, name: str | None) -> str | None:
    """The text put before `side`'s inputs: the prefix, the named or the model's default prompt."""
    prompts = getattr(model, "prompts", None) or {}
    if prefix:
        return prefix
    if name is not None:
        if name not in prompts:
            known = ", ".join(prompts) or "none"
            raise RagbenchError.at("model", f"{side}_prompt_name '{name}' is not among the model's prompts ({known})")
        return prompts[name] or None
    default = getattr(model, "default_prompt_name", None)
    return (prompts.get(default) or None) if default else None


def encode(model: Any, texts: list[str], prompt: str | None, batch_size: int, normalize: bool) -> np.ndarray:
    """float32 rows, one per text (SentenceTransformer sorts a call's texts by length internally)."""
    emb = model.encode(texts, prompt=prompt, batch_size=batch_size, normalize_embeddings=normalize,
                       convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32).reshape(len(texts), -1)


def fast_tokenizer(model: Any) -> Any:
    """The model's tokenizer, which must be a fast one: chunk spans need its character offsets."""
    tok = model.tokenizer
    if not getattr(tok, "is_fast", False):
        raise RagbenchError.at("chunking", f"chunking needs a fast (Rust) tokenizer for character offsets; "
                                           f"{type(tok).__name__} is not one")
    return tok


def plan_chunks(tokenizer: Any, texts: Iterable[str], n_docs: int, size: int, stride: int) -> Plan:
    """doc_offsets and character spans of every document's token windows (a fast tokenizer's offsets)."""
    counts = np.zeros(n_docs, dtype=np.int64)
    spans: list[tuple[int, int]] = []
    texts = iter(texts)
    for b in range(0, n_docs, 1000):
        block = [t for _, t in zip(range(1000), texts, strict=False)]
        enc = tokenizer(block, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False,
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


@dataclass(frozen=True)
class DenseModel:
    """A SentenceTransformer and how it encodes documents: what a Ray actor needs to load and run it."""

    name: str
    resolved: ResolvedModel
    device: str
    max_length: int | None
    prompt: str | None
    batch_size: int
    normalize: bool

    def load(self) -> Any:
        return sentence_transformer(self.name, self.resolved, self.device, self.max_length)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return encode(self.load(), texts, self.prompt, self.batch_size, self.normalize)


class DenseParts(PartEncoder[np.ndarray]):
    """Parts of the corpus matrix, one `.npy` each, rows of documents or of their chunks."""

    def __init__(self, work: Path, rows: int, part_rows: int, corpus: Corpus, fields: tuple[str, ...],
                 model: TextEncoder[np.ndarray], dim: int, dtype: np.dtype, chunked: bool, device: str = "cpu"):
        super().__init__(work, rows, part_rows, corpus, fields, device)
        self.model, self.dim, self.dtype, self.chunked = model, dim, dtype, chunked

    def texts(self, start: int, stop: int) -> list[str]:
        if not self.chunked:
            return super().texts(start, stop)
        offsets, spans = load_plan(self.work)
        first = int(np.searchsorted(offsets, start, side="right")) - 1
        last = int(np.searchsorted(offsets, stop - 1, side="right")) - 1
        out = []
        for i, text in enumerate(self.corpus.texts(self.fields, first, last + 1), first):
            for r in range(max(int(offsets[i]), start), min(int(offsets[i + 1]), stop)):
                out.append(text[spans[r, 0]:spans[r, 1]])
        return out

    def load(self) -> None:
        self.model.load()

    def encode(self, texts: list[str]) -> np.ndarray:
        emb = self.model(texts)
        if emb.shape != (len(texts), self.dim):
            raise RuntimeError(f"encoder returned {emb.shape} for {len(texts)} texts of dimension {self.dim}")
        return emb.astype(self.dtype, copy=False)

    def save(self, i: int, part: np.ndarray) -> None:
        atomic_write(self.path(i, ".npy"), lambda f: np.save(f, part))

    def valid(self, i: int) -> bool:
        try:
            part = np.load(self.path(i, ".npy"), mmap_mode="r")
        except (OSError, ValueError):
            return False
        return part.shape == (self.size(i), self.dim) and part.dtype == self.dtype


def load_plan(work: Path) -> Plan:
    """The chunk plan kept in the work folder, memory-mapped (a worker reads only the rows of its part)."""
    return np.load(work / "doc_offsets.npy", mmap_mode="r"), np.load(work / "spans.npy", mmap_mode="r")


class DenseCorpusEncoding(CorpusEncoding[np.ndarray]):
    """The corpus matrix of a dense stage, one row per document or per chunk."""

    def __init__(self, env: StageEnv, key: str, part_rows: int, description: str, corpus: Corpus,
                 fields: tuple[str, ...], model: TextEncoder[np.ndarray], dimension: Callable[[], int],
                 dtype: str, chunker: Callable[[], Plan] | None, meta: dict[str, Any], device: str = "cpu"):
        super().__init__(env, key, description)
        self.part_rows, self.corpus, self.fields, self.model = part_rows, corpus, fields, model
        self.dimension, self.chunker, self.meta = dimension, chunker, meta  # called only when encoding
        self.dtype, self.device, self.dim = np.dtype(dtype), device, 0
        self.unit = "docs" if chunker is None else "chunks"

    def plan(self, work: Path) -> DenseParts:
        self.dim = self.dimension()
        rows = len(self.corpus)
        if self.chunker is not None:
            if not ((work / "doc_offsets.npy").exists() and (work / "spans.npy").exists()):
                offsets, spans = self.chunker()
                atomic_write(work / "spans.npy", lambda f: np.save(f, spans))
                atomic_write(work / "doc_offsets.npy", lambda f: np.save(f, offsets))  # last: the plan is complete
            rows = int(load_plan(work)[0][-1])
        return DenseParts(work, rows, self.part_rows, self.corpus, self.fields, self.model, self.dim, self.dtype,
                          self.chunker is not None, self.device)

    def settings(self) -> dict[str, Any]:
        return {"dim": self.dim, "dtype": self.dtype.name}

    def assemble(self, parts: PartEncoder[np.ndarray], out: Path) -> None:
        matrix = np.lib.format.open_memmap(out / "embeddings.npy", mode="w+", dtype=self.dtype,
                                           shape=(parts.rows, self.dim))
        for i in range(parts.n_parts):
            start, stop = parts.bounds(i)
            matrix[start:stop] = np.load(parts.path(i, ".npy"), mmap_mode="r")
        matrix.flush()
        del matrix
        meta = {"rows": parts.rows, "docs": len(self.corpus), "dim": self.dim, "dtype": self.dtype.name,
                "unit": self.unit, **self.meta}
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        if self.chunker is not None:
            offsets, spans = load_plan(parts.work)
            np.save(out / "doc_offsets.npy", np.asarray(offsets))
            np.save(out / "spans.npy", np.asarray(spans))
