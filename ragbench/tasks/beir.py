"""Local BEIR-style task folders: corpus.jsonl[.gz], queries.jsonl, qrels.tsv or qrels/<split>.tsv.

Every malformed line is reported with its file and line number; ids are strings. The corpus is
converted once into an Arrow store (corpus_store) and memory-mapped, never held as Python objects.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ragbench import corpus_store
from ragbench.cache import Cache, make_key
from ragbench.errors import RagbenchError
from ragbench.jsonl import json_records, read_lines
from ragbench.progress import Reporter
from ragbench.types import Corpus, Qrels, Query


def find(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).exists():
            return folder / name
    return None


def _id(rec: dict[str, Any], path: Path, n: int) -> str:
    value = rec.get("_id", rec.get("id"))
    if value is None or str(value) == "":
        raise RagbenchError.at(str(path), "missing 'id' (or '_id')", line=n, path="id")
    return str(value)


def load_corpus(path: Path, cache: Cache | None = None, reporter: Reporter | None = None) -> Corpus:
    """The corpus, converted once into an Arrow store in the cache and memory-mapped from there.

    The store is found again by the file's resolved path, size and modification time (and the store
    format), so a second load reads nothing of the JSONL; its fingerprint, the sha256 of the file's raw
    lines (what every cache key depends on), is kept with it.
    """
    path = Path(path)
    if not path.exists():
        raise RagbenchError.at(str(path), "file not found")
    cache = cache or Cache()
    st = path.stat()
    key = make_key("corpus-store", str(path.resolve()), st.st_size, st.st_mtime_ns, corpus_store.FORMAT)
    if reporter is not None and not cache.artifact_path(key).exists():
        reporter.log(f"{path}: converting to Arrow (once; later runs memory-map it from the cache)")
    folder = cache.artifact(key, lambda tmp: convert_corpus(path, tmp))
    return Corpus.open(folder, corpus_store.read_meta(folder)["fingerprint"], source=str(path))


def convert_corpus(path: Path, folder: Path) -> str:
    """Stream a corpus.jsonl[.gz] into a store in `folder`, each bad line reported; returns the fingerprint."""
    digest = hashlib.sha256()
    with corpus_store.Writer(folder) as writer:
        for n, rec in json_records(path, digest):
            did = _id(rec, path, n)
            text = rec.get("text")
            if not isinstance(text, str):
                raise RagbenchError.at(str(path), "missing or non-string 'text'", line=n, path="text")
            extra = {k: v for k, v in rec.items() if k not in ("_id", "id", "text", "title")}
            extra_json = json.dumps(extra, ensure_ascii=False) if extra else None
            writer.add((did, str(rec.get("title") or ""), text, extra_json))
        duplicate = writer.close(fingerprint=digest.hexdigest(), source=str(path))
    if duplicate is not None:
        row, did = duplicate
        line = next(n for i, (n, _) in enumerate(json_records(path)) if i == row)
        raise RagbenchError.at(str(path), f"duplicate document id '{did}'", line=line, path="id")
    return digest.hexdigest()


def load_queries(path: Path) -> tuple[list[Query], str]:
    digest = hashlib.sha256()
    queries: list[Query] = []
    seen: set[str] = set()
    for n, rec in json_records(path, digest):
        qid = _id(rec, path, n)
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            raise RagbenchError.at(str(path), f"query '{qid}' has an empty or missing 'text'", line=n, path="text")
        if qid in seen:
            raise RagbenchError.at(str(path), f"duplicate query id '{qid}'", line=n, path="id")
        seen.add(qid)
        queries.append(Query(qid, text, {k: v for k, v in rec.items() if k not in ("_id", "id", "text")}))
    return queries, digest.hexdigest()


def load_qrels(path: Path) -> tuple[Qrels, str]:
    """TSV with a `query-id corpus-id score` header (BEIR), or 4-column TREC qrels."""
    digest = hashlib.sha256()
    qrels: Qrels = {}
    for n, raw in read_lines(path):
        digest.update(raw)
        line = raw.decode("utf-8").strip()
        if not line:
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if n == 1 and not parts[-1].lstrip("-").isdigit():
            continue  # header
        if len(parts) == 4:  # TREC: qid iter docid rel
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise RagbenchError.at(str(path), f"expected 'query-id<TAB>corpus-id<TAB>score', got {len(parts)} columns",
                                   line=n)
        try:
            score = int(float(parts[2]))
        except ValueError:
            raise RagbenchError.at(str(path), f"score must be an integer, got {parts[2]!r}", line=n,
                                   path="score") from None
        qrels.setdefault(parts[0], {})[parts[1]] = score
    return qrels, digest.hexdigest()


def qrels_path(folder: Path, split: str) -> Path | None:
    for p in (folder / "qrels" / f"{split}.tsv", folder / "qrels.tsv"):
        if p.exists():
            return p
    return None
