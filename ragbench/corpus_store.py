"""Corpus rows in Arrow and an id -> row index in numpy: a corpus that is never held as Python objects.

A store is a folder: `corpus.arrow`, an Arrow IPC file (columns id, title, text and extra as a JSON
string; record batches of BATCH_ROWS rows; uncompressed, so that memory-mapping it is zero-copy),
`hashes.npy`, the sorted 64-bit hashes of the ids, and `rows.npy`, the row of each sorted hash.
A lookup hashes the ids, binary-searches the hashes and checks the id stored at the row (two ids
may share a hash). All three files are memory-mapped: the OS pages them in and out, so a process's
anonymous memory does not grow with the corpus, and a store pickles as its folder's path.

Rows come back as plain column lists (`columns`, `take`); `types.Corpus` turns them into Documents.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

#: Bump when the layout of a store changes: stores are cached under keys that include it.
FORMAT = "1"
BATCH_ROWS = 4096
FIELDS = ("id", "title", "text", "extra")
SCHEMA = pa.schema([pa.field(f, pa.string(), nullable=f != "id") for f in FIELDS])
DATA, HASHES, ROWS, META = "corpus.arrow", "hashes.npy", "rows.npy", "meta.json"
_SCALAR_ROWS = 16  # rows of one batch read as scalars rather than by an Arrow take

#: id, title, text, extra fields as a JSON object (None: none)
Row = tuple[str, str, str, str | None]


def id_hashes(ids: Iterable[str]) -> np.ndarray:
    """64-bit blake2b of each id: the same in every process and version (Python's `hash` is salted)."""
    raw = b"".join(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest() for i in ids)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def _record_batch(rows: Sequence[Row]) -> pa.RecordBatch:
    return pa.record_batch([pa.array([r[k] for r in rows], pa.string()) for k in range(len(FIELDS))], schema=SCHEMA)


def _sorted_index(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted hashes, their rows); equal hashes keep row order, so a run's first row is the id's first use."""
    order = np.argsort(hashes, kind="stable")
    rows = order.astype(np.uint32 if len(hashes) < 2**32 else np.uint64)
    return hashes[order], rows


class Store:
    """The rows of one corpus, memory-mapped from a folder (`open`) or held in memory (`from_rows`)."""

    def __init__(self, batches: list[pa.RecordBatch], hashes: np.ndarray, rows: np.ndarray,
                 folder: Path | None = None):
        self.batches, self.hashes, self.rows, self.folder = batches, hashes, rows, folder
        self.offsets = np.cumsum([0] + [b.num_rows for b in batches], dtype=np.int64)
        self._starts = self.offsets.tolist()

    @classmethod
    def open(cls, folder: str | Path) -> Store:
        folder = Path(folder)
        reader = pa.ipc.open_file(pa.memory_map(str(folder / DATA)))
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        return cls(batches, np.load(folder / HASHES, mmap_mode="r"), np.load(folder / ROWS, mmap_mode="r"), folder)

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> Store:
        """A store in memory (derived corpora small enough to build in one go); a repeated id is a ValueError."""
        batches, hashes, chunk = [], [], []
        for row in rows:
            chunk.append(row)
            if len(chunk) == BATCH_ROWS:
                batches.append(_record_batch(chunk))
                hashes.append(id_hashes(r[0] for r in chunk))
                chunk = []
        if chunk or not batches:
            batches.append(_record_batch(chunk))
            hashes.append(id_hashes(r[0] for r in chunk))
        store = cls(batches, *_sorted_index(np.concatenate(hashes)))
        if (dup := store.first_duplicate()) is not None:
            raise ValueError(f"duplicate document id '{dup[1]}' (row {dup[0]})")
        return store

    def __reduce__(self) -> tuple[Any, ...]:
        if self.folder is not None:  # workers reopen the memory map; nothing of the corpus is copied
            return Store.open, (str(self.folder),)
        return Store, (self.batches, np.asarray(self.hashes), np.asarray(self.rows))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    # -- reading rows ----------------------------------------------------------------------------
    def columns(self, names: Sequence[str], start: int = 0, stop: int | None = None,
                size: int = 1024) -> Iterator[dict[str, list[Any]]]:
        """Rows `start`..`stop` (slice semantics) as column lists of exactly `size` rows (the last may be short)."""
        if size < 1:
            raise ValueError(f"batch size must be at least 1, got {size}")
        span = range(len(self))[start:stop]
        if not span or not names:
            return
        buf: dict[str, list[Any]] = {n: [] for n in names}
        first = int(np.searchsorted(self.offsets, span.start, side="right")) - 1
        for b in range(max(first, 0), len(self.batches)):
            lo, hi = int(self.offsets[b]), int(self.offsets[b + 1])
            if lo >= span.stop:
                break
            piece = self.batches[b].slice(max(span.start - lo, 0), min(span.stop, hi) - max(span.start, lo))
            for n in names:
                buf[n].extend(piece.column(n).to_pylist())
            pos, have = 0, len(buf[names[0]])
            while have - pos >= size:
                yield {n: buf[n][pos:pos + size] for n in names}
                pos += size
            if pos:
                buf = {n: buf[n][pos:] for n in names}
        if buf[names[0]]:
            yield buf

    def take(self, rows: Sequence[int] | np.ndarray, names: Sequence[str]) -> dict[str, list[Any]]:
        """Column lists for `rows` (positions in file order), in the order given.

        A few rows of one record batch are read as scalars, more with one Arrow take (each take costs
        tens of microseconds, a scalar about one): a reader's 100 documents scattered over a large
        corpus cost well under a millisecond."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out: dict[str, list[Any]] = {n: [None] * len(rows) for n in names}
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"row out of range 0..{len(self) - 1}")
        cols = [(out[n], FIELDS.index(n)) for n in names]
        if len(rows) <= _SCALAR_ROWS:  # a handful of rows: no numpy grouping
            for k, r in enumerate(rows.tolist()):
                b = bisect_right(self._starts, r) - 1
                batch, local = self.batches[b], r - self._starts[b]
                for col, j in cols:
                    col[k] = batch.column(j)[local].as_py()
            return out
        batch_of = np.searchsorted(self.offsets, rows, side="right") - 1
        order = np.argsort(batch_of, kind="stable")
        bounds = np.flatnonzero(np.diff(batch_of[order])) + 1
        for sel in np.split(order, bounds):
            b = int(batch_of[sel[0]])
            batch, local = self.batches[b], (rows[sel] - self.offsets[b]).tolist()
            positions = sel.tolist()
            if len(positions) <= _SCALAR_ROWS:
                for col, j in cols:
                    values = batch.column(j)
                    for k, r in zip(positions, local, strict=True):
                        col[k] = values[r].as_py()
                continue
            picked = batch.take(pa.array(local, pa.int64()))
            for col, j in cols:
                for k, v in zip(positions, picked.column(j).to_pylist(), strict=True):
                    col[k] = v
        return out

    # -- the id index ------------------------------------------------------------------------------
    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """The row of each id (int64), -1 where the corpus has no such id."""
        ids = list(ids)
        out = np.full(len(ids), -1, dtype=np.int64)
        n = len(self.hashes)
        if not ids or not n:
            return out
        want = id_hashes(ids)
        pos = np.searchsorted(self.hashes, want)
        at = np.minimum(pos, n - 1)
        hit = np.flatnonzero(self.hashes[at] == want)
        if not len(hit):
            return out
        rows = np.asarray(self.rows[at[hit]], dtype=np.int64)
        stored = self.take(rows, ("id",))["id"]
        for k, row, sid in zip(hit.tolist(), rows.tolist(), stored, strict=True):
            out[k] = row if sid == ids[k] else self._probe(ids[k], int(want[k]), int(pos[k]) + 1)
        return out

    def _probe(self, key: str, h: int, pos: int) -> int:
        """The rest of a run of equal hashes (another id shares this one's hash): rare, so one row at a time."""
        while pos < len(self.hashes) and int(self.hashes[pos]) == h:
            row = int(self.rows[pos])
            if self.take([row], ("id",))["id"][0] == key:
                return row
            pos += 1
        return -1

    def first_duplicate(self) -> tuple[int, str] | None:
        """(row, id) of the first row, in file order, whose id an earlier row already has; None if ids are unique."""
        same = np.flatnonzero(self.hashes[1:] == self.hashes[:-1])
        if not len(same):
            return None
        best: tuple[int, str] | None = None
        starts = same[np.r_[True, np.diff(same) > 1]]  # each run of equal hashes, by its first position
        for s in starts.tolist():
            e = s + 1
            while e + 1 < len(self.hashes) and self.hashes[e + 1] == self.hashes[s]:
                e += 1
            rows = [int(r) for r in self.rows[s:e + 1]]  # ascending: the sort is stable
            seen: set[str] = set()
            for row, i in zip(rows, self.take(rows, ("id",))["id"], strict=True):
                if i in seen:
                    if best is None or row < best[0]:
                        best = (row, i)
                    break
                seen.add(i)
        return best


