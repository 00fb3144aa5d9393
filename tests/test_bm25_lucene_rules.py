"""bm25s ranks as Lucene does once it analyses and counts lengths as Lucene does (`analyzer.rules: lucene`,
`lengths: lucene`, the defaults of `engine: auto`), so auto gives the same results with or without Java.

- Lengths: Lucene's one-byte norm (SmallFloat.intToByte4) by hand here, and against Lucene's own class.
- Analysis: token for token Anserini's DefaultEnglishAnalyzer on real text (PopQA paragraphs, SciFact abstracts)
  and on cases picked for each of its rules.
- Rankings: the bm25s stage and the Lucene stage return the same top 10 on every SciFact query, up to ties at the
  precision Lucene reports (Anserini rounds scores to 4 decimals and orders tied documents by id).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragbench.cache import Cache
from ragbench.progress import Reporter
from ragbench.retrievers.analysis import Analyzer, AnalyzerOptions
from ragbench.retrievers.bm25 import BM25, BM25Options
from ragbench.retrievers.lucene_lengths import lucene_lengths
from ragbench.stage import StageEnv
from ragbench.tasks.beir import load_corpus
from ragbench.types import TaskData
from tests.conftest import require_lucene

SAMPLE = Path(__file__).resolve().parents[1] / "ragbench" / "data" / "popqa_sample"
LUCENE_PRECISION = 1e-4  # Anserini's ScoreTiesAdjusterReranker rounds scores to 4 decimals
#: one text per rule of StandardTokenizer and the filters after it, as ragbench sees them in benchmark text
CASES = [
    "U.S. GDP grew 3.5% in 2019-2020 (vs. 2.9%); see e-mail john_doe@example.com or www.example.org/x?y=1.",
    "Rankin's and the Beatles’ albums; O'Neil's don't 'quoted' 's",
    "İstanbul ΣΟΦΙΑΣ naïve café Ærø straße ﬁnance",
    "CO₂ levels x² ½ ©2020 ®™ — 1,000,000 0.001 v1.2.3 A/B α-helix TNF-α IL-6",
    "ภาษาไทย ក្រុង ကျော်ဆွေ 東京都 ひらがな カタカナ 한국어 עברית العربية",
    "tokens_with_underscores __init__ 12th 1990s' 's-Hertogenbosch",
    "running runs ran easily generalization assembly technology relational hopefulness",
    "a " + "x" * 300 + " long token",
]


def test_lucene_lengths_by_hand():
    """Exact below 24; above, 24 plus the excess kept to its 4 leading bits."""
    n = np.array([0, 1, 23, 24, 31, 32, 39, 40, 41, 47, 48, 100, 1000, 2**31 - 1])
    expected = [0, 1, 23, 24, 31, 32, 39, 40, 40, 46, 48, 96, 984, 24 + (15 << 27)]
    assert lucene_lengths(n).tolist() == expected


@pytest.mark.lucene
def test_lucene_lengths_equal_lucenes_smallfloat():
    require_lucene()
    from ragbench._java import start_jvm

    start_jvm()
    from jnius import autoclass

    small_float = autoclass("org.apache.lucene.util.SmallFloat")
    n = np.concatenate([np.arange(0, 5000), np.arange(5000, 2_000_000, 997), [2**31 - 1]])
    lucene = [small_float.byte4ToInt(small_float.intToByte4(int(i))) for i in n]
    assert lucene_lengths(n).tolist() == lucene


def lucene_analyzer(stemmer: str, keep_stopwords: bool):
    from ragbench._java import start_jvm

    start_jvm()
    from jnius import autoclass

    utils = autoclass("io.anserini.analysis.AnalyzerUtils")
    analyzer = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").fromArguments(stemmer, keep_stopwords, None)
    return lambda text: list(utils.analyze(analyzer, text).toArray())


def texts_of(folder: Path, limit: int | None = None) -> list[str]:
    corpus = load_corpus(folder / "corpus.jsonl.gz")
    return list(corpus.texts(("title", "text")))[:limit]


@pytest.mark.lucene
@pytest.mark.parametrize(("stemmer", "stopwords"), [("porter", "en"), ("none", "none")])
def test_lucene_rules_tokenize_as_lucene(stemmer, stopwords, shared_data):
    require_lucene()
    lucene = lucene_analyzer(stemmer, stopwords == "none")
    ours = Analyzer(AnalyzerOptions(rules="lucene", stemmer=stemmer, stopwords=stopwords))
    texts = [*CASES, *texts_of(SAMPLE), *texts_of(shared_data / "scifact")]
    differ = [t[:80] for t in texts if ours(t) != lucene(t)]
    assert not differ, f"{len(differ)} of {len(texts)} texts analysed otherwise than Lucene: {differ[:3]}"
    # the simple rules are not Lucene's (what this option exists for)
    assert Analyzer(AnalyzerOptions(stemmer=stemmer, stopwords=stopwords))(CASES[0]) != lucene(CASES[0])


def stage(task: TaskData, cache: Path, **options) -> BM25:
    s = BM25(BM25Options(top_k=10, **options), StageEnv(Cache(cache), Reporter(quiet=True), "bm25"))
    s.prepare(task)
    return s


@pytest.mark.lucene
def test_bm25s_with_lucenes_rules_ranks_as_lucene_on_scifact(shared_data, tmp_path, monkeypatch):
    require_lucene()
    from ragbench.tasks import load_task
    from ragbench.tasks.card import load_task_card

    task = load_task(load_task_card("scifact")[0], data_dir=shared_data / "scifact", cache=Cache(tmp_path / "c"))
    lucene = stage(task, tmp_path, engine="lucene").search(task.queries)
    import ragbench._java as java

    monkeypatch.setattr(java, "lucene_missing", lambda: "no Java here")  # what auto runs on a machine without it
    fallback = stage(task, tmp_path)
    assert fallback.options.engine == "bm25s"
    assert (fallback.options.analyzer.rules, fallback.options.lengths) == ("lucene", "lucene")
    got = fallback.search(task.queries)
    tol = LUCENE_PRECISION * 1.1
    differ = [q.id for q in task.queries if not got[q.id].same_up_to_ties(lucene[q.id], tol)]
    identical = sum(got[q.id].docids == lucene[q.id].docids for q in task.queries)
    print(f"scifact: {identical} of {len(task.queries)} top-10 identical, the rest up to ties")
    assert not differ, f"{len(differ)} of {len(task.queries)} queries rank otherwise: {differ[:5]}"
    # with exact lengths and the simple rules (explicit engine: bm25s) they do not
    plain = stage(task, tmp_path, engine="bm25s").search(task.queries)
    assert sum(not plain[q.id].same_up_to_ties(lucene[q.id], tol) for q in task.queries) > 10


def test_defaults_follow_the_engine(monkeypatch):
    """Lucene's rules and lengths wherever Lucene is, or could have been, the engine; an explicit in-process engine
    keeps the simple analyzer and exact lengths (the shipped pipelines' references)."""
    import ragbench._java as java

    monkeypatch.setattr(java, "lucene_missing", lambda: None)
    for options in (BM25Options(), BM25Options(engine="lucene")):
        assert (options.engine, options.analyzer.rules, options.lengths) == ("lucene", "lucene", "lucene")
    explicit = BM25Options(engine="bm25s")
    assert (explicit.analyzer.rules, explicit.lengths) == ("simple", "exact")
    # auto with options only bm25s computes: Lucene's analysis still, exact lengths where the formula is not Lucene's
    robertson = BM25Options(variant="robertson")
    assert (robertson.engine, robertson.analyzer.rules, robertson.lengths) == ("bm25s", "lucene", "exact")
    assert "one byte" in BM25Options(lengths="exact")._auto_note
    assert "simple" in BM25Options(analyzer={"rules": "simple"})._auto_note
    assert BM25Options.model_validate(BM25Options().model_dump()) == BM25Options()  # a lock file reads back the same
    # options built in Python: only what was asked for counts, not the analyzer's own defaults
    built = BM25Options(analyzer=AnalyzerOptions(stopwords="none"))
    assert (built.engine, built.analyzer.rules, built.analyzer.stopwords) == ("lucene", "lucene", "none")


@pytest.mark.parametrize(("options", "message"), [
    ({"engine": "lucene", "analyzer": {"rules": "simple"}}, "analyzer.rules and lengths must be lucene"),
    ({"engine": "lucene", "lengths": "exact"}, "analyzer.rules and lengths must be lucene"),
    ({"engine": "rank_bm25", "lengths": "lucene"}, "lengths 'lucene' is for variant lucene"),
    ({"engine": "bm25s", "variant": "atire", "lengths": "lucene"}, "not variant 'atire'"),
])
def test_options_lucene_cannot_compute_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        BM25Options(**options)


def test_same_up_to_ties():
    from ragbench.types import Ranking

    a = Ranking("q", ["d1", "d2", "d3"], [3.0, 2.0, 1.0])
    assert a.same_up_to_ties(Ranking("q", ["d1", "d2", "d9"], [3.0, 2.0, 1.00005]), 1e-4)  # d9 ties the last
    assert not a.same_up_to_ties(Ranking("q", ["d1", "d9", "d3"], [3.0, 2.0, 1.0]), 1e-4)  # d9 displaces d2
    assert not a.same_up_to_ties(Ranking("q", ["d1", "d2", "d3"], [3.0, 2.1, 1.0]), 1e-4)
    assert not a.same_up_to_ties(a.top(2), 1e-4)


def test_ascii_path_segments_as_unicode_word_boundaries():
    """ASCII text takes a one-regex path; on random strings of the characters UAX #29 treats specially it gives
    the segments of the general path (the `regex` package's word boundaries, checked against Lucene above)."""
    import random

    from ragbench.retrievers import analysis

    def general(text: str) -> list[str]:
        return [s for s in analysis._SEGMENT.findall(text)
                if (s[0].isascii() and s[0].isalnum()) or analysis._EMITTED.search(s)]

    rng = random.Random(0)
    alphabet = "ab1_.:,;'\" -/()?!&@#*+<>\t\n9Z"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        assert analysis.lucene_tokens(text) == [s[:-2] if s.endswith("'s") else s for s in general(text)], text
