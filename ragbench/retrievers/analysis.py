"""The Python-side text analyzer shared by the in-process BM25 engines.

Mirrors Lucene's EnglishAnalyzer closely enough to reproduce pyserini's numbers: word
tokens, lowercase, Lucene's 33 English stopwords, Porter stemming.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_TOKEN = re.compile(r"(?u)\b\w+\b")


class AnalyzerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lowercase: bool = True
    stopwords: Literal["en", "none"] = Field("en", description="en = Lucene's English stopword set (33 words)")
    stemmer: Literal["porter", "english", "krovetz", "none"] = Field(
        "porter", description="porter (all engines), english = Snowball/Porter2 (bm25s, rank_bm25), krovetz (lucene)")
    min_token_length: int = Field(1, ge=1, description="bm25s/rank_bm25 only; Lucene keeps every token")


@lru_cache(maxsize=4)
def _stemmer(name: str):
    import Stemmer

    return Stemmer.Stemmer(name)


class Analyzer:
    def __init__(self, options: AnalyzerOptions):
        from bm25s.stopwords import STOPWORDS_EN

        self.options = options
        self.stop = frozenset(STOPWORDS_EN) if options.stopwords == "en" else frozenset()
        self.stem = _stemmer(options.stemmer).stemWord if options.stemmer != "none" else None
        self._memo: dict[str, str] = {}

    def __call__(self, text: str) -> list[str]:
        if self.options.lowercase:
            text = text.lower()
        tokens = [t for t in _TOKEN.findall(text) if len(t) >= self.options.min_token_length and t not in self.stop]
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
