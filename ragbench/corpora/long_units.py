"""LongRAG long retrieval units (docs/methods.md, "LongRAG long retrieval units"): many short documents become few
units of <= K tokens.

Two ways to form units:

links   LongRAG's greedy merge (TIGER-AI-Lab/LongRAG, preprocess/group_documents.py). Links are
        made undirected; documents with 1 <= degree <= 10000 are processed in ascending degree
        (ties: corpus order). Each starts a group {d}, collects the current groups of its grouped
        neighbours, and merges them smallest first (ties: the group's first document in corpus
        order) while size(G) + size(group) <= K, stopping at the first that does not fit; the
        absorbed groups disappear. Deviations from the original, all deliberate:
        - documents never processed (no resolvable links, or degree > 10000) are kept as single
          units; the original drops them from the corpus, which would make them unretrievable;
        - self-links and links to documents outside the corpus are ignored (not counted in the degree);
        - a link value is a document id, else an exact title, else a case-insensitive title (the
          original's title_map); a title shared by several documents resolves to the first one.
title   for corpora without links: consecutive documents (corpus order) with the same non-empty
        title are packed greedily into units of <= K tokens. Documents are never split; a document
        with an empty title is a unit of its own.
mentions
        for corpora of whole-article passages without hyperlinks: a document links to every other
        document whose title (>= 4 characters) its text mentions, case-sensitively at word
        boundaries (a stand-in for Wikipedia's hyperlinks, which mostly sit on such mentions),
        then LongRAG's greedy merge as for links. Derived from the corpus alone, never from qrels.
        One regular expression over all titles: fine for corpora of thousands of titles; for
        millions, give real links.

articles
        for passages of articles (`corpus:` a passages stage, disjoint windows): an article's consecutive
        passages are packed into units of <= K tokens as in title; the units that hold a whole (short)
        article are then merged by LongRAG's greedy merge along mentions between them, so a long
        article is split into units of its own and short related articles share one.

In all, a document larger than K becomes an oversize unit on its own.

A document's size is the token count of `title + " " + text` (what a retriever indexes by
default), so a unit's indexed contents stay near K. A unit's text is its members' texts in corpus
order joined by `separator` (LongRAG joins with a space; its member order is a set's, i.e.
arbitrary); its title is the members' distinct titles joined with " | " (LongRAG keeps the title
list for the reader prompt and for HotpotQA's title recall); `extra` holds `members` (doc ids) and
`tokens` (the sum of member sizes, the quantity compared with K).

Units are cached as an artifact keyed by the source corpus' fingerprint, the options, the
tokenizer's content hash and VERSION; that key is the derived corpus' fingerprint, so every index
built on the units is keyed by it too.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ragbench import corpus_store
from ragbench.cache import Cache, make_key
from ragbench.corpora import distribution
from ragbench.corpus_store import id_hashes
from ragbench.errors import RagbenchError
from ragbench.llm.loading import DEFAULT_MODEL, load_tokenizer
from ragbench.outputs import DerivedCorpus
from ragbench.progress import Reporter
from ragbench.stage import CorpusStage, StageOptions
from ragbench.tasks.beir import convert_corpus
from ragbench.types import Corpus, Qrels, TaskData

#: Bump when the same options would now produce different units: it invalidates cached units.
VERSION = "1"
#: LongRAG's degree window: documents with more links than this are not processed.
MAX_DEGREE = 10_000
TITLE_SEP = " | "
_BATCH = 2000  # texts per tokenizer call


class LongUnitsOptions(StageOptions):
    """How units are formed.

    `tokenizer` counts sizes. LongRAG counted tiktoken `cl100k_base` tokens; that BPE file is
    downloaded on first use and cannot be fetched offline, so the default is the bundled SmolLM2
    tokenizer (a 49k BPE): counts differ from cl100k_base by a few percent, so K = 4000 here is
    close to, not exactly, LongRAG's K. Any Hugging Face tokenizer name or local folder is allowed.
    """

    max_tokens: int = Field(
        4000, ge=1, description="K: the most tokens a unit may hold (single documents may exceed it)")
    tokenizer: str = Field(
        DEFAULT_MODEL, description="tokenizer that counts sizes: bundled name, local folder or Hub id")
    group_by: Literal["auto", "links", "title", "mentions", "articles"] = Field(
        "auto", description="auto = links when any document has links, else title | "
                            "mentions: link documents whose text mentions another's title | "
                            "articles: an article's consecutive passages, whole short articles merged along mentions")
    links_field: str = Field("links", description="extra field listing linked documents (ids or titles)")
    separator: str = Field(" ", description="joins the members' texts")


@dataclass(frozen=True)
class UnitStats:
    group_by: str
    max_tokens: int
    documents: int
    units: int
    singletons: int  # units of one document
    oversize: int  # units larger than max_tokens (always single documents)
    unresolved_links: int  # link values matching no document (links mode)
    tokens: dict[str, float]  # min, p10, median, mean, p90, max of unit sizes

    def summary(self) -> str:
        t = self.tokens
        return (f"long units ({self.group_by}, K={self.max_tokens}): {self.documents:,} docs -> {self.units:,} units "
                f"({self.singletons:,} singletons, {self.oversize:,} oversize); "
                f"tokens min {t['min']:.0f} p10 {t['p10']:.0f} "
                f"median {t['median']:.0f} mean {t['mean']:.1f} p90 {t['p90']:.0f} max {t['max']:.0f}")


class UnitCorpus(Corpus):
    """A Corpus of units that knows each unit's member documents."""

    __slots__ = ()

    def members(self, unit_id: str) -> list[str]:
        return list(self[unit_id].extra["members"])


