"""How a cache entry proves it is whole: sealed files, artifact manifests, first-writer-wins creation.

The cache is shared by processes, Ray workers and machines, so an entry can be written twice at once,
cut short by a full disk or a killed copy, or damaged on disk later. Three rules make that harmless:

- a file entry is created only if absent (`create_file`: a temp file hard-linked into place, which fails when
  the name exists), so racing writers end with the first one's entry, whole;
- a file entry starts with a seal line, `#ragbench sha256=<hex> bytes=<n>`, checked on every read (`unseal`);
  entries written before seals are accepted when they parse (the caller says what parsing means);
- a finished folder (an artifact) carries a manifest of its files' sizes and sha256, written when it is built
  and checked when it is opened: sizes every time, hashes once per state of the files (a stamp remembers the
  size and mtime of each file last verified), because hashing a 30 GB index on every open would cost minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

MANIFEST = ".ragbench-manifest.json"  # {relative path: [size, sha256]}, written with the folder
STAMP = ".ragbench-verified.json"  # {relative path: [size, mtime_ns]} when the manifest was last checked in full
_SEAL = re.compile(rb"#ragbench sha256=([0-9a-f]{64}) bytes=(\d+)\n")
_CHUNK = 1 << 22


class CorruptEntry(Exception):
    """An entry that is not what was written; the message says how (one line)."""


def seal(payload: bytes) -> bytes:
    """`payload` behind its seal line."""
    return b"#ragbench sha256=%s bytes=%d\n" % (hashlib.sha256(payload).hexdigest().encode(), len(payload)) + payload


def unseal(raw: bytes) -> tuple[bytes, bool]:
    """(payload, whether it was sealed); raises CorruptEntry when a sealed payload is cut short or altered.

    A file whose first line is not a seal was written before seals existed and is returned as is."""
    if not raw.startswith(b"#ragbench "):
        return raw, False
    m = _SEAL.match(raw)
    if m is None:
        raise CorruptEntry("its checksum line is damaged")
    payload = raw[m.end():]
    if len(payload) != int(m.group(2)):
        raise CorruptEntry(f"truncated: {len(payload):,} of {int(m.group(2)):,} bytes")
    if hashlib.sha256(payload).hexdigest().encode() != m.group(1):
        raise CorruptEntry("checksum mismatch")
    return payload, True


def create_file(path: Path, data: bytes) -> bool:
    """Write `path` only if it does not exist: True when this call created it, False when another writer had.

    The bytes go to a temp file (fsynced) that is hard-linked to `path`: the link fails if `path` exists, so
    the first writer wins and a reader never sees a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: rename, with a window in which the last writer wins
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def discard(path: Path, still_bad: Callable[[Path], bool] | None = None) -> None:
    """Remove a bad entry (file or folder): renamed aside first, so no reader sees it half deleted.

    `still_bad(aside)` checks what was moved: when another process had meanwhile replaced the bad entry with a
    sound one, that one is put back rather than removed from under the processes using it."""
    aside = path.with_name(f".{path.name}.corrupt-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process discarded it already
    if still_bad is not None and not still_bad(aside):
        with contextlib.suppress(OSError):  # fails only when a third entry took the name: keep that one
            if aside.is_dir():
                os.rename(aside, path)  # fails onto a non-empty folder
            else:
                os.link(aside, path)  # fails onto an existing file
                aside.unlink()
            return
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- artifact folders
def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST, STAMP) and not p.name.startswith(".ragbench-")}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stats(folder: Path, names: list[str]) -> dict[str, list[int]]:
    out = {}
    for name in names:
        st = (folder / name).stat()
        out[name] = [st.st_size, st.st_mtime_ns]
    return out


def _write_json(path: Path, value: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(value, f, sort_keys=True)
    os.replace(tmp, path)


def write_manifest(folder: Path) -> None:
    """Record every file's size and sha256 (and a stamp: the files were just verified, being just written)."""
    files = _files(folder)
    _write_json(folder / MANIFEST, {name: [p.stat().st_size, file_sha256(p)] for name, p in files.items()})
    _write_json(folder / STAMP, _stats(folder, list(files)))


def verify_folder(folder: Path) -> str | None:
    """None when the folder matches its manifest, else what is wrong (one line).

    A folder built before manifests existed is hashed once and given one (it is trusted as it is)."""
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        return "it is missing"
    if not manifest_path.exists():
        with contextlib.suppress(OSError):  # a read-only cache is still read
            write_manifest(folder)
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected = {str(k): (int(v[0]), str(v[1])) for k, v in manifest.items()}
    except (ValueError, TypeError, IndexError, AttributeError):
        return f"its manifest {MANIFEST} is damaged"
    try:
        stats = _stats(folder, list(expected))
    except FileNotFoundError as e:
        return f"{Path(str(e.filename)).relative_to(folder)} is missing"
    for name, (size, _) in expected.items():
        if stats[name][0] != size:
            return f"{name} is {stats[name][0]:,} bytes, {size:,} expected"
    try:
        if json.loads((folder / STAMP).read_text(encoding="utf-8")) == stats:
            return None  # hashed in full since the files last changed
    except (OSError, ValueError):
        pass
    for name, (_, digest) in expected.items():
        if file_sha256(folder / name) != digest:
            return f"{name}: checksum mismatch"
    with contextlib.suppress(OSError):
        _write_json(folder / STAMP, stats)
    return None
