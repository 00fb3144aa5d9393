"""The Python-side text analyzer shared by the in-process BM25 engines (bm25s, rank_bm25).

Two rule sets (docs/methods.md, "BM25", "Analysis"):
- `lucene`: token for token what the lucene engine indexes (Anserini's DefaultEnglishAnalyzer): Unicode word
  boundaries (UAX #29, as Lucene's StandardTokenizer), possessive 's removed, lowercase, Lucene's 33 English
  stopwords, and Porter's reference stemmer with its departures from the paper (what Lucene's PorterStemFilter
  runs; NLTK's `MARTIN_EXTENSIONS` mode).
- `simple`: \\w+ words, lowercase, the same stopwords, Snowball's Porter. ragbench's analyzer before the lucene
  rules existed; the shipped bm25s pipelines and their committed references use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import regex
from pydantic import BaseModel, ConfigDict, Field

_TOKEN = re.compile(r"(?u)\b\w+\b")
#: a run of South-East Asian script (Thai, Lao, Khmer, Myanmar: one token to StandardTokenizer, which has no
#: dictionary to split it), else a segment between two Unicode word boundaries (whitespace runs are segments too)
_SEGMENT = regex.compile(r"\p{LB=SA}+|\b\S+?\b", flags=regex.WORD | regex.V1)
#: StandardTokenizer emits a segment holding one of these word-break classes (letters, digits, ideographs, kana,
#: Hangul, South-East Asian scripts, emoji); punctuation, symbols and superscript digits alone are dropped
_EMITTED = regex.compile(r"[\p{WB=ALetter}\p{WB=Hebrew_Letter}\p{WB=Numeric}\p{WB=Katakana}\p{Ideographic}"
                         r"\p{Script=Hiragana}\p{Script=Hangul}\p{LB=Complex_Context}\p{Extended_Pictographic}]")
#: the same segments where the text is ASCII, in one pass: UAX #29 there joins letters, digits and "_" (WB5,
#: WB8-10, WB13a/b), letters across : . ' (WB6/7) and digits across , ; . ' (WB11/12), and nothing else
_ASCII_SEGMENT = re.compile(r"[A-Za-z0-9_]+(?:(?:(?<=[A-Za-z])[:.'](?=[A-Za-z])|(?<=[0-9])[,;.'](?=[0-9]))"
                            r"[A-Za-z0-9_]+)*")
#: StandardTokenizer's maxTokenLength: longer tokens are cut into pieces of this length
MAX_TOKEN_LENGTH = 255
#: Java lowercases code point by code point (Character.toLowerCase); Python's str.lower() maps these two otherwise
_JAVA_LOWER = str.maketrans({"\u0130": "i", "\u03a3": "\u03c3"})
_POSSESSIVE = ("'s", "'S", "\u2019s", "\u2019S", "\uff07s", "\uff07S")


class AnalyzerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: Literal["lucene", "simple"] = Field(
        "simple", description="lucene = Lucene's tokenizer, possessive filter and Porter stemmer, token for token "
                              "(the default where the engine is chosen automatically); simple = \\w+ words and "
                              "Snowball's Porter")
    lowercase: bool = True
    stopwords: Literal["en", "none"] = Field("en", description="en = Lucene's English stopword set (33 words)")
    stemmer: Literal["porter", "english", "krovetz", "none"] = Field(
        "porter", description="porter (all engines: Porter's reference stemmer under rules lucene, Snowball's "
                              "under simple), english = Snowball/Porter2 (bm25s, rank_bm25), krovetz (lucene)")
    min_token_length: int = Field(1, ge=1, description="bm25s/rank_bm25 only; Lucene keeps every token")


@lru_cache(maxsize=8)
def _stemmer(name: str, rules: str) -> Callable[[str], str]:
    if name == "porter" and rules == "lucene":
        from nltk.stem.porter import PorterStemmer

        stemmer = PorterStemmer(mode=PorterStemmer.MARTIN_EXTENSIONS)
        return lambda word: stemmer.stem(word, to_lowercase=False)
    import Stemmer

    return Stemmer.Stemmer(name).stemWord


def lucene_tokens(text: str) -> list[str]:
    """StandardTokenizer's tokens, then EnglishPossessiveFilter (Lucene's order, before lowercasing)."""
    out = []
    ascii_ = text.isascii()
    for seg in (_ASCII_SEGMENT if ascii_ else _SEGMENT).findall(text):
        if ascii_:
            if seg.strip("_") == "":  # underscores alone: no letter or digit
                continue
        elif not (seg[0].isascii() and seg[0].isalnum()) and not _EMITTED.search(seg):  # ASCII alnum first: fast
            continue
        pieces = [seg] if len(seg) <= MAX_TOKEN_LENGTH else \
            [seg[i:i + MAX_TOKEN_LENGTH] for i in range(0, len(seg), MAX_TOKEN_LENGTH)]
        for tok in pieces:
            out.append(tok[:-2] if tok.endswith(_POSSESSIVE) else tok)
    return out


class Analyzer:
    def __init__(self, options: AnalyzerOptions):
        from bm25s.stopwords import STOPWORDS_EN

        self.options = options
        self.stop = frozenset(STOPWORDS_EN) if options.stopwords == "en" else frozenset()
        self.stem = _stemmer(options.stemmer, options.rules) if options.stemmer != "none" else None
        self._memo: dict[str, str] = {}

    def __call__(self, text: str) -> list[str]:
        o = self.options
        if o.rules == "lucene":
            tokens = lucene_tokens(text)
            if o.lowercase:
                tokens = [t.lower() if t.isascii() else t.translate(_JAVA_LOWER).lower() for t in tokens]
        else:
            tokens = _TOKEN.findall(text.lower() if o.lowercase else text)
        tokens = [t for t in tokens if len(t) >= o.min_token_length and t not in self.stop]
        if self.stem is None:
            return tokens
        memo = self._memo
        out = []
        for t in tokens:
            s = memo.get(t)
            if s is None:
                s = memo[t] = self.stem(t)
            if s:  # Snowball's porter stems "s" (as in "Rankin's" -> rankin, s) to "": not a term
                out.append(s)
        return out
