"""Tasks from `ir_datasets` (`--task irds:<id>`, e.g. irds:beir/scifact/test, irds:msmarco-passage/dev/small):
the hundreds of collections IR researchers use, through the package's own loaders, downloads and caches.

The queries and qrels are read from the dataset's iterators; the documents are streamed once into a
corpus.jsonl.gz cache artifact (keyed by the id and the ir_datasets version) and converted to an Arrow
store like any corpus, so later runs memory-map it. A document's title is its `title` field when it has
one; its text is its `text` field, else ir_datasets' `default_text()` (its text fields joined). A query's
text is its `text` field, else `default_text()`.
"""

from __future__ import annotations

import gzip
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ragbench.cache import Cache, make_key
from ragbench.errors import RagbenchError
from ragbench.progress import Reporter
from ragbench.tasks import beir
from ragbench.types import Corpus, Qrels, Query


def dataset(irds_id: str) -> Any:
    try:
        import ir_datasets
    except ImportError:
        raise RagbenchError.at(f"irds:{irds_id}", "ir_datasets is not installed: pip install 'ragbench[irds]'") \
            from None
    try:
        return ir_datasets.load(irds_id)
    except KeyError:
        raise RagbenchError.at(f"irds:{irds_id}", "unknown ir_datasets id (see https://ir-datasets.com)") from None


def _text(item: Any) -> str:
    text = getattr(item, "text", None)
    return text if isinstance(text, str) else item.default_text()


def load(irds_id: str, need_corpus: bool, cache: Cache, reporter: Reporter) -> tuple[list[Query], Qrels, Corpus | None]:
    ds = dataset(irds_id)
    where = f"irds:{irds_id}"
    if not ds.has_queries() or not ds.has_qrels():
        raise RagbenchError.at(where, "the dataset has no queries or no qrels (pick a split, e.g. beir/scifact/test)")
    queries = [Query(str(q.query_id), _text(q)) for q in ds.queries_iter()]
    qrels: Qrels = {}
    for r in ds.qrels_iter():
        qrels.setdefault(str(r.query_id), {})[str(r.doc_id)] = int(r.relevance)
    corpus = None
    if need_corpus:
        if not ds.has_docs():
            raise RagbenchError.at(where, "the dataset has no documents")
        key = make_key("irds-corpus", irds_id, version("ir_datasets"))
        if not cache.artifact_path(key).exists():
            reporter.log(f"{where}: writing its {ds.docs_count() or ''} documents to the cache (once)")
        folder = cache.artifact(key, lambda tmp: _write_docs(ds, tmp / "corpus.jsonl.gz"))
        corpus = beir.load_corpus(folder / "corpus.jsonl.gz", cache, reporter)
    return queries, qrels, corpus


def _write_docs(ds: Any, path: Path) -> None:
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as f:
        for d in ds.docs_iter():
            row = {"_id": str(d.doc_id), "title": getattr(d, "title", "") or "", "text": _text(d)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
