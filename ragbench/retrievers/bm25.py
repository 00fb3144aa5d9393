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
| rules     | lucene, simple                      | lucene, simple            | lucene                     |
| lengths   | exact, lucene (variant lucene)      | exact                     | lucene (one byte)          |

With `rules: lucene` and `lengths: lucene` (the defaults wherever Lucene is, or could have been, the engine)
bm25s ranks as Lucene does, up to ties: `engine: auto` gives the same results with or without Java.

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
from pydantic import Field, ModelWrapValidatorHandler, PrivateAttr, model_validator

from ragbench.cache import make_key
from ragbench.retrievers.analysis import Analyzer, AnalyzerOptions
from ragbench.retrievers.base import Retriever
from ragbench.stage import EXECUTION, StageOptions
from ragbench.types import Corpus, Query, Ranking, TaskData

#: Lucene's indexing buffer (MB; Lucene's default): with the JVM heap kept small (_java.py), indexing memory does
#: not grow with the corpus. Segments are flushed and merged as they fill; scores and their order do not change.
LUCENE_BUFFER_MB = 16

_VARIANTS = {
    "bm25s": {"lucene", "robertson", "atire", "bm25l", "bm25+"},
    "rank_bm25": {"robertson", "bm25l", "bm25+"},
    "lucene": {"lucene"},
}


class BM25Options(StageOptions):
    engine: Literal["auto", "bm25s", "rank_bm25", "lucene"] = Field(
        "auto", description="auto (the default: lucene, or bm25s where Lucene is not installed or cannot compute "
                              "the options) | bm25s | rank_bm25 | lucene (pyserini)")
    k1: float = Field(0.9, ge=0, description="term-frequency saturation")
    b: float = Field(0.4, ge=0, le=1, description="length normalisation")
    variant: str | None = Field(
        None, description="idf/tf formula; default: lucene (bm25s, lucene), robertson (rank_bm25)")
    fields: tuple[Literal["title", "text"], ...] = Field(("title", "text"), min_length=1,
                                                         description="document fields indexed, joined by a space")
    analyzer: AnalyzerOptions = Field(default_factory=AnalyzerOptions)
    lengths: Literal["exact", "lucene"] = Field(
        "exact", description="document lengths in the formula: exact, or as Lucene stores them (one byte: exact to "
                             "23 tokens, then 4 significant bits), so that bm25s ranks as Lucene does (default: "
                             "lucene where the engine is lucene or chosen automatically)")
    top_k: int = Field(1000, ge=1, description="documents returned per query")
    threads: int = Field(1, ge=1, json_schema_extra=EXECUTION, description="search threads (bm25s, lucene)")

    _auto_note: str | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _auto_engine(cls, data: Any, handler: ModelWrapValidatorHandler[BM25Options]) -> BM25Options:
        """`engine: auto` (or none given) becomes the engine that runs: the lock file, the cache keys and the
        results then name it, and an explicit `engine: lucene` shares them. Why it is not Lucene is kept for the
        one line the stage prints."""
        note = None
        if isinstance(data, dict):
            engine = data.get("engine", "auto")
            if engine == "auto":
                note = auto_engine_note(data)
                data = {**data, "engine": "lucene" if note is None else "bm25s"}
            if engine in ("auto", "lucene"):  # Lucene's analysis and lengths, which the bm25s fallback reproduces
                data = _lucene_defaults(data)
        options = handler(data)
        options._auto_note = note
        return options

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
        if self.engine == "lucene" and (self.analyzer.rules, self.lengths) != ("lucene", "lucene"):
            raise ValueError("engine 'lucene' analyses with Lucene's rules and stores Lucene's lengths "
                             "(analyzer.rules and lengths must be lucene)")
        if self.lengths == "lucene" and (self.engine == "rank_bm25" or variant != "lucene"):
            raise ValueError(f"lengths 'lucene' is for variant lucene on engine bm25s or lucene, not variant "
                             f"'{variant}' on '{self.engine}'")
        return self

    @property
    def resolved_variant(self) -> str:
        return self.variant or ("robertson" if self.engine == "rank_bm25" else "lucene")


def _asked(analyzer: AnalyzerOptions | dict[str, Any] | None) -> dict[str, Any]:
    """The analyzer options given, not the in-process engines' defaults (an AnalyzerOptions: its fields set)."""
    if isinstance(analyzer, AnalyzerOptions):
        return analyzer.model_dump(include=analyzer.model_fields_set)
    return dict(analyzer or {})


