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

In both, a document larger than K becomes an oversize unit on its own.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ragbench.cache import Cache, make_key
from ragbench.errors import RagbenchError
from ragbench.llm.loading import DEFAULT_MODEL, load_tokenizer
from ragbench.outputs import DerivedCorpus
from ragbench.progress import Reporter
from ragbench.stage import CorpusStage, StageOptions
from ragbench.types import Corpus, Document, Qrels, TaskData

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
    group_by: Literal["auto", "links", "title", "mentions"] = Field(
        "auto", description="auto = links when any document has links, else title | "
                            "mentions: link documents whose text mentions another's title")
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
        return list(self.docs[unit_id].extra["members"])


# -- grouping -------------------------------------------------------------------------------------
def group_by_links(docs: Sequence[Document], links: Mapping[str, Iterable[str]], size: Mapping[str, int],
                   max_tokens: int) -> list[list[str]]:
    """LongRAG's greedy merge over an undirected link graph; returns units as member id lists.

    `links` maps a doc id to linked doc ids (unknown ids ignored). Units are in the order of their
    first member, members in corpus order.
    """
    index = {d.id: i for i, d in enumerate(docs)}
    adj: list[set[int]] = [set() for _ in docs]
    for src, targets in links.items():
        i = index.get(src)
        if i is None:
            continue
        for t in targets:
            j = index.get(t)
            if j is not None and j != i:
                adj[i].add(j)
                adj[j].add(i)
    sizes = [int(size[d.id]) for d in docs]
    group_of = [-1] * len(docs)
    members: dict[int, list[int]] = {}
    gsize: dict[int, int] = {}
    first: dict[int, int] = {}  # a group's first document in corpus order, for ties
    order = sorted((i for i in range(len(docs)) if 1 <= len(adj[i]) <= MAX_DEGREE), key=lambda i: (len(adj[i]), i))
    for gid, i in enumerate(order):
        neighbours = sorted({group_of[j] for j in adj[i] if group_of[j] >= 0}, key=lambda g: (gsize[g], first[g]))
        group, total = [i], sizes[i]
        for g in neighbours:
            if total + gsize[g] > max_tokens:
                break
            group += members.pop(g)
            total += gsize.pop(g)
            del first[g]
        members[gid], gsize[gid], first[gid] = group, total, min(group)
        for m in group:
            group_of[m] = gid
    units = [sorted(m) for m in members.values()]
    units += [[i] for i in range(len(docs)) if group_of[i] < 0]
    return [[docs[i].id for i in u] for u in sorted(units)]


def group_by_title(docs: Sequence[Document], size: Mapping[str, int], max_tokens: int) -> list[list[str]]:
    """Consecutive same-title documents packed greedily into units of <= max_tokens (never split)."""
    units: list[list[str]] = []
    title, total = None, 0
    for d in docs:
        n = int(size[d.id])
        if d.title and d.title == title and total + n <= max_tokens:
            units[-1].append(d.id)
            total += n
        else:
            units.append([d.id])
            title, total = d.title, n
    return units


def resolve_links(corpus: Corpus, field: str) -> tuple[dict[str, list[str]], int]:
    """Each document's `field` values as doc ids (id, exact title, lowercased title); and the unresolved count."""
    by_title: dict[str, str] = {}
    by_lower: dict[str, str] = {}
    for d in corpus.docs.values():
        if d.title:
            by_title.setdefault(d.title, d.id)
            by_lower.setdefault(d.title.lower(), d.id)
    out: dict[str, list[str]] = {}
    unresolved = 0
    for d in corpus.docs.values():
        values = d.extra.get(field)
        if not values:
            continue
        ids = []
        for v in [values] if isinstance(values, str) else values:
            v = str(v)
            hit = v if v in corpus.docs else by_title.get(v) or by_lower.get(v.lower())
            if hit is None:
                unresolved += 1
            else:
                ids.append(hit)
        out[d.id] = ids
    return out, unresolved


