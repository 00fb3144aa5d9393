"""Fusion of two or more upstream rankings, through ranx.

RRF (Cormack et al., SIGIR 2009): score(d) = sum over runs of 1 / (k + rank), ranks from 1,
a document missing from a run contributes 0, k = 60. Weighted fusion min-max normalises
each run per query, then takes the weighted sum (PromptReps' hybrid with weights 0.5/0.5).
Ties in the fused scores are broken by document id.
"""

from __future__ import annotations

import warnings
from importlib.metadata import version
from typing import Any, Literal

from pydantic import Field

from ragbench.errors import RagbenchError
from ragbench.stage import Stage, StageOptions
from ragbench.types import Query, Ranking


class FusionOptions(StageOptions):
    method: Literal["rrf", "weighted"] = Field("rrf", description="rrf | weighted (min-max normalised weighted sum)")
    k: int = Field(60, ge=0, description="RRF constant")
    weights: tuple[float, ...] | None = Field(None, description="one per input, for method weighted; default equal (a missing run adds 0)")
    depth: int = Field(1000, ge=1, description="documents read from each input ranking")
    top_k: int = Field(1000, ge=1, description="documents returned per query")


class Fusion(Stage):
    kind = "retriever"
    Options = FusionOptions
    min_inputs = 2
    max_inputs = 16
    options: FusionOptions

    def process(self, queries: list[Query], inputs: list[dict[str, Ranking]]) -> dict[str, Ranking]:
        from ranx import Run, fuse

        o = self.options
        if o.weights is not None and len(o.weights) != len(inputs):
            raise RagbenchError.at(f"stage {self.env.stage_id}", f"{len(o.weights)} weights for {len(inputs)} inputs", path="weights")
        per_input = [{q.id: rankings.get(q.id) or Ranking(q.id, [], []) for q in queries} for rankings in inputs]
        # ranx needs every query in every run, with documents: group queries by which inputs are non-empty
        groups: dict[tuple[int, ...], list[str]] = {}
        for q in queries:
            present = tuple(i for i, run in enumerate(per_input) if len(run[q.id]))
            groups.setdefault(present, []).append(q.id)
        out = {}
        for present, qids in groups.items():
            if not present:
                out.update({qid: Ranking(qid, [], []) for qid in qids})
                continue
            if len(present) == 1:  # ranx fuses two or more runs; one run's fused score is its own term
                out.update({qid: self._single(per_input[present[0]][qid], present[0]) for qid in qids})
                continue
            runs = [Run.from_dict({qid: dict(zip(per_input[i][qid].docids[:o.depth], per_input[i][qid].scores[:o.depth], strict=True))
                                   for qid in qids}) for i in present]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numba's cast warning inside ranx's min-max
                if o.method == "rrf":
                    fused = fuse(runs=runs, method="rrf", params={"k": o.k})
                else:
                    weights = o.weights or (1.0,) * len(inputs)
                    fused = fuse(runs=runs, norm="min-max", method="wsum", params={"weights": [weights[i] for i in present]})
            scores = fused.to_dict()
            out.update({qid: Ranking.from_scores(qid, scores.get(qid, {}), o.top_k) for qid in qids})
        return out

    def _single(self, r: Ranking, i: int) -> Ranking:
        o = self.options
        docids, scores = r.docids[:o.depth], r.scores[:o.depth]
        if o.method == "rrf":
            fused = [1.0 / (o.k + rank) for rank in range(1, len(docids) + 1)]
        else:
            lo, hi = min(scores), max(scores)
            w = (o.weights or (1.0,) * (i + 1))[i]
            fused = [w * ((s - lo) / (hi - lo) if hi > lo else 0.0) for s in scores]
        return Ranking.from_scores(r.qid, list(zip(docids, fused, strict=True)), o.top_k)

    def identity(self) -> dict[str, Any]:
        return {"ranx": version("ranx")}
