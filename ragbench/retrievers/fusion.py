"""Fusion of two or more upstream rankings: reciprocal rank fusion and weighted min-max fusion.

RRF (Cormack et al., SIGIR 2009): score(d) = sum over runs of 1 / (k + rank), k = 60, where
rank is d's 1-based position in the input ranking *as given* (tied scores keep their input
order), read to `depth`; a document missing from a run contributes 0. It is computed here, not
by ranx: ranx re-sorts each run by score with an unstable sort, so tied documents got arbitrary
ranks. Weighted fusion min-max normalises each run per query, then takes the weighted sum
(PromptReps' hybrid with weights 0.5/0.5); it depends on scores only, so ranx computes it.
Ties in the fused scores are broken by document id (ascending), as pyserini's fusion does.
See docs/methods.md, "Reciprocal rank fusion" and "Weighted (min-max) fusion".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any, Literal

from pydantic import Field

from ragbench.errors import RagbenchError
from ragbench.outputs import Rankings
from ragbench.stage import Contract, Stage, StageOptions
from ragbench.types import Query, Ranking


class FusionOptions(StageOptions):
    method: Literal["rrf", "weighted"] = Field("rrf", description="rrf | weighted (min-max normalised weighted sum)")
    k: int = Field(60, ge=0, description="RRF constant")
    weights: tuple[float, ...] | None = Field(
        None, description="one per input, for method weighted; default equal (a missing run adds 0)")
    depth: int = Field(1000, ge=1, description="documents read from each input ranking")
    top_k: int = Field(1000, ge=1, description="documents returned per query")


def rrf(rankings: Sequence[Sequence[str]], k: int = 60, depth: int | None = None) -> dict[str, float]:
    """RRF scores from ranked doc-id lists, ranks taken from list positions (never re-sorted by score).

    A document listed twice in one ranking counts once, at its best position. Terms are added in
    input order, so the sums equal ranx's bit for bit when the ranks agree.
    """
    fused: dict[str, float] = {}
    for docids in rankings:
        seen: set[str] = set()
        for rank, d in enumerate(docids[:depth], start=1):
            if d not in seen:
                seen.add(d)
                fused[d] = fused.get(d, 0.0) + 1.0 / (k + rank)
    return fused


class Fusion(Stage):
    contract = Contract("retriever", Rankings, consumes=Rankings, inputs=(2, 16))
    Options = FusionOptions
    version = "2"  # 2: RRF ranks are input positions (ranx's unstable re-sort by score dropped)
    options: FusionOptions

    def process(self, queries: list[Query], inputs: list[dict[str, Ranking]]) -> dict[str, Ranking]:
        o = self.options
        if o.weights is not None and len(o.weights) != len(inputs):
            raise RagbenchError.at(f"stage {self.env.stage_id}", f"{len(o.weights)} weights for {len(inputs)} inputs",
                                   path="weights")
        per_input = [{q.id: rankings.get(q.id) or Ranking(q.id, [], []) for q in queries} for rankings in inputs]
        if o.method == "rrf":
            return {q.id: Ranking.from_scores(q.id, rrf([run[q.id].docids for run in per_input], o.k, o.depth), o.top_k)
                    for q in queries}
        return self._weighted(queries, per_input)

    def _weighted(self, queries: list[Query], per_input: list[dict[str, Ranking]]) -> dict[str, Ranking]:
        """Min-max normalised weighted sum through ranx (runs grouped by which inputs are non-empty)."""
        from ranx import Run, fuse

        o = self.options
        groups: dict[tuple[int, ...], list[str]] = {}  # ranx needs every query in every run, with documents
        for q in queries:
            present = tuple(i for i, run in enumerate(per_input) if len(run[q.id]))
            groups.setdefault(present, []).append(q.id)
        weights = o.weights or (1.0,) * len(per_input)
        out = {}
        for present, qids in groups.items():
            if not present:
                out.update({qid: Ranking(qid, [], []) for qid in qids})
                continue
            if len(present) == 1:  # ranx fuses two or more runs; one run's fused score is its own term
                out.update({qid: self._single(per_input[present[0]][qid], weights[present[0]]) for qid in qids})
                continue
            runs = [Run.from_dict({qid: dict(zip(per_input[i][qid].docids[:o.depth], per_input[i][qid].scores[:o.depth],
                                                 strict=True))
                                   for qid in qids}) for i in present]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numba's cast warning inside ranx's min-max
                fused = fuse(runs=runs, norm="min-max", method="wsum",
                             params={"weights": [weights[i] for i in present]})
            scores = fused.to_dict()
            out.update({qid: Ranking.from_scores(qid, scores.get(qid, {}), o.top_k) for qid in qids})
        return out

    def _single(self, r: Ranking, weight: float) -> Ranking:
        """One run's min-max term (ranx's rule: a run whose scores are all equal normalises to 0)."""
        docids, scores = r.docids[:self.options.depth], r.scores[:self.options.depth]
        lo, hi = min(scores), max(scores)
        fused = [weight * ((s - lo) / (hi - lo) if hi > lo else 0.0) for s in scores]
        return Ranking.from_scores(r.qid, list(zip(docids, fused, strict=True)), self.options.top_k)

    def identity(self) -> dict[str, Any]:
        return {"ranx": version("ranx")}
