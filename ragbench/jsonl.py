"""Reading JSON-lines files (plain or .gz) with every bad line reported as FILE:LINE."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ragbench.errors import RagbenchError


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) of a text file, gunzipped when it ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            yield from enumerate(f, start=1)
    except (OSError, EOFError) as e:
        raise RagbenchError.at(str(path), f"cannot read: {e}") from None


def json_records(path: str | Path, digest: Any = None, hint: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-empty line; `digest` (a hashlib object) sees every raw line.

    A missing file says "file not found" plus `hint` (what was expected there).
    """
    path = Path(path)
    if not path.exists():
        raise RagbenchError.at(str(path), f"file not found{f' ({hint})' if hint else ''}")
    for n, raw in read_lines(path):
        if digest is not None:
            digest.update(raw)
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            raise RagbenchError.at(str(path), f"not valid JSON ({e.msg} at column {e.colno})", line=n) from None
        if not isinstance(rec, dict):
            raise RagbenchError.at(str(path), "expected a JSON object per line", line=n)
        yield n, rec
