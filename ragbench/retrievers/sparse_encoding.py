"""The corpus side of learned-sparse retrieval: documents encoded into sparse (and dense) rows, in parts.

The shared resumable protocol (encoding.py) cuts the corpus into parts of fixed rows; each part
is encoded (in this process or by a Ray actor) and kept as one `.npz` (CSR rows) plus, for
encoders that also give a dense vector (PromptReps), one `.dense.npy`. The assembled artifact is
`docs.npz` (N x V CSR), `dense.npy` when present, and `meta.json`. The encoder travels to a
worker as (stage class, options) and is loaded there from the options alone.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from ragbench.cache import atomic_write
from ragbench.models import shared
from ragbench.retrievers.encoding import CorpusEncoding, PartEncoder, TextEncoder

if TYPE_CHECKING:
    from ragbench.retrievers.base import Retriever
    from ragbench.retrievers.sparse_index import SparseOptions, SparseRetriever
    from ragbench.stage import StageEnv
    from ragbench.types import Corpus

Encoded = tuple[sparse.csr_matrix, "np.ndarray | None"]  # sparse rows, optional dense rows


@dataclass(frozen=True)
class DocumentEncoder:
    """A sparse retriever's document encoder as (stage class, options): picklable, loaded where it runs."""

    cls: type[SparseRetriever]
    options: SparseOptions

    def _encode(self) -> Callable[[list[str]], Encoded]:
        key = ("document_encoder", self.cls.__module__, self.cls.__qualname__, self.options.model_dump_json())
        return shared(key, lambda: self.cls.document_encoder(self.options))

    def load(self) -> None:
        self._encode()

    def __call__(self, texts: list[str]) -> Encoded:
        return self._encode()(texts)


class SparseParts(PartEncoder[Encoded]):
    """Parts of the corpus's sparse rows (`.npz`), with their dense rows (`.dense.npy`) when the encoder has any."""

    def __init__(self, work: Path, rows: int, part_rows: int, corpus: Corpus, fields: tuple[str, ...],
                 encode: TextEncoder[Encoded], vocab_size: int, batch_size: int, device: str = "cpu"):
        super().__init__(work, rows, part_rows, corpus, fields, device)
        self.encoder, self.vocab_size, self.batch_size = encode, vocab_size, batch_size

    def load(self) -> None:
        self.encoder.load()

    def encode(self, texts: list[str]) -> Encoded:
        rows: list[sparse.csr_matrix] = []
        dense_rows: list[np.ndarray] = []
        # longest first, so a batch pads little and the largest batch (memory) comes first
        order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
        for b in range(0, len(order), self.batch_size):
            batch = [texts[i] for i in order[b:b + self.batch_size]]
            m, d = self.encoder(batch)
            if m.shape != (len(batch), self.vocab_size):
                raise RuntimeError(f"encoder returned a {m.shape} matrix for {len(batch)} texts "
                                   f"(vocabulary {self.vocab_size})")
            rows.append(m)
            if d is not None:
                dense_rows.append(np.asarray(d, dtype=np.float32))
        back = np.argsort(np.asarray(order))  # row of each document, in corpus order
        part = sparse.vstack(rows, format="csr", dtype=np.float32)[back]
        part.sort_indices()
        return part, np.ascontiguousarray(np.concatenate(dense_rows)[back]) if dense_rows else None

    def save(self, i: int, part: Encoded) -> None:
        if part[1] is not None:
            _save_npy(self.path(i, ".dense.npy"), part[1])
        _save_npz(self.path(i, ".npz"), part[0])  # last: its presence marks the part complete

    def valid(self, i: int) -> bool:
        try:
            with np.load(self.path(i, ".npz")) as z:
                shape = tuple(int(x) for x in z["shape"])
            dense = self.path(i, ".dense.npy")
            rows = np.load(dense, mmap_mode="r").shape[0] if dense.exists() else self.size(i)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing or cut short
            return False
        return shape == (self.size(i), self.vocab_size) and rows == self.size(i)


class SparseCorpusEncoding(CorpusEncoding[Encoded]):
    """The corpus's sparse rows (and optional dense rows), assembled from the parts into one CSR matrix."""

    def __init__(self, env: StageEnv, key: str, corpus: Corpus, fields: tuple[str, ...], encode: TextEncoder[Encoded],
                 vocab_size: int, batch_size: int, part_rows: int, description: str, device: str = "cpu"):
        super().__init__(env, key, description)
        self.corpus, self.fields, self.encode, self.vocab_size = corpus, fields, encode, vocab_size
        self.batch_size, self.part_rows, self.device = batch_size, max(part_rows, batch_size), device

    def plan(self, work: Path) -> SparseParts:
        return SparseParts(work, len(self.corpus), self.part_rows, self.corpus, self.fields, self.encode,
                           self.vocab_size, self.batch_size, self.device)

    def settings(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size}

    def assemble(self, parts: PartEncoder[Encoded], out: Path) -> None:
        rows = parts.rows
        blocks = [sparse.load_npz(parts.path(i, ".npz")).tocsr() for i in range(parts.n_parts)]
        matrix = sparse.vstack(blocks, format="csr", dtype=np.float32) if blocks else \
            sparse.csr_matrix((0, self.vocab_size), dtype=np.float32)
        _save_npz(out / "docs.npz", matrix)
        dense_files = [parts.path(i, ".dense.npy") for i in range(parts.n_parts)]
        present = [f for f in dense_files if f.exists()]
        if present and len(present) != len(dense_files):
            raise RuntimeError(f"{parts.work}: some parts lack their dense vectors; delete the folder and re-run")
        if present:
            _save_npy(out / "dense.npy", np.concatenate([np.load(f) for f in present]))
        data = matrix.data
        meta = {"docs": rows, "vocab_size": self.vocab_size, "nnz": int(matrix.nnz),
                "integer": bool(np.all(np.equal(np.mod(data, 1), 0))) if data.size else True,
                "dense_dim": int(np.load(present[0], mmap_mode="r").shape[1]) if present else None}
        (out / "meta.json").write_text(json.dumps(meta, indent=2))


def _save_npz(path: Path, m: sparse.spmatrix) -> None:
    atomic_write(path, lambda f: sparse.save_npz(f, m, compressed=False))


def _save_npy(path: Path, a: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, a))


def encode_corpus(stage: Retriever, key: str, corpus: Corpus, fields: tuple[str, ...], encode: TextEncoder[Encoded],
                  vocab_size: int, batch_size: int, part_rows: int, description: str, device: str = "cpu") -> Path:
    """The cached folder holding the corpus's vectors: docs.npz (N x V CSR), dense.npy if any.

    `encode` runs on batches of `batch_size` texts; every `part_rows` documents are one part, saved
    in the work folder as it finishes (here, or by a Ray actor), so a killed run resumes there.
    """
    return SparseCorpusEncoding(stage.env, key, corpus, fields, encode, vocab_size, batch_size, part_rows,
                                description, device).run()