def _lucene_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Lucene's analysis rules and document lengths wherever the options leave them out."""
    analyzer = {"rules": "lucene", **_asked(data.get("analyzer"))}
    lengths = data.get("lengths") or ("lucene" if data.get("variant") in (None, "lucene") else "exact")
    return {**data, "analyzer": analyzer, "lengths": lengths}


def auto_engine_note(options: dict[str, Any]) -> str | None:
    """Why `engine: auto` runs bm25s instead of Lucene (the faster: bench/retrieval.py), or None for Lucene."""
    from ragbench._java import lucene_missing

    analyzer = _asked(options.get("analyzer"))
    if options.get("variant") not in (None, "lucene"):
        return f"variant '{options['variant']}' is not Lucene's"
    if analyzer.get("stemmer") == "english":
        return "Lucene has no 'english' (Snowball) stemmer"
    if analyzer.get("lowercase") is False:
        return "Lucene always lowercases"
    if analyzer.get("rules") == "simple":
        return "Lucene analyses with its own rules, not 'simple'"
    if options.get("lengths") == "exact":
        return "Lucene stores document lengths in one byte, not exactly"
    missing = lucene_missing()
    return f"{missing} (pip install 'ragbench[lucene]')" if missing else None


class BM25(Retriever):
    Options = BM25Options
    version = "2"  # 2: the analyzer no longer emits an empty term (porter stem of "s")
    options: BM25Options

    def index(self, task: TaskData) -> None:
        assert task.corpus is not None
        o = self.options
        self.corpus = task.corpus
        # Lucene applies k1 and b at search time, so its index is shared across them
        params = None if o.engine == "lucene" else (o.k1, o.b)
        index_key = make_key("bm25-index", o.engine, o.resolved_variant, params, o.fields,
                             o.analyzer.model_dump(), o.lengths, task.corpus.fingerprint, self.version)
        if o._auto_note:
            self.env.reporter.log(f"{self.env.stage_id}: engine auto runs bm25s, not Lucene: {o._auto_note}")
        self.engine = _ENGINES[o.engine](o, self)
        self.engine.build(task.corpus, index_key)

    def search(self, queries: list[Query]) -> dict[str, Ranking]:
        return self.engine.search(queries, min(self.options.top_k, len(self.corpus)))

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

    def build(self, corpus: Corpus, key: str) -> None:
        import bm25s

        def build(tmp: Path) -> None:
            with self.stage.env.reporter.task("bm25s: tokenising corpus", len(corpus), "docs") as advance:
                tokens = []
                for t in corpus.texts(self.o.fields):
                    tokens.append(self.analyzer(t))
                    if len(tokens) % 1000 == 0:
                        advance(1000)
                advance(len(tokens) % 1000)
            if self.o.lengths == "lucene":
                from ragbench.retrievers.lucene_lengths import LuceneLengthsBM25 as cls
            else:
                cls = bm25s.BM25
            r = cls(method=self.o.resolved_variant, k1=self.o.k1, b=self.o.b)
            r.index(tokens, show_progress=False)
            r.save(str(tmp))

        path = self.stage.artifact_dir(key, build)
        self.retriever = bm25s.BM25.load(str(path), mmap=True)  # the score matrix stays on disk, paged in
        self.corpus = corpus

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
                keep = s_row > 0
                ids = self.corpus.id_at(d_row[keep])
                out[q.id] = Ranking.from_scores(q.id, list(zip(ids, s_row[keep].tolist(), strict=True)))
        return out


class _RankBm25Engine:
    """The reference implementation: exhaustive scoring of every document, in memory."""

    def __init__(self, o: BM25Options, stage: BM25):
        self.o, self.stage, self.analyzer = o, stage, Analyzer(o.analyzer)

    def build(self, corpus: Corpus, key: str) -> None:
        import rank_bm25

        classes = {"robertson": rank_bm25.BM25Okapi, "bm25l": rank_bm25.BM25L, "bm25+": rank_bm25.BM25Plus}
        cls = classes[self.o.resolved_variant]
        with self.stage.env.reporter.task("rank_bm25: tokenising corpus", len(corpus), "docs") as advance:
            tokens = [self.analyzer(t) for t in corpus.texts(self.o.fields)]
            advance(len(corpus))
        self.bm25 = cls(tokens, k1=self.o.k1, b=self.o.b)
        self.corpus = corpus

    def search(self, queries: list[Query], k: int) -> dict[str, Ranking]:
        out = {}
        for q in queries:
            terms = self.analyzer(q.text)
            if not terms:
                out[q.id] = Ranking(q.id, [], [])
                continue
            scores = self.bm25.get_scores(terms)
            top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
            top = top[scores[top] > 0]
            pairs = list(zip(self.corpus.id_at(top), scores[top].tolist(), strict=True))
            out[q.id] = Ranking.from_scores(q.id, pairs, k)
        return out


