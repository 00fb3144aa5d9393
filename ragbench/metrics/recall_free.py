"""Retrieval measures that do not need the full set of relevant documents.

See docs/methods.md, "Recall-free retrieval measures".

Schwartz, Vasilyev and Sawaya (2025), "How important is Recall for Measuring Retrieval Quality?",
code PrimerAI/primer-research (recall_role/corr.py). For one query and a cutoff K, with n_p the
relevant documents in the top K and n_n = K - n_p:

    T_alpha@K     (1 - alpha) * n_p - alpha * n_n / (n_p + n_n)  =  (1 - alpha) * n_p - alpha * (1 - P@K)
                  the paper's recall-free measure; alpha = 0.5 by default (ours: the paper picks the alpha
                  that correlates best per segment)
    F_alpha@K     n_p / (alpha * K + (1 - alpha) * N_p): van Rijsbergen's weighted harmonic mean of
                  precision and recall; needs N_p, all relevant documents (for reference)
    E_alpha@K     F_alpha@K with N_p estimated as the relevant documents in the top ceil(x * K)
                  (the code's extend_xK; x = 2 by default, `E_0.5@10x3` sets it)
    nDCG_rf@K     binary nDCG whose ideal DCG puts only the n_p relevant documents *found* in the top
                  slots: sum_{i<K} rel_i / log2(i + 2) over sum_{i<n_p} 1 / log2(i + 2) (0 when n_p = 0)

Conventions (the same as trec_eval's P@K): K is nominal, so a ranking shorter than K counts the
missing slots as non-relevant (n_n = K - n_p); a document is relevant when its qrel grade is >= 1.
A zero denominator (F or E with no relevant document anywhere and alpha = 0) gives 0.

Names: `T@10` (alpha 0.5), `T_0.3@10`, `F_0.5@10`, `E_0.5@10`, `E_0.5@10x3`, `nDCG_rf@10`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

DEFAULT_ALPHA = 0.5
DEFAULT_EXTEND = 2.0
_NAME = re.compile(r"^(?P<kind>T|E|F)(?:_(?P<alpha>\d*\.?\d+))?@(?P<k>\d+)(?:x(?P<x>\d*\.?\d+))?$")
_NDCG = re.compile(r"^nDCG_rf@(?P<k>\d+)$")


@dataclass(frozen=True)
class RecallFreeMeasure:
    name: str
    kind: Literal["T", "E", "F", "nDCG_rf"]
    k: int
    alpha: float = DEFAULT_ALPHA
    extend: float = DEFAULT_EXTEND

    @property
    def depth(self) -> int:
        """How deep the ranking must be: E looks at the top ceil(x * K) to estimate N_p."""
        return math.ceil(self.extend * self.k) if self.kind == "E" else self.k

    def value(self, docids: list[str], qrels: Mapping[str, int]) -> float:
        rel = [1 if qrels.get(d, 0) >= 1 else 0 for d in docids]
        k = self.k
        n_p = sum(rel[:k])
        if self.kind == "T":
            n_n = k - n_p
            return (1 - self.alpha) * n_p - self.alpha * n_n / (n_p + n_n)
        if self.kind == "nDCG_rf":
            if n_p == 0:
                return 0.0
            dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rel[:k]))
            return dcg / sum(1 / math.log2(i + 2) for i in range(n_p))
        total = sum(1 for g in qrels.values() if g >= 1) if self.kind == "F" else sum(rel[: self.depth])
        denominator = self.alpha * k + (1 - self.alpha) * total
        return n_p / denominator if denominator else 0.0


def parse(name: str) -> RecallFreeMeasure | None:
    """The measure a name asks for; None if the name is not recall-free syntax; ValueError if malformed."""
    key = name.strip()
    if m := _NDCG.match(key):
        k = int(m["k"])
        if k < 1:
            raise ValueError(f"metric '{name}': the cutoff must be at least 1")
        return RecallFreeMeasure(key, "nDCG_rf", k)
    m = _NAME.match(key)
    if m is None:
        return None
    kind = m["kind"]
    alpha = float(m["alpha"]) if m["alpha"] else DEFAULT_ALPHA
    k = int(m["k"])
    if not 0 <= alpha <= 1:
        raise ValueError(f"metric '{name}': alpha must be between 0 and 1 (got {alpha})")
    if k < 1:
        raise ValueError(f"metric '{name}': the cutoff must be at least 1")
    if m["x"] and kind != "E":
        raise ValueError(f"metric '{name}': only E takes an extension factor (E_alpha@Kx<factor>)")
    extend = float(m["x"]) if m["x"] else DEFAULT_EXTEND
    if kind == "E" and extend < 1:
        raise ValueError(f"metric '{name}': the extension factor must be at least 1 (got {extend})")
    return RecallFreeMeasure(key, kind, k, alpha, extend)  # type: ignore[arg-type]


def evaluate(rankings: Mapping[str, list[str]], qrels: Mapping[str, Mapping[str, int]],
             measures: Iterable[RecallFreeMeasure]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(aggregate, per-query) over the queries with qrels (BEIR/trec_eval -c: no ranking = empty ranking)."""
    measures = list(measures)
    per_query = {qid: {m.name: m.value(list(rankings.get(qid, [])), rels) for m in measures}
                 for qid, rels in qrels.items()}
    n = len(per_query)
    return {m.name: (sum(v[m.name] for v in per_query.values()) / n if n else 0.0) for m in measures}, per_query