# -- grouping, over rows (positions in corpus order) ------------------------------------------------------
def group_by_links(src: np.ndarray | Sequence[int], dst: np.ndarray | Sequence[int], sizes: np.ndarray | Sequence[int],
                   max_tokens: int) -> list[list[int]]:
    """LongRAG's greedy merge over the undirected graph of links `src[i] -> dst[i]` between rows; returns units
    as row lists, in the order of their first member, members in corpus order.

    Links may repeat or point either way; self-links are ignored. The graph is held in numpy (a few bytes a
    link), not as a Python set per document.
    """
    n = len(sizes)
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    a, b = src[src != dst], dst[src != dst]
    pairs = np.unique(np.concatenate([a * n + b, b * n + a]))  # undirected, each neighbour once
    heads, tails = pairs // max(n, 1), pairs % max(n, 1)
    indptr = np.searchsorted(heads, np.arange(n + 1))
    degree = np.diff(indptr)
    order = np.flatnonzero((degree >= 1) & (degree <= MAX_DEGREE))
    order = order[np.argsort(degree[order], kind="stable")]  # ascending degree, ties by corpus order
    group_of = np.full(n, -1, dtype=np.int64)
    members: dict[int, list[int]] = {}
    gsize: dict[int, int] = {}
    first: dict[int, int] = {}  # a group's first document in corpus order, for ties
    for gid, i in enumerate(order.tolist()):
        near = group_of[tails[indptr[i]:indptr[i + 1]]]
        neighbours = sorted(set(near[near >= 0].tolist()), key=lambda g: (gsize[g], first[g]))
        group, total = [i], int(sizes[i])
        for g in neighbours:
            if total + gsize[g] > max_tokens:
                break
            group += members.pop(g)
            total += gsize.pop(g)
            del first[g]
        members[gid], gsize[gid], first[gid] = group, total, min(group)
        group_of[group] = gid
    units = [sorted(m) for m in members.values()]
    units += [[i] for i in np.flatnonzero(group_of < 0).tolist()]
    return sorted(units)


def group_by_title(titles: Iterable[str], sizes: np.ndarray | Sequence[int], max_tokens: int) -> list[list[int]]:
    """Consecutive same-title rows packed greedily into units of <= max_tokens (never split)."""
    units: list[list[int]] = []
    title, total = None, 0
    for i, t in enumerate(titles):
        n = int(sizes[i])
        if t and t == title and total + n <= max_tokens:
            units[-1].append(i)
            total += n
        else:
            units.append([i])
            title, total = t, n
    return units


def group_articles(titles: list[str], sizes: np.ndarray, src: np.ndarray, dst: np.ndarray,
                   max_tokens: int) -> list[list[int]]:
    """Passages of articles: each article's consecutive passages packed into units of <= max_tokens (title), then
    the units that hold a whole article merged by LongRAG's greedy merge along the links `src -> dst` between
    rows (mentions), so that short related articles share a unit and a long article's units stay its own."""
    blocks = group_by_title(titles, sizes, max_tokens)
    block_of = np.empty(len(titles), dtype=np.int64)
    per_title: dict[str, int] = {}
    for b, rows in enumerate(blocks):
        block_of[rows] = b
        per_title[titles[rows[0]]] = per_title.get(titles[rows[0]], 0) + 1
    whole = np.array([bool(titles[rows[0]]) and per_title[titles[rows[0]]] == 1 for rows in blocks], dtype=bool)
    a, b = block_of[np.asarray(src, dtype=np.int64)], block_of[np.asarray(dst, dtype=np.int64)]
    keep = whole[a] & whole[b]
    block_sizes = np.array([int(sizes[rows].sum()) for rows in blocks], dtype=np.int64)
    merged = group_by_links(a[keep], b[keep], block_sizes, max_tokens)
    return sorted(sorted(r for k in group for r in blocks[k]) for group in merged)


