"""One resumable way to encode a corpus into a cache artifact, shared by dense and sparse retrieval.

Encoding a large corpus takes hours, so a run killed at any instant, or a worker lost on a
cluster, must lose only the parts being encoded, and never leave a half-written artifact. The
protocol, written once here:

1. Under an exclusive lock on the work folder (`Cache.work_dir(key)`) the encoding plans its rows
   (`plan`; it may keep its plan there, so that a resumed run does not redo it).
2. Rows are cut into fixed parts: part i is rows [i * part_rows, (i + 1) * part_rows). `settings.json`
   in the work folder records the row count, the part size and what the rows depend on besides
   the key (dimension, dtype); parts made under other settings are deleted, never mixed.
3. Each part is one file (or pair) in the work folder, written atomically by whoever encoded it.
   What is done is the set of parts present and valid (shape and type checked), not a prefix: parts
   may finish in any order, and a lost part leaves a hole that the next run fills.
4. The missing parts are encoded in order in this process (the local executor), or handed to a
   Ray Data actor pool (`--executor ray`): each actor loads the encoder once, from a small
   picklable description (`PartEncoder`, never the stage), and writes the parts it is given.
   Progress moves per finished part.
5. When every part is present, `assemble` fills the artifact's temporary folder, the cache renames
   it into place (`Cache.artifact`) and the work folder is removed.

Parts are the same rows whoever encodes them, so a Ray run and a local run write the same artifact.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ragbench.cache import atomic_write_text

if TYPE_CHECKING:
    from ragbench.stage import StageEnv
    from ragbench.types import Corpus

P = TypeVar("P")  # one encoded part, as `PartEncoder.encode` returns it
P_co = TypeVar("P_co", covariant=True)

SETTINGS = "settings.json"
PART_GLOB = "part-*"


class TextEncoder(Protocol[P_co]):
    """A model described by what it takes to load it (weights, device, options): picklable, loaded where it runs."""

    def load(self) -> None:
        """Load the model (once per process: `models.shared` keeps it)."""

    def __call__(self, texts: list[str]) -> P_co:
        """Encode texts, in order."""


class PartEncoder(ABC, Generic[P]):
    """Encodes and keeps the parts of one artifact: what a Ray actor receives (no stage, cache or reporter).

    Subclasses say where a part's texts come from, how they are encoded, and how a part is kept.
    """

    def __init__(self, work: Path, rows: int, part_rows: int, corpus: Corpus, fields: tuple[str, ...],
                 device: str = "cpu"):
        self.work, self.rows, self.part_rows = work, rows, max(1, part_rows)
        self.corpus, self.fields, self.device = corpus, fields, device

    @property
    def n_parts(self) -> int:
        return -(-self.rows // self.part_rows)

    def bounds(self, i: int) -> tuple[int, int]:
        """Rows [start, stop) of part i."""
        return i * self.part_rows, min((i + 1) * self.part_rows, self.rows)

    def size(self, i: int) -> int:
        start, stop = self.bounds(i)
        return stop - start

    def path(self, i: int, suffix: str) -> Path:
        return self.work / f"part-{i:07d}{suffix}"

    # -- what an encoding provides --------------------------------------------------------------
    def texts(self, start: int, stop: int) -> list[str]:
        """Rows start..stop's texts, in artifact order (one row per document unless a subclass says otherwise)."""
        return list(self.corpus.texts(self.fields, start, stop))

    @abstractmethod
    def load(self) -> None:
        """Load the encoder (once per process)."""

    @abstractmethod
    def encode(self, texts: list[str]) -> P:
        """Encode one part's texts (in order)."""

    @abstractmethod
    def save(self, i: int, part: P) -> None:
        """Make part i durable in the work folder, atomically."""

    @abstractmethod
    def valid(self, i: int) -> bool:
        """Whether part i is on disk, complete, with its rows' shape and type."""

    # -- what the protocol and the actors call ------------------------------------------------------
    def __call__(self, i: int) -> int:
        """Encode and save part i; returns its rows."""
        start, stop = self.bounds(i)
        texts = self.texts(start, stop)
        if len(texts) != stop - start:
            raise RuntimeError(f"corpus yielded {len(texts)} texts for rows {start}..{stop}")
        self.save(i, self.encode(texts))
        return stop - start

    def missing(self) -> list[int]:
        return [i for i in range(self.n_parts) if not self.valid(i)]

    def clear(self) -> None:
        """Delete every part file (made under other settings)."""
        for f in self.work.glob(PART_GLOB):
            f.unlink(missing_ok=True)


class CorpusEncoding(ABC, Generic[P]):
    """The driver's side of one corpus artifact: plans the rows, gets the missing parts encoded, assembles."""

    #: what a row is, for the progress bar
    unit: str = "docs"

    def __init__(self, env: StageEnv, key: str, description: str):
        self.env, self.key, self.description = env, key, description

    @abstractmethod
    def plan(self, work: Path) -> PartEncoder[P]:
        """The parts to encode (called under the lock; may keep what it computed in `work`)."""

    def settings(self) -> dict[str, Any]:
        """What the parts kept in the work folder depend on besides the key and their bounds: a change starts over."""
        return {}

    @abstractmethod
    def assemble(self, parts: PartEncoder[P], out: Path) -> None:
        """Fill the artifact's temporary folder `out` from the finished parts."""

    # -- the protocol -----------------------------------------------------------------------------
    def run(self) -> Path:
        """The finished artifact folder, encoding (or resuming) it first when it is missing."""
        cache = self.env.cache
        work = cache.work_dir(self.key)
        path = cache.artifact(self.key, lambda tmp: self._build(work, tmp))
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            work.parent.rmdir()  # the two-letter shard folder, when this was its last entry
        return path

    def _build(self, work: Path, out: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        with locked(work / ".lock"):
            if self.env.cache.artifact_path(self.key).exists():  # another process finished it while we waited
                return
            parts = self.plan(work)
            state = {"rows": parts.rows, "part_rows": parts.part_rows, **self.settings()}
            if self.env.cache.get_json(work / SETTINGS) != state:
                parts.clear()
                atomic_write_text(work / SETTINGS, json.dumps(state))
            missing = parts.missing()
            if len(missing) < parts.n_parts:
                self.env.reporter.log(f"{self.description}: {parts.n_parts - len(missing):,} of {parts.n_parts:,} "
                                      f"parts already encoded; encoding the {len(missing):,} missing")
            todo = sum(parts.size(i) for i in missing)
            with self.env.reporter.task(self.description, todo, self.unit) as advance:
                for i in self._encode(parts, missing):
                    advance(parts.size(i))
            if lost := parts.missing():
                raise RuntimeError(f"{work}: parts {lost[:5]} are missing after encoding; run again to resume")
            self.assemble(parts, out)

    def _encode(self, parts: PartEncoder[P], missing: list[int]) -> Iterator[int]:
        """Encode the missing parts here, in order, or on Ray's actor pool; yields each part as it finishes."""
        if not missing:
            return
        executor = self.env.executor
        if executor.is_ray:
            from ragbench.executors import map_parts

            def started(workers: int) -> None:
                self.env.reporter.log(f"{self.description}: {len(missing):,} parts on Ray, {workers} workers")

            yield from map_parts(executor, parts, missing, parts.device, started)
            return
        parts.load()
        for i in missing:
            parts(i)
            yield i


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
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
