"""One resumable way to encode a corpus into a cache artifact, shared by dense and sparse retrieval.

Encoding a large corpus takes hours, so a run killed at any instant must resume where it stopped
and never leave a half-written artifact. The protocol, written once here:

1. Under an exclusive lock on the work folder (`Cache.work_dir(key)`) the encoding plans its rows;
   it may keep its plan there, so that a resumed run does not redo it.
2. `progress.json` in the work folder records how many rows are done and the settings they were
   made with (dimension, dtype, part size); a run resumes there only when the settings match and
   the encoding confirms that the rows are on disk, and otherwise starts over.
3. Rows are encoded `part_rows` at a time. Each finished part is made durable by `save_part`
   first; only then is `progress.json` replaced atomically, so it never claims a row not on disk.
4. When every row is done, `assemble` fills the artifact's temporary folder, the cache renames it
   into place (`Cache.artifact`) and the work folder is removed.

A retriever says only how rows are planned, encoded, kept and assembled (a subclass of
`CorpusEncoding`); dense keeps its rows in one memory-mapped matrix, sparse in one file per part.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ragbench.cache import atomic_write_text

if TYPE_CHECKING:
    from ragbench.stage import StageEnv

P = TypeVar("P")  # one encoded part, as `encode_part` returns it

PROGRESS = "progress.json"


class CorpusEncoding(ABC, Generic[P]):
    """The rows of one corpus artifact, encoded in parts that survive a killed run."""

    #: what a row is, for the progress bar
    unit: str = "docs"

    def __init__(self, env: StageEnv, key: str, part_rows: int, description: str):
        self.env, self.key, self.part_rows, self.description = env, key, max(1, part_rows), description

    # -- what an encoding provides --------------------------------------------------------------
    @abstractmethod
    def plan(self, work: Path) -> int:
        """The number of rows (called under the lock; may keep what it computed in `work`)."""

    def settings(self) -> dict[str, Any]:
        """What the rows kept in the work folder depend on besides the key: a change starts over."""
        return {}

    @abstractmethod
    def texts(self, start: int) -> Iterator[str]:
        """The rows' texts from row `start` on, in artifact order."""

    @abstractmethod
    def encode_part(self, texts: list[str]) -> P:
        """Encode one part's texts (in order)."""

    @abstractmethod
    def rows_on_disk(self, work: Path, recorded: int) -> int:
        """How many of the `recorded` rows the work folder really holds (a prefix), to resume from."""

    def begin(self, work: Path, rows: int, done: int) -> None:  # noqa: B027 - optional hook
        """Open (or create, when `done` is 0) whatever `save_part` writes into."""

    @abstractmethod
    def save_part(self, work: Path, start: int, part: P) -> None:
        """Make rows `start`.. durable in `work` before the progress file counts them."""

    @abstractmethod
    def assemble(self, work: Path, out: Path, rows: int) -> None:
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
            rows = self.plan(work)
            state = {"rows": rows, **self.settings()}
            progress = work / PROGRESS
            recorded = _recorded(self.env.cache.get_json(progress), state)
            done = self.rows_on_disk(work, recorded) if recorded else 0
            if done != recorded:  # never let a stale count vouch for rows about to be overwritten
                progress.unlink(missing_ok=True)
            if done:
                self.env.reporter.log(f"{self.description}: resuming at row {done:,} of {rows:,}")
            self.begin(work, rows, done)
            texts = self.texts(done)
            with self.env.reporter.task(self.description, rows - done, self.unit) as advance:
                while done < rows:
                    want = min(self.part_rows, rows - done)
                    batch = list(itertools.islice(texts, want))
                    if len(batch) != want:
                        raise RuntimeError(f"corpus yielded {done + len(batch)} of {rows} rows")
                    self.save_part(work, done, self.encode_part(batch))
                    done += len(batch)
                    atomic_write_text(progress, json.dumps({"done": done, **state}))
                    advance(len(batch))
            self.assemble(work, out, rows)


def _recorded(saved: Any, state: dict[str, Any]) -> int:
    """Rows done according to the progress file's contents, or 0 when it is missing, cut short or from other
    settings."""
    if not isinstance(saved, dict) or any(saved.get(k) != v for k, v in state.items()):
        return 0
    return int(saved.get("done", 0))


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
