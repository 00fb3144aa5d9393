"""The bi-encoder side of dense retrieval: the shared SentenceTransformer, its prompts, and corpus rows.

Corpus rows are documents, or token windows of them (LongRAG-style chunking; docs/methods.md,
"Dense retrieval and MaxP chunking"): windows of `size` tokens of the model's own tokenizer (no
special tokens) start every `stride` tokens until one reaches the end of the document; each chunk
is the original text between its first and last token's characters, so the encoder re-tokenises
the same text. Rows are stored doc by doc (`doc_offsets.npy` maps docs to their rows).

The matrix is encoded with the shared resumable protocol (encoding.py): every part's rows are
written into a memory-mapped `.npy` in the work folder and flushed before the progress file counts
them; the finished file is moved into the artifact with one rename. Peak memory is one part of
texts and vectors plus the pages of the mapped file; the corpus is never held as embeddings in RAM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragbench.cache import atomic_write
from ragbench.errors import RagbenchError
from ragbench.models import ResolvedModel, resolve_device, shared
from ragbench.retrievers.encoding import CorpusEncoding

if TYPE_CHECKING:
    from ragbench.stage import StageEnv
    from ragbench.types import Document

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


class DenseCorpusEncoding(CorpusEncoding[np.ndarray]):
    """The corpus matrix of a dense stage, one row per document or per chunk, in a memory-mapped .npy."""

    def __init__(self, env: StageEnv, key: str, part_rows: int, description: str, docs: list[Document],
                 fields: tuple[str, ...], encode: Callable[[list[str]], np.ndarray], dimension: Callable[[], int],
                 dtype: str, chunker: Callable[[], Plan] | None, meta: dict[str, Any]):
        super().__init__(env, key, part_rows, description)
        self.docs, self.fields, self.encode, self.dtype = docs, fields, encode, np.dtype(dtype)
        self.dimension, self.chunker, self.meta = dimension, chunker, meta  # called only when encoding
        self.dim = 0
        self.chunks: Plan | None = None
        self.unit = "docs" if chunker is None else "chunks"
        self.matrix: np.ndarray | None = None

    def plan(self, work: Path) -> int:
        self.dim = self.dimension()
        if self.chunker is None:
            return len(self.docs)
        saved = work / "plan.npz"
        if saved.exists():
            with np.load(saved) as z:
                self.chunks = (z["doc_offsets"], z["spans"])
        else:
            plan = self.chunks = self.chunker()
            atomic_write(saved, lambda f: np.savez(f, doc_offsets=plan[0], spans=plan[1]))
        return int(self.chunks[0][-1])

    def settings(self) -> dict[str, Any]:
        return {"dim": self.dim, "dtype": self.dtype.name}

    def texts(self, start: int) -> Iterator[str]:
        if self.chunks is None:
            for d in self.docs[start:]:
                yield d.contents(self.fields)
            return
        offsets, spans = self.chunks
        first = int(np.searchsorted(offsets, start, side="right")) - 1
        for i in range(first, len(self.docs)):
            text = self.docs[i].contents(self.fields)
            for r in range(max(int(offsets[i]), start), int(offsets[i + 1])):
                yield text[spans[r, 0]:spans[r, 1]]

    def encode_part(self, texts: list[str]) -> np.ndarray:
        emb = self.encode(texts)
        if emb.shape != (len(texts), self.dim):
            raise RuntimeError(f"encoder returned {emb.shape} for {len(texts)} texts of dimension {self.dim}")
        return emb

    def rows_on_disk(self, work: Path, recorded: int) -> int:
        return recorded if (work / "embeddings.npy").exists() else 0

    def begin(self, work: Path, rows: int, done: int) -> None:
        path = work / "embeddings.npy"
        if done:
            self.matrix = np.load(path, mmap_mode="r+")
        else:
            self.matrix = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=(rows, self.dim))

    def save_part(self, work: Path, start: int, part: np.ndarray) -> None:
        assert self.matrix is not None
        self.matrix[start:start + len(part)] = part
        self.matrix.flush()

    def assemble(self, work: Path, out: Path, rows: int) -> None:
        self.matrix = None  # unmapped before the file moves
        meta = {"rows": rows, "docs": len(self.docs), "dim": self.dim, "dtype": self.dtype.name, "unit": self.unit,
                **self.meta}
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        if self.chunks is not None:
            np.save(out / "doc_offsets.npy", self.chunks[0])
            np.save(out / "spans.npy", self.chunks[1])
        os.replace(work / "embeddings.npy", out / "embeddings.npy")  # last: the artifact is complete from here on