class _FirstRow:
    """The first row with each title (or lowercased title), by 64-bit hash, checked against the corpus on
    lookup: 16 bytes a document where a dict of titles would hold every title as a Python string."""

    def __init__(self, corpus: Corpus, lower: bool):
        self.corpus, self.lower = corpus, lower
        keys = (t.lower() if lower else t for t in corpus.texts(("title",)))
        hashes = id_hashes(keys)
        rows = np.flatnonzero(hashes != id_hashes([""])[0])  # untitled documents resolve nothing
        self.hashes, first = np.unique(hashes[rows], return_index=True)
        self.rows = rows[first]

    def find(self, values: list[str]) -> np.ndarray:
        """The first row titled each value, -1 where none is."""
        keys = [v.lower() for v in values] if self.lower else values
        out = np.full(len(keys), -1, dtype=np.int64)
        if not keys or not len(self.hashes):
            return out
        want = id_hashes(keys)
        pos = np.minimum(np.searchsorted(self.hashes, want), len(self.hashes) - 1)
        hit = np.flatnonzero(self.hashes[pos] == want)
        rows = self.rows[pos[hit]]
        titles = self.corpus.store.take(rows, ("title",))["title"]
        for k, row, title in zip(hit.tolist(), rows.tolist(), titles, strict=True):
            if ((title or "").lower() if self.lower else title) == keys[k]:  # not another title's hash
                out[k] = row
        return out


def resolve_links(corpus: Corpus, field: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Each document's `field` values as links between rows (a value is an id, else an exact title, else a
    lowercased title; the first document with that title): (sources, targets, unresolved values)."""
    by_title, by_lower = _FirstRow(corpus, lower=False), _FirstRow(corpus, lower=True)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    unresolved, row = 0, 0
    for batch in corpus.batches(size=_BATCH):
        sources, values = [], []
        for d in batch:
            links = d.extra.get(field)
            if links:
                for v in [links] if isinstance(links, str) else links:
                    sources.append(row)
                    values.append(str(v))
            row += 1
        targets = corpus.rows(values)
        for lookup in (by_title, by_lower):
            todo = np.flatnonzero(targets < 0)
            if len(todo):
                targets[todo] = lookup.find([values[k] for k in todo.tolist()])
        found = targets >= 0
        unresolved += int((~found).sum())
        src.append(np.asarray(sources, dtype=np.int64)[found])
        dst.append(targets[found])
    return np.concatenate(src or [np.empty(0, np.int64)]), np.concatenate(dst or [np.empty(0, np.int64)]), unresolved


def mention_links(corpus: Corpus, min_chars: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Links from each row to the rows whose titles its text mentions (word boundaries, case-sensitive)."""
    by_title: dict[str, int] = {}
    for row, title in enumerate(corpus.texts(("title",))):
        if len(title) >= min_chars:
            by_title.setdefault(title, row)
    src: list[int] = []
    dst: list[int] = []
    if by_title:
        titles = sorted(by_title, key=len, reverse=True)  # longest first: "New York City" before "New York"
        pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, titles)) + r")(?!\w)")
        for row, text in enumerate(corpus.texts(("text",))):
            hits = sorted({by_title[m.group(0)] for m in pattern.finditer(text)} - {row})
            src += [row] * len(hits)
            dst += hits
    return np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)


def map_qrels(qrels: Qrels, units: UnitCorpus) -> Qrels:
    """Qrels over unit ids: a unit's grade is the highest of its members' (docs in no unit are dropped)."""
    judged = {d for rels in qrels.values() for d in rels}
    unit_of: dict[str, str] = {}
    for batch in units.batches(size=_BATCH):  # one pass over the units, keeping only judged members
        for u in batch:
            unit_of.update((m, u.id) for m in u.extra["members"] if m in judged)
    out: Qrels = {}
    for qid, rels in qrels.items():
        mapped: dict[str, int] = {}
        for did, grade in rels.items():
            uid = unit_of.get(did)
            if uid is not None:
                mapped[uid] = max(grade, mapped.get(uid, grade))
        if mapped:
            out[qid] = mapped
    return out


