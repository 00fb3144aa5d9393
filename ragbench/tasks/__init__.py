"""Load a task (queries, qrels, corpus) from wherever its data is.

Resolution order: `--data DIR`, then `$RAGBENCH_DATA/<task>`, then data embedded in the
package, then an ir_datasets id (`--task irds:<id>`), then the card's Hugging Face dataset names
(the paths for users who are online).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ragbench.cache import Cache
from ragbench.errors import RagbenchError
from ragbench.progress import Reporter
from ragbench.tasks import beir
from ragbench.tasks.card import TaskCard
from ragbench.types import Corpus, Qrels, Query, TaskData

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "data"


def data_folder(card: TaskCard, data_dir: str | Path | None) -> Path | None:
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise RagbenchError.at(str(folder), "--data: folder not found")
        return folder
    env = os.environ.get("RAGBENCH_DATA")
    if env and (Path(env) / card.name).is_dir():
        return Path(env) / card.name
    if card.embedded:
        return EMBEDDED_DIR / card.embedded
    return None


def _missing_corpus(card: TaskCard, where: str) -> RagbenchError:
    hub = (f", or run online to load the Hugging Face dataset '{card.hf.corpus.path}'"
           if card.hf and card.hf.corpus else "")
    hint = f" ({card.corpus_hint})" if card.corpus_hint else ""
    return RagbenchError.at(where, f"task '{card.name}' has no corpus here: put a corpus.jsonl[.gz] (id, title, text) "
                                   f"in a folder with its queries and qrels and pass --data DIR{hub}{hint}")


def load_task(card: TaskCard, split: str | None = None, data_dir: str | Path | None = None,
              limit: int | None = None, need_corpus: bool = True, reporter: Reporter | None = None,
              cache: Cache | None = None) -> TaskData:
    """The task's queries, qrels and corpus; the corpus is converted once into `cache` (default: the
    user's) as an Arrow store and memory-mapped from there."""
    reporter = reporter or Reporter(quiet=True)
    cache = cache or Cache()
    split = split or card.default_split
    if split not in card.splits:
        raise RagbenchError.at(f"task {card.name}",
                               f"--split: unknown split '{split}' (known: {', '.join(card.splits)})")
    spec = card.splits[split]
    folder = data_folder(card, data_dir)
    corpus: Corpus | None = None
    if folder is not None:
        qpath = folder / "queries.jsonl"
        if not qpath.exists():
            raise RagbenchError.at(str(qpath), "file not found (a task folder needs queries.jsonl and qrels.tsv)")
        qfile = beir.qrels_path(folder, split)
        if qfile is None:
            raise RagbenchError.at(str(folder / "qrels.tsv"),
                                   "file not found (a task folder needs queries.jsonl and qrels.tsv)")
        queries, _ = beir.load_queries(qpath)
        qrels, _ = beir.load_qrels(qfile)
        if need_corpus:
            cpath = beir.find(folder, "corpus")
            if cpath is None:
                raise _missing_corpus(card, str(folder / "corpus.jsonl.gz"))
            corpus = beir.load_corpus(cpath, cache, reporter)
        source, qrels_source = str(folder), str(qfile)
    elif card.irds is not None:
        from ragbench.tasks import irds

        queries, qrels, corpus = irds.load(card.irds, need_corpus, cache, reporter)
        source = qrels_source = f"irds:{card.irds}"
    elif card.hf is not None:
        from ragbench.tasks import hf

        hf_split = spec.hf_split or split
        queries, qrels, corpus, _ = hf.load(card.hf, hf_split, need_corpus, cache)
        if need_corpus and corpus is None:
            raise _missing_corpus(card, f"task {card.name}")
        source, qrels_source = f"hf:{card.hf.queries.path}", f"hf:{card.hf.queries.path}"
    else:
        raise RagbenchError.at(f"task {card.name}",
                               "no data found: pass --data DIR or set RAGBENCH_DATA to a folder holding "
                               f"'{card.name}/' (queries.jsonl, qrels.tsv, corpus.jsonl.gz)")

    queries = pool = _select(queries, qrels, spec.where, card, reporter, qrels_source)
    if limit is not None:
        queries = queries[:limit]
    qrels = {q.id: qrels[q.id] for q in queries}
    if corpus is not None:
        missing = int((corpus.rows([d for rels in qrels.values() for d in rels]) < 0).sum())
        if missing:
            judged = sum(map(len, qrels.values()))
            reporter.warn(f"{qrels_source}: {missing} of {judged} judged documents are not in the corpus "
                          f"({corpus.source})")
    digest = hashlib.sha256(json.dumps([card.name, split, [(q.id, q.text) for q in queries],
                                        sorted((q, sorted(r.items())) for q, r in qrels.items())]).encode())
    if corpus is not None:
        digest.update(corpus.fingerprint.encode())
    pool_json = json.dumps([(q.id, q.text, q.extra) for q in pool], sort_keys=True, default=str)
    pool_digest = hashlib.sha256(pool_json.encode())
    return TaskData(card.name, split, queries, qrels, corpus, source, digest.hexdigest(), card.answers_field,
                    pool, pool_digest.hexdigest())


def _select(queries: list[Query], qrels: Qrels, where: dict, card: TaskCard, reporter: Reporter,
            qrels_source: str) -> list[Query]:
    if where:
        fields_present = any(all(k in q.extra for k in where) for q in queries)
        if fields_present:
            queries = [q for q in queries if all(_eq(q.extra.get(k), v) for k, v in where.items())]
        else:
            reporter.log(f"queries have no field(s) {', '.join(where)}; the split is taken from the qrels file")
    kept = [q for q in queries if qrels.get(q.id)]
    if len(kept) < len(queries):
        reporter.warn(f"{len(queries) - len(kept)} of {len(queries)} queries have no qrels in {qrels_source}; "
                      "they are skipped (BEIR convention)")
    if not kept:
        raise RagbenchError.at(qrels_source,
                               f"no query of task '{card.name}' has qrels; check the split and the query ids")
    return kept


def _eq(value: object, expected: object) -> bool:
    return value == expected or str(value) == str(expected)