class _LuceneEngine:
    """A Lucene index written with Anserini's analyzer and document generator, searched by Anserini's
    SimpleSearcher (what pyserini's LuceneSearcher wraps).

    The IndexWriter is ours, not pyserini's LuceneIndexer (Anserini's SimpleIndexer): that one ignores
    `-memoryBuffer` and buffers the whole corpus on the heap until it closes (about 110 MB per million
    20-word documents). Ours flushes every LUCENE_BUFFER_MB and merges only adjacent segments, so
    documents keep their corpus order (Lucene breaks score ties by it) and the index searches exactly as
    SimpleIndexer's. pyserini.search is not imported: it loads torch, transformers, faiss and onnxruntime
    (about 300 MB and most of a minute) that BM25 never uses.
    """

    def __init__(self, o: BM25Options, stage: BM25):
        self.o, self.stage = o, stage

    def build(self, corpus: Corpus, key: str) -> None:
        from ragbench._java import start_jvm

        start_jvm()
        from jnius import autoclass
        from pyserini.analysis import get_lucene_analyzer

        stemmer = self.o.analyzer.stemmer
        keep_stop = self.o.analyzer.stopwords == "none"

        def build(tmp: Path) -> None:
            analyzer = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").fromArguments(stemmer, keep_stop, None)
            config = autoclass("org.apache.lucene.index.IndexWriterConfig")(analyzer)
            config.setOpenMode(autoclass("org.apache.lucene.index.IndexWriterConfig$OpenMode").CREATE)
            config.setRAMBufferSizeMB(float(LUCENE_BUFFER_MB))
            config.setMergePolicy(autoclass("org.apache.lucene.index.LogByteSizeMergePolicy")())
            folder = autoclass("java.io.File")(str(tmp)).toPath()
            directory = autoclass("org.apache.lucene.store.FSDirectory").open(folder)
            writer = autoclass("org.apache.lucene.index.IndexWriter")(directory, config)
            generator = autoclass("io.anserini.index.generator.DefaultLuceneDocumentGenerator")(
                autoclass("io.anserini.index.IndexCollection$Args")())
            document = autoclass("io.anserini.collection.JsonCollection$Document")
            n = len(corpus)
            with self.stage.env.reporter.task("lucene: indexing corpus", n, "docs") as advance:
                done = 0
                for doc_id, text in zip(corpus, corpus.texts(self.o.fields), strict=True):  # two streams, in step
                    writer.addDocument(generator.createDocument(document.fromFields(doc_id, text)))
                    done += 1
                    if done % 5000 == 0:
                        advance(5000)
                advance(done % 5000)
            writer.commit()
            writer.close()
            (tmp / "ragbench.json").write_text(json.dumps({"docs": n}))

        self.path = self.stage.artifact_dir(key, build)
        self.searcher = autoclass("io.anserini.search.SimpleSearcher")(str(self.path))
        self.searcher.set_bm25(float(self.o.k1), float(self.o.b))
        analyzer = get_lucene_analyzer(stemmer=stemmer, stemming=stemmer != "none", stopwords=not keep_stop)
        self.searcher.set_analyzer(analyzer)
        self._list = autoclass("java.util.ArrayList")

    def search(self, queries: list[Query], k: int) -> dict[str, Ranking]:
        texts, qids = self._list(), self._list()
        for q in queries:
            texts.add(q.text)
            qids.add(q.id)
        results = self.searcher.batch_search(texts, qids, int(k), int(self.o.threads))
        hits = {r.getKey(): r.getValue() for r in results.entrySet().toArray()}
        return {q.id: Ranking.from_scores(q.id, [(h.docid, float(h.score)) for h in hits.get(q.id, [])])
                for q in queries}


_ENGINES = {"bm25s": _Bm25sEngine, "rank_bm25": _RankBm25Engine, "lucene": _LuceneEngine}