# -- tokenizer -------------------------------------------------------------------------------------
def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Token counts without special tokens, one batched call (the Rust tokenizer when there is one)."""
    if getattr(tokenizer, "is_fast", False):
        return [len(e.ids) for e in tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)]
    enc = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False, truncation=False, verbose=False)
    return [len(ids) for ids in enc["input_ids"]]


# -- building and caching ----------------------------------------------------------------------------
def units_key(corpus: Corpus, options: LongUnitsOptions, tokenizer_hash: str) -> str:
    return make_key("long-units", corpus.fingerprint, options.model_dump(), tokenizer_hash, VERSION)


def build_units(corpus: Corpus, options: LongUnitsOptions, cache: Cache,
                reporter: Reporter | None = None) -> tuple[UnitCorpus, UnitStats]:
    """The corpus of units and its statistics, built once per key and then read from the cache.

    The source corpus is streamed (sizes, titles, links) and members fetched by row; the units are kept
    as units.jsonl.gz (the artifact's format since VERSION 1) and opened as an Arrow store made from it.
    """
    tokenizer, tok_hash = load_tokenizer(options.tokenizer, cache.root)
    key = units_key(corpus, options, tok_hash)

    def build(tmp: Path) -> None:
        n = len(corpus)
        sizes = np.zeros(n, dtype=np.int64)
        with (reporter or Reporter(quiet=True)).task("long units: counting tokens", n, "docs") as advance:
            for start in range(0, n, _BATCH):
                texts = list(corpus.texts(start=start, stop=start + _BATCH))
                sizes[start:start + len(texts)] = count_tokens(tokenizer, texts)
                advance(len(texts))
        mode = options.group_by
        if mode == "auto":
            mode = "links" if any(d.extra.get(options.links_field) for b in corpus.batches(_BATCH) for d in b) \
                else "title"
        unresolved = 0
        if mode == "links":
            src, dst, unresolved = resolve_links(corpus, options.links_field)
            groups = group_by_links(src, dst, sizes, options.max_tokens)
        elif mode == "mentions":
            groups = group_by_links(*mention_links(corpus), sizes, options.max_tokens)
        elif mode == "articles":
            groups = group_articles(list(corpus.texts(("title",))), sizes, *mention_links(corpus), options.max_tokens)
        else:
            groups = group_by_title(corpus.texts(("title",)), sizes, options.max_tokens)
        width = max(6, len(str(len(groups) - 1)))
        unit_sizes = []
        with gzip.open(tmp / "units.jsonl.gz", "wt", encoding="utf-8", compresslevel=6) as f:
            for g0 in range(0, len(groups), _BATCH):  # members fetched a chunk of units at a time
                chunk = groups[g0:g0 + _BATCH]
                fetched = iter(corpus.at([r for group in chunk for r in group]))
                for n_unit, group in enumerate(chunk, start=g0):
                    member_docs = [next(fetched) for _ in group]
                    tokens = int(sizes[group].sum())
                    unit_sizes.append(tokens)
                    titles = list(dict.fromkeys(d.title for d in member_docs if d.title))
                    row = {"id": f"u{n_unit:0{width}d}", "title": TITLE_SEP.join(titles),
                           "text": options.separator.join(d.text for d in member_docs),
                           "members": [d.id for d in member_docs], "tokens": tokens}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        stats = UnitStats(mode, options.max_tokens, n, len(groups), sum(len(g) == 1 for g in groups),
                          sum(t > options.max_tokens for t in unit_sizes), unresolved,
                          distribution(unit_sizes, percentiles=True))
        (tmp / "stats.json").write_text(json.dumps(asdict(stats), indent=2))

    path = cache.artifact(key, build)
    units = path / "units.jsonl.gz"
    store = cache.artifact(make_key("long-units-store", key, corpus_store.FORMAT),
                           lambda tmp: convert_corpus(units, tmp))
    stats = UnitStats(**json.loads((path / "stats.json").read_text()))
    return UnitCorpus.open(store, key, source=str(path)), stats


class LongUnits(CorpusStage):
    """`type: long_units`: a derived corpus of units; stages that name it with `corpus:` retrieve over it.

    The units are built once (cached) and the task's qrels mapped onto unit ids (a unit is as
    relevant as its most relevant member), so IR and answer-recall metrics of the stages that
    read it are over units.
    """

    Options = LongUnitsOptions
    options: LongUnitsOptions

    def derive(self, task: TaskData) -> DerivedCorpus:
        if task.corpus is None:
            raise RagbenchError.at(f"stage {self.env.stage_id}", "long_units needs the task's corpus (give --data)")
        tok_hash = load_tokenizer(self.options.tokenizer, self.env.cache.root)[1]
        built = not self.env.cache.artifact_path(units_key(task.corpus, self.options, tok_hash)).exists()
        units, stats = build_units(task.corpus, self.options, self.env.cache, self.env.reporter)
        self.env.reporter.log(f"{self.env.stage_id}: {stats.summary()}")
        view = dataclasses.replace(task, corpus=units, qrels=map_qrels(task.qrels, units),
                                   fingerprint=make_key(task.fingerprint, units.fingerprint))
        return DerivedCorpus(view, {**asdict(stats), "summary": stats.summary()}, built, members=units.members)

    def identity(self) -> dict[str, Any]:
        return {"tokenizer": self.options.tokenizer}
