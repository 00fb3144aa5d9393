"""Hugging Face `datasets` tables with a field mapping: the path for users who are online.

`path` may also be a local parquet/jsonl/csv file or a `save_to_disk` folder, which is how
the mapping is tested offline.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from ragbench import corpus_store
from ragbench.cache import Cache, make_key
from ragbench.errors import RagbenchError
from ragbench.tasks.card import HFSource, HFSpec
from ragbench.types import Corpus, Qrels, Query

_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv"}


def load_table(src: HFSource, split: str) -> Any:
    import datasets

    split_name = src.split.format(split=split)
    p = Path(src.path)
    try:
        if p.is_dir() and any((p / f).exists() for f in ("state.json", "dataset_dict.json", "dataset_info.json")):
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                if split_name not in ds:
                    raise ValueError(f"no split '{split_name}' (splits: {', '.join(ds)})")
                return ds[split_name]
            return ds
        if p.suffix in _FILE_BUILDERS and p.exists():
            kwargs = {"delimiter": "\t"} if p.suffix == ".tsv" else {}
            return datasets.load_dataset(_FILE_BUILDERS[p.suffix], data_files=str(p), split="train",
                                         cache_dir=_local_cache_dir(p), **kwargs)
        return datasets.load_dataset(src.path, src.name, split=split_name, revision=src.revision)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        what = f"{src.path}" + (f" (config {src.name})" if src.name else "") + f" split {split_name}"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RagbenchError.at(what, f"cannot load Hugging Face dataset: {first}") from None


def _local_cache_dir(p: Path) -> str:
    """A `datasets` cache folder of the local file's own: named by its path, size and mtime in nanoseconds.

    `datasets` keys a local file's cache entry by path and mtime as its filesystem reports it; a file
    rewritten in place with the same reported mtime (coarse clocks, copies that keep mtimes) would be
    served from the old entry. Ours changes with any rewrite, and the table is cached once as before."""
    import datasets

    st = p.stat()
    tag = hashlib.sha256(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:20]
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "ragbench-local" / tag)


def _column(row: dict[str, Any], src: HFSource, field: str, index: int, required: bool = True) -> Any:
    col = src.fields.get(field, field)
    if col == "__index__":
        return index
    if col not in row:
        if not required:
            return None
        raise RagbenchError.at(src.path,
                               f"column '{col}' not found (columns: {', '.join(row)}); map it under fields.{field}",
                               path=f"fields.{field}")
    return row[col]


def wikipedia_id(url: str) -> str | None:
    """A Wikipedia URL -> 'enwiki:Title_with_underscores' (FRAMES' corpus ids)."""
    parsed = urlparse(url.strip())
    if parsed.netloc.lower() not in ("en.wikipedia.org", "en.m.wikipedia.org"):
        return None  # other languages, simple.wikipedia.org, w.wiki short links
    if parsed.path.startswith("/w/index.php"):
        title = parse_qs(parsed.query).get("title", [""])[0]  # parse_qs already percent-decodes
    elif parsed.path.startswith("/wiki/"):
        title = unquote(parsed.path[len("/wiki/"):])
    else:
        return None
    title = title.strip().replace(" ", "_")
    if not title or title.lower().startswith("special:"):
        return None  # e.g. a search URL (/w/index.php?search=...&title=Special:Search)
    return "enwiki:" + title[0].upper() + title[1:]


_GLUE = re.compile(r",\s*(?=https?://)")


def split_glued_links(link: str) -> list[str]:
    """FRAMES' link columns sometimes hold several URLs glued with commas ("url1, url2,"); a comma
    inside a title (`Crosby,_Stills,_Nash_%26_Young`) is not followed by a URL and stays."""
    return [part.strip().rstrip(",").strip() for part in _GLUE.split(link) if part.strip().rstrip(",").strip()]


def _relevant(value: Any, fmt: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        value = ast.literal_eval(text) if text.startswith("[") else [text]
    ids = [str(v) for v in value]
    if fmt == "wikipedia_urls":
        return [i for i in (wikipedia_id(u) for link in ids for u in split_glued_links(link)) if i]
    return ids


def load(spec: HFSpec, split: str, need_corpus: bool,
         cache: Cache | None = None) -> tuple[list[Query], Qrels, Corpus | None, str]:
    digest = hashlib.sha256()
    queries: list[Query] = []
    qrels: Qrels = {}
    table = load_table(spec.queries, split)
    mapped = {spec.queries.fields.get(f, f) for f in ("id", "text", "relevant")}
    for i, row in enumerate(table):
        qid = str(_column(row, spec.queries, "id", i))
        text = _column(row, spec.queries, "text", i)
        if not isinstance(text, str) or not text.strip():
            raise RagbenchError.at(spec.queries.path, f"query '{qid}' (row {i}) has empty text",
                                   path=f"fields.text={spec.queries.fields.get('text', 'text')}")
        extra = {k: v for k, v in row.items() if k not in mapped}
        queries.append(Query(qid, text, extra))
        digest.update(json.dumps([qid, text]).encode())
        if "relevant" in spec.queries.fields:
            for doc in _relevant(_column(row, spec.queries, "relevant", i), spec.relevant_format):
                qrels.setdefault(qid, {})[doc] = 1
    if spec.qrels is not None:
        for i, row in enumerate(load_table(spec.qrels, split)):
            qid = str(_column(row, spec.qrels, "query_id", i))
            doc = str(_column(row, spec.qrels, "doc_id", i))
            score = _column(row, spec.qrels, "score", i, required=False)
            qrels.setdefault(qid, {})[doc] = int(score if score is not None else 1)
            digest.update(f"{qid}\t{doc}\t{score}".encode())
    corpus = None
    if need_corpus and spec.corpus is not None:
        corpus = load_corpus(spec.corpus, split, cache or Cache())
    return queries, qrels, corpus, digest.hexdigest()


def load_corpus(src: HFSource, split: str, cache: Cache) -> Corpus:
    """The corpus table converted once into an Arrow store in the cache, keyed by what identifies the
    loaded table (its `datasets` fingerprint and cache files), so a second load converts nothing."""
    table = load_table(src, split)
    files = [(f["filename"], *_stat(f["filename"])) for f in getattr(table, "cache_files", [])]
    key = make_key("hf-corpus-store", src.model_dump(), split, getattr(table, "_fingerprint", None), files,
                   corpus_store.FORMAT)
    folder = cache.artifact(key, lambda tmp: _convert(table, src, tmp))
    return Corpus.open(folder, corpus_store.read_meta(folder)["fingerprint"], source=f"hf:{src.path}")


def _stat(filename: str) -> tuple[int, int]:
    st = Path(filename).stat()
    return st.st_size, st.st_mtime_ns


def _convert(table: Any, src: HFSource, folder: Path) -> None:
    """Stream the table in batches into a store; the fingerprint is the sha256 of each row's [id, title, text]."""
    digest = hashlib.sha256()
    mapped = {src.fields.get(f, f) for f in ("id", "text", "title")}
    i = 0
    with corpus_store.Writer(folder) as writer:
        for batch in table.iter(batch_size=corpus_store.BATCH_ROWS):
            names = list(batch)
            for values in zip(*(batch[n] for n in names), strict=True):
                row = dict(zip(names, values, strict=True))
                did = str(_column(row, src, "id", i))
                text = _column(row, src, "text", i) or ""
                title = _column(row, src, "title", i, required=False) or ""
                extra = {k: v for k, v in row.items() if k not in mapped}
                writer.add((did, str(title), str(text),
                            json.dumps(extra, ensure_ascii=False, default=str) if extra else None))
                digest.update(json.dumps([did, title, text]).encode())
                i += 1
        duplicate = writer.close(fingerprint=digest.hexdigest(), source=f"hf:{src.path}")
    if duplicate is not None:
        raise RagbenchError.at(src.path, f"duplicate document id '{duplicate[1]}' (row {duplicate[0]})",
                               path=f"fields.id={src.fields.get('id', 'id')}")
