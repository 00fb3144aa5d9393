"""Content-addressed cache for stage outputs, partial (per-batch) outputs and artifacts.

The cache owns its folder layout; callers ask for an entry by kind and key, never compose paths:

    outputs/<k2>/<key>/{data,meta.json}   a stage's whole output, per query set
    batches/<k2>/<key>                    one batch of it (resume inside a stage)
    artifacts/<k2>/<key>/                 finished folders (indexes, embeddings, derived corpora)
    work/<k2>/<key>/                      an artifact's parts while it is being built (resume inside a build)
    llm/<k2>/<key>.json                   one LLM request's result
    models/                               GGUF files converted to Hugging Face folders

Keys are hashes of everything that determines a result (stage config, upstream keys, data
fingerprint, code version), never of a component's name, so a changed setting can never
reuse a stale result. Every write is atomic (temp file or folder, then rename or link): a run
killed at any instant leaves either a complete entry or none, and of two processes writing the
same entry the first wins. Entries carry checksums (cache_integrity): a corrupt or truncated one
is reported in one line (`warn`), discarded, and recomputed by its caller.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragbench.cache_integrity import CorruptEntry, create_file, discard, seal, unseal, verify_folder, write_manifest


def default_root() -> Path:
    if os.environ.get("RAGBENCH_CACHE"):
        return Path(os.environ["RAGBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ragbench"


def make_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write a file via `write(binary_file)` into a unique temp file, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def build_folder(final: Path, build: Callable[[Path], None]) -> Path:
    """Return `final`, building it with `build(tmp)` in a sibling temp folder first if absent.

    The temp folder is renamed into place only once `build` returns, so a killed build
    leaves no half-written `final`; if two processes race, the first rename wins.
    """
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: keep theirs
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _lines_whole(raw: bytes) -> bool:
    """Stage text written before checksums: records are whole lines, so a cut one shows as a missing newline."""
    return not raw or raw.endswith(b"\n")


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def _payload(raw: bytes, legacy_ok: Callable[[bytes], bool]) -> bytes:
    payload, sealed = unseal(raw)
    if not sealed and not legacy_ok(raw):  # written before checksums: it must at least parse
        raise CorruptEntry("cut short" if legacy_ok is _lines_whole else "not valid JSON")
    return payload


def _is_bad(path: Path, legacy_ok: Callable[[bytes], bool]) -> bool:
    try:
        _payload(path.read_bytes(), legacy_ok)
    except CorruptEntry:
        return True
    return False


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class Cache:
    def __init__(self, root: Path | str | None = None, warn: Callable[[str], None] | None = None):
        self.root = Path(root) if root else default_root()
        self.warn = warn or _stderr

    # -- verified reads and first-writer-wins writes ----------------------------------------
    def _read(self, path: Path, legacy_ok: Callable[[bytes], bool]) -> bytes | None:
        """An entry's payload, or None when it is missing or corrupt (then reported and discarded)."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return _payload(raw, legacy_ok)
        except CorruptEntry as e:
            self._discard(path, str(e), lambda aside: _is_bad(aside, legacy_ok))
            return None

    def _discard(self, path: Path, why: str, still_bad: Callable[[Path], bool]) -> None:
        where = path.relative_to(self.root) if path.is_relative_to(self.root) else path
        self.warn(f"cache entry {where}: {why}; discarded, recomputing it")
        discard(path, still_bad)

    def _create(self, path: Path, payload: bytes) -> bool:
        return create_file(path, seal(payload))

    # -- whole stage outputs ------------------------------------------------------------
    def _entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def get(self, key: str) -> str | None:
        """A whole stage output; its metadata is checked too, so `get_meta` after a hit reads a sound file."""
        entry = self._entry("outputs", key)
        data = self._read(entry / "data", _lines_whole)
        if data is not None and (entry / "meta.json").exists() and self._read(entry / "meta.json", _parses) is None:
            discard(entry / "data", lambda _: True)  # the metadata was reported; recompute the whole entry
            return None
        return None if data is None else data.decode("utf-8")

    def get_meta(self, key: str) -> dict[str, Any] | None:
        raw = self._read(self._entry("outputs", key) / "meta.json", _parses)
        return None if raw is None else json.loads(raw)

    def put(self, key: str, text: str, meta: dict[str, Any] | None = None) -> None:
        entry = self._entry("outputs", key)
        if meta is not None:
            self._create(entry / "meta.json", json.dumps(meta, indent=2, default=str).encode("utf-8"))
        self._create(entry / "data", text.encode("utf-8"))  # written last: its presence marks the entry complete

    # -- per-batch outputs, for resuming inside a stage -----------------------------------
    def get_batch(self, key: str) -> str | None:
        raw = self._read(self._entry("batches", key), _lines_whole)
        return None if raw is None else raw.decode("utf-8")

    def put_batch(self, key: str, text: str) -> None:
        self._create(self._entry("batches", key), text.encode("utf-8"))

    # -- artifacts: folders such as indexes --------------------------------------------------
    def artifact_path(self, key: str) -> Path:
        """Where the finished folder for `key` lives (it may not exist yet)."""
        return self._entry("artifacts", key)

    def artifact(self, key: str, build: Callable[[Path], None]) -> Path:
        """Return the folder for `key`, building it with `build(tmp)` first if absent (or corrupt).

        The folder's manifest (sizes, sha256) is written with it and checked whenever it is returned."""
        final = self._entry("artifacts", key)
        if final.is_dir():
            problem = verify_folder(final)
            if problem is None:
                return final
            self._discard(final, problem, lambda aside: verify_folder(aside) is not None)

        def build_with_manifest(tmp: Path) -> None:
            build(tmp)
            write_manifest(tmp)

        return build_folder(final, build_with_manifest)

    def work_dir(self, key: str) -> Path:
        """Where a resumable build keeps its finished parts until the artifact is complete."""
        return self._entry("work", key)

    # -- single LLM results and converted models -------------------------------------------
    def llm_entry(self, key: str) -> Path:
        return self.root / "llm" / key[:2] / f"{key}.json"

    def get_json(self, path: Path) -> Any:
        """A JSON entry, or None when it is missing or corrupt (reported, discarded)."""
        raw = self._read(path, _parses)
        return None if raw is None else json.loads(raw)

    def put_json(self, path: Path, value: Any) -> bool:
        """Create a JSON entry (sealed) unless one exists: True when this call wrote it."""
        return self._create(path, json.dumps(value).encode("utf-8"))

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def size(self) -> tuple[int, int]:
        """(files, bytes) under the cache root."""
        files = total = 0
        if self.root.exists():
            for p in self.root.rglob("*"):
                if p.is_file():
                    files += 1
                    total += p.stat().st_size
        return files, total

    def clear(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
