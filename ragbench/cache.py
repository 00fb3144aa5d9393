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
reuse a stale result. Every write is atomic (temp file or folder, then rename): a run
killed at any instant leaves either a complete entry or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


class Cache:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root else default_root()

    # -- whole stage outputs ------------------------------------------------------------
    def _entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def get(self, key: str) -> str | None:
        path = self._entry("outputs", key) / "data"
        return path.read_text(encoding="utf-8") if path.exists() else None

    def get_meta(self, key: str) -> dict[str, Any] | None:
        path = self._entry("outputs", key) / "meta.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def put(self, key: str, text: str, meta: dict[str, Any] | None = None) -> None:
        entry = self._entry("outputs", key)
        if meta is not None:
            atomic_write_text(entry / "meta.json", json.dumps(meta, indent=2, default=str))
        atomic_write_text(entry / "data", text)  # written last: its presence marks the entry complete

    # -- per-batch outputs, for resuming inside a stage -----------------------------------
    def get_batch(self, key: str) -> str | None:
        path = self._entry("batches", key)
        return path.read_text(encoding="utf-8") if path.exists() else None

    def put_batch(self, key: str, text: str) -> None:
        atomic_write_text(self._entry("batches", key), text)

    # -- artifacts: folders such as indexes --------------------------------------------------
    def artifact_path(self, key: str) -> Path:
        """Where the finished folder for `key` lives (it may not exist yet)."""
        return self._entry("artifacts", key)

    def artifact(self, key: str, build: Callable[[Path], None]) -> Path:
        """Return the folder for `key`, building it with `build(tmp)` first if absent."""
        return build_folder(self._entry("artifacts", key), build)

    def work_dir(self, key: str) -> Path:
        """Where a resumable build keeps its finished parts until the artifact is complete."""
        return self._entry("work", key)

    # -- single LLM results and converted models -------------------------------------------
    def llm_entry(self, key: str) -> Path:
        return self.root / "llm" / key[:2] / f"{key}.json"

    def get_json(self, path: Path) -> Any:
        """A JSON entry, or None when it is missing or was cut short."""
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None

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
