"""What search engines hand back before it becomes a Ranking: corpus rows and scores, or document ids and scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragbench.types import Corpus

Hits = tuple[np.ndarray, np.ndarray]  # (document rows, scores), unordered
#: per query id, (document id, score), unordered: what every sparse engine's `search(queries, qids, k)` returns
IdHits = dict[str, list[tuple[str, float]]]


def hits_by_id(corpus: Corpus, qids: Sequence[str],
               found: Sequence[Hits | tuple[Sequence[int], Sequence[float]]]) -> IdHits:
    """Per-query (row, score) hits as (document id, score), with one id lookup for the whole batch."""
    ids = iter(corpus.id_at([int(r) for rows, _ in found for r in rows]))
    return {qid: [(next(ids), float(s)) for s in scores] for qid, (_, scores) in zip(qids, found, strict=True)}