def mention_links(corpus: Corpus, min_chars: int = 4) -> dict[str, list[str]]:
    """Each document's links to the documents whose titles its text mentions (word boundaries, case-sensitive)."""
    by_title: dict[str, str] = {}
    for d in corpus.docs.values():
        if len(d.title) >= min_chars:
            by_title.setdefault(d.title, d.id)
    if not by_title:
        return {}
    titles = sorted(by_title, key=len, reverse=True)  # longest first: "New York City" before "New York"
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, titles)) + r")(?!\w)")
    out: dict[str, list[str]] = {}
    for d in corpus.docs.values():
        hits = {by_title[m.group(0)] for m in pattern.finditer(d.text)} - {d.id}
        if hits:
            out[d.id] = sorted(hits)
    return out


def map_qrels(qrels: Qrels, units: Corpus) -> Qrels:
    """Qrels over unit ids: a unit's grade is the highest of its members' (docs in no unit are dropped)."""
    unit_of = {m: uid for uid, u in units.docs.items() for m in u.extra["members"]}
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
    """The corpus of units and its statistics, built once per key and then read from the cache."""
    tokenizer, tok_hash = load_tokenizer(options.tokenizer, cache.root)
    key = units_key(corpus, options, tok_hash)

    def build(tmp: Path) -> None:
        docs = list(corpus.docs.values())
        sizes: dict[str, int] = {}
        with (reporter or Reporter(quiet=True)).task("long units: counting tokens", len(docs), "docs") as advance:
            for b in range(0, len(docs), _BATCH):
                batch = docs[b:b + _BATCH]
                sizes.update(zip((d.id for d in batch), count_tokens(tokenizer, [d.contents() for d in batch]),
                                 strict=True))
                advance(len(batch))
        mode = options.group_by
        if mode == "auto":
            mode = "links" if any(d.extra.get(options.links_field) for d in docs) else "title"
        unresolved = 0
        if mode == "links":
            links, unresolved = resolve_links(corpus, options.links_field)
            groups = group_by_links(docs, links, sizes, options.max_tokens)
        elif mode == "mentions":
            groups = group_by_links(docs, mention_links(corpus), sizes, options.max_tokens)
        else:
            groups = group_by_title(docs, sizes, options.max_tokens)
        width = max(6, len(str(len(groups) - 1)))
        unit_sizes = []
        with gzip.open(tmp / "units.jsonl.gz", "wt", encoding="utf-8", compresslevel=6) as f:
            for n, group in enumerate(groups):
                member_docs = [corpus.docs[m] for m in group]
                tokens = sum(sizes[m] for m in group)
                unit_sizes.append(tokens)
                titles = list(dict.fromkeys(d.title for d in member_docs if d.title))
                row = {"id": f"u{n:0{width}d}", "title": TITLE_SEP.join(titles),
                       "text": options.separator.join(d.text for d in member_docs), "members": group, "tokens": tokens}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        stats = UnitStats(mode, options.max_tokens, len(docs), len(groups), sum(len(g) == 1 for g in groups),
                          sum(t > options.max_tokens for t in unit_sizes), unresolved, _distribution(unit_sizes))
        (tmp / "stats.json").write_text(json.dumps(asdict(stats), indent=2))

    path = cache.artifact(key, build)
    docs: dict[str, Document] = {}
    with gzip.open(path / "units.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            docs[r["id"]] = Document(r["id"], r["text"], r["title"], {"members": r["members"], "tokens": r["tokens"]})
    stats = UnitStats(**json.loads((path / "stats.json").read_text()))
    return UnitCorpus(docs, key, source=str(path)), stats


def _distribution(values: list[int]) -> dict[str, float]:
    if not values:
        return dict.fromkeys(("min", "p10", "median", "mean", "p90", "max"), 0.0)
    a = np.asarray(values, dtype=np.float64)
    return {"min": float(a.min()), "p10": float(np.percentile(a, 10)), "median": float(np.median(a)),
            "mean": round(float(a.mean()), 1), "p90": float(np.percentile(a, 90)), "max": float(a.max())}


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
        return DerivedCorpus(view, {**asdict(stats), "summary": stats.summary()}, built)

    def identity(self) -> dict[str, Any]:
        return {"tokenizer": self.options.tokenizer}