class Writer:
    """Streams rows into a store folder in record batches; the id index is written when it closes.

    Memory: one record batch of rows plus 8 bytes of hash per row (the index is sorted in memory).
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self._sink = pa.OSFile(str(folder / DATA), "wb")
        self._writer = pa.ipc.new_file(self._sink, SCHEMA)
        self._pending: list[Row] = []
        self._hashes: list[np.ndarray] = []
        self._open = True

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()

    def add(self, row: Row) -> None:
        self._pending.append(row)
        if len(self._pending) == BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_batch(_record_batch(self._pending))
            self._hashes.append(id_hashes(r[0] for r in self._pending))
            self._pending = []

    def _release(self) -> None:
        if self._open:
            self._open = False
            self._writer.close()
            self._sink.close()

    def close(self, **meta: Any) -> tuple[int, str] | None:
        """Finish the files (`meta` goes to meta.json); returns the first repeated id as (row, id), or None."""
        self._flush()
        self._release()
        hashes = np.concatenate(self._hashes) if self._hashes else np.empty(0, dtype=np.uint64)
        self._hashes = []
        sorted_hashes, rows = _sorted_index(hashes)
        del hashes
        np.save(self.folder / HASHES, sorted_hashes)
        np.save(self.folder / ROWS, rows)
        (self.folder / META).write_text(json.dumps({"format": FORMAT, "rows": len(rows), **meta}, indent=2))
        return Store.open(self.folder).first_duplicate()


def read_meta(folder: Path) -> dict[str, Any]:
    """What the writer stored next to the rows (the source's fingerprint, its path)."""
    return json.loads((folder / META).read_text(encoding="utf-8"))
