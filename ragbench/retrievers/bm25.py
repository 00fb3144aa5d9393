"""BM25 on three engines: bm25s (fast, in-process), rank_bm25 (reference), Lucene (pyserini).

Source and deviations: docs/methods.md, "BM25".

Defaults reproduce pyserini's BEIR "flat" baseline: title and text concatenated, k1=0.9,
b=0.4, Lucene's idf, Porter stemming and its 33 English stopwords.

| option    | bm25s                               | rank_bm25                 | lucene                     |
|-----------|-------------------------------------|---------------------------|----------------------------|
| variant   | lucene, robertson, atire, bm25l, bm25+ | robertson (Okapi), bm25l, bm25+ | lucene                |
| stemmer   | porter, english, none               | porter, english, none     | porter, krovetz, none      |
| stopwords | en (Lucene's set), none             | en, none                  | en (Lucene's set), none    |
| lowercase | on/off                              | on/off                    | always on                  |

robertson: bm25s scores equal rank_bm25's divided by (k1 + 1), except for terms in more than
half the documents (rank_bm25 floors their negative idf at epsilon * mean idf, bm25s at 0).
bm25+: rank_bm25 uses delta 1, bm25s 0.5, so scores differ by a per-query constant; rankings agree.
bm25l: rank-bm25 0.2.2 multiplies each term's score by its frequency (dorianbrown/rank_bm25#5,
fixed upstream after that release), so its bm25l ranks differently from bm25s's.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ragbench.cache import make_key
from ragbench.retrievers.analysis import Analyzer, AnalyzerOptions
from ragbench.retrievers.base import Retriever
from ragbench.stage import StageOptions
from ragbench.types import Query, Ranking, TaskData

_VARIANTS = {
    "bm25s": {"lucene", "robertson", "atire", "bm25l", "bm25+"},
    "rank_bm25": {"robertson", "bm25l", "bm25+"},
    "lucene": {"lucene"},
}


class BM25Options(StageOptions):
    engine: Literal["bm25s", "rank_bm25", "lucene"] = Field("bm25s",
                                                            description="bm25s | rank_bm25 | lucene (pyserini)")
    k1: float = Field(0.9, ge=0, description="term-frequency saturation")
    b: float = Field(0.4, ge=0, le=1, description="length normalisation")
    variant: str | None = Field(
        None, description="idf/tf formula; default: lucene (bm25s, lucene), robertson (rank_bm25)")
    fields: tuple[Literal["title", "text"], ...] = Field(("title", "text"), min_length=1,
                                                         description="document fields indexed, joined by a space")
    analyzer: AnalyzerOptions = Field(default_factory=AnalyzerOptions)
    top_k: int = Field(1000, ge=1, description="documents returned per query")
    threads: int = Field(1, ge=1, description="search threads (bm25s, lucene)")

    @model_validator(mode="after")
    def _engine_support(self) -> BM25Options:
        variant = self.resolved_variant
        if variant not in _VARIANTS[self.engine]:
            choices = ", ".join(sorted(_VARIANTS[self.engine]))
            raise ValueError(f"variant '{variant}' is not available on engine '{self.engine}' (choose from {choices})")
        if self.engine == "lucene" and self.analyzer.stemmer == "english":
            raise ValueError("engine 'lucene' stems with porter, krovetz or none (not 'english')")
        if self.engine != "lucene" and self.analyzer.stemmer == "krovetz":
            raise ValueError(f"stemmer 'krovetz' is only available on engine 'lucene', not '{self.engine}'")
        if self.engine == "lucene" and not self.analyzer.lowercase:
            raise ValueError("engine 'lucene' always lowercases (analyzer.lowercase must be true)")
        return self

    @property
    def resolved_variant(self) -> str:
        return self.variant or ("robertson" if self.engine == "rank_bm25" else "lucene")


class BM25(Retriever):
    Options = BM25Options
    version = "2"  # 2: the analyzer no longer emits an empty term (porter stem of "s")
    options: BM25Options

    def index(self, task: TaskData) -> None:
        assert task.corpus is not None
        o = self.options
        self.doc_ids = list(task.corpus.docs)
        # Lucene applies k1 and b at search time, so its index is shared across them
        params = None if o.engine == "lucene" else (o.k1, o.b)
        index_key = make_key("bm25-index", o.engine, o.resolved_variant, params, o.fields,
                             o.analyzer.model_dump(), task.corpus.fingerprint, self.version)
        texts = (d.contents(o.fields) for d in task.corpus.docs.values())
        self.engine = _ENGINES[o.engine](o, self)
        self.engine.build(texts, len(self.doc_ids), index_key)

    def search(self, queries: list[Query]) -> dict[str, Ranking]:
        return self.engine.search(queries, min(self.options.top_k, len(self.doc_ids)))

    def identity(self) -> dict[str, Any]:
        pkg = {"bm25s": "bm25s", "rank_bm25": "rank-bm25", "lucene": "pyserini"}[self.options.engine]
        ident: dict[str, Any] = {"engine": self.options.engine, "variant": self.options.resolved_variant,
                                 pkg: version(pkg)}
        if self.options.engine == "lucene":
            from ragbench._java import java_version

            ident["java"] = java_version()
        return ident


class _Bm25sEngine:
    def __init__(self, o: BM25Options, stage: BM25):
        self.o, self.stage, self.analyzer = o, stage, Analyzer(o.analyzer)

    def build(self, texts, n: int, key: str) -> None:
        import bm25s

        def build(tmp: Path) -> None:
            with self.stage.env.reporter.task("bm25s: tokenising corpus", n, "docs") as advance:
                tokens = []
                for t in texts:
                    tokens.append(self.analyzer(t))
                    if len(tokens) % 1000 == 0:
                        advance(1000)
                advance(len(tokens) % 1000)
            r = bm25s.BM25(method=self.o.resolved_variant, k1=self.o.k1, b=self.o.b)
            r.index(tokens, show_progress=False)
            r.save(str(tmp))

        path = self.stage.artifact_dir(key, build)
        self.retriever = bm25s.BM25.load(str(path))
        self.doc_ids = self.stage.doc_ids

    def search(self, queries: list[Query], k: int) -> dict[str, Ranking]:
        vocab = self.retriever.vocab_dict
        # unknown query terms are dropped; an all-unknown query gets an empty ranking
        token_ids = [[vocab[t] for t in self.analyzer(q.text) if t in vocab] for q in queries]
        out = {q.id: Ranking(q.id, [], []) for q, ids in zip(queries, token_ids, strict=True) if not ids}
        todo = [(q, ids) for q, ids in zip(queries, token_ids, strict=True) if ids]
        if todo:
            docs, scores = self.retriever.retrieve([ids for _, ids in todo], k=k, show_progress=False,
                                                   n_threads=self.o.threads)
            for (q, _), d_row, s_row in zip(todo, docs, scores, strict=True):
                pairs = [(self.doc_ids[d], float(s)) for d, s in zip(d_row, s_row, strict=True) if s > 0]
                out[q.id] = Ranking.from_scores(q.id, pairs)
        return out


class _RankBm25Engine:
    """The reference implementation: exhaustive scoring of every document, in memory."""

    def __init__(self, o: BM25Options, stage: BM25):
        self.o, self.stage, self.analyzer = o, stage, Analyzer(o.analyzer)

    def build(self, texts, n: int, key: str) -> None:
        import rank_bm25

        classes = {"robertson": rank_bm25.BM25Okapi, "bm25l": rank_bm25.BM25L, "bm25+": rank_bm25.BM25Plus}
        cls = classes[self.o.resolved_variant]
        with self.stage.env.reporter.task("rank_bm25: tokenising corpus", n, "docs") as advance:
            tokens = [self.analyzer(t) for t in texts]
            advance(n)
        self.bm25 = cls(tokens, k1=self.o.k1, b=self.o.b)
        self.doc_ids = self.stage.doc_ids

    def search(self, queries: list[Query], k: int) -> dict[str, Ranking]:
        out = {}
        for q in queries:
            terms = self.analyzer(q.text)
            if not terms:
                out[q.id] = Ranking(q.id, [], [])
                continue
            scores = self.bm25.get_scores(terms)
            top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
            pairs = [(self.doc_ids[i], float(scores[i])) for i in top if scores[i] > 0]
            out[q.id] = Ranking.from_scores(q.id, pairs, k)
        return out


class _LuceneEngine:
    def __init__(self, o: BM25Options, stage: BM25):
        self.o, self.stage = o, stage

    def build(self, texts, n: int, key: str) -> None:
        from ragbench._java import start_jvm

        start_jvm()
        from pyserini.analysis import get_lucene_analyzer
        from pyserini.index.lucene import LuceneIndexer
        from pyserini.search.lucene import LuceneSearcher

        stemmer = self.o.analyzer.stemmer
        keep_stop = self.o.analyzer.stopwords == "none"

        def build(tmp: Path) -> None:
            args = ["-index", str(tmp), "-stemmer", stemmer]
            if keep_stop:
                args.append("-keepStopwords")
            indexer = LuceneIndexer(str(tmp), args=args, threads=max(1, self.o.threads))
            with self.stage.env.reporter.task("lucene: indexing corpus", n, "docs") as advance:
                batch = []
                for doc_id, text in zip(self.stage.doc_ids, texts, strict=True):
                    batch.append({"id": doc_id, "contents": text})
                    if len(batch) == 5000:
                        indexer.add_batch_dict(batch)
                        advance(len(batch))
                        batch = []
                if batch:
                    indexer.add_batch_dict(batch)
                    advance(len(batch))
            indexer.close()
            (tmp / "ragbench.json").write_text(json.dumps({"docs": n}))

        path = self.stage.artifact_dir(key, build)
        self.searcher = LuceneSearcher(str(path))
        self.searcher.set_bm25(self.o.k1, self.o.b)
        analyzer = get_lucene_analyzer(stemmer=stemmer, stemming=stemmer != "none", stopwords=not keep_stop)
        self.searcher.set_analyzer(analyzer)

    def search(self, queries: list[Query], k: int) -> dict[str, Ranking]:
        hits = self.searcher.batch_search([q.text for q in queries], [q.id for q in queries], k=k,
                                          threads=self.o.threads)
        return {q.id: Ranking.from_scores(q.id, [(h.docid, float(h.score)) for h in hits.get(q.id, [])])
                for q in queries}


_ENGINES = {"bm25s": _Bm25sEngine, "rank_bm25": _RankBm25Engine, "lucene": _LuceneEngine}
