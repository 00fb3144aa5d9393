"""`type: maxp`: a ranking over units made of the documents its input ranks (long_units with `corpus:
passages`), each unit at its best member's score (MaxP; docs/methods.md, "Long units of passages").

LongRAG scores a long unit by its best chunk (Jiang et al. 2024, MaxP over 512-token windows). When the
units are made of passages that a retriever already ranked, the passages are those chunks: a unit's MaxP
score is its best passage's score, so the unit ranking is the passage ranking with each passage replaced by
its unit, each unit kept at its first (best) place. It is exact for every unit whose best passage is within
the input's depth, and encodes nothing twice. Ties keep the input's order.
"""

from __future__ import annotations

from pydantic import Field

from ragbench.errors import RagbenchError
from ragbench.outputs import Rankings
from ragbench.stage import Contract, Stage, StageOptions
from ragbench.types import Query, Ranking, TaskData


class MaxPOptions(StageOptions):
    top_k: int = Field(100, ge=1, description="units returned per query")


class MaxP(Stage):
    contract = Contract("retriever", Rankings, consumes=Rankings, inputs=(1, 1), regroups=True)
    Options = MaxPOptions
    options: MaxPOptions

    def prepare(self, task: TaskData) -> None:
        """Which unit each member belongs to, read once from the units' `members`."""
        if task.corpus is None:
            raise RagbenchError.at(f"stage {self.env.stage_id}", "maxp needs its corpus of units")
        self.unit_of: dict[str, str] = {}
        for batch in task.corpus.batches(size=2000):
            for unit in batch:
                self.unit_of.update((m, unit.id) for m in unit.extra.get("members", ()))

    def process(self, queries: list[Query], inputs: list[dict[str, Ranking]]) -> dict[str, Ranking]:
        out = {}
        for q in queries:
            best: dict[str, float] = {}
            r = inputs[0][q.id]
            for d, s in zip(r.docids, r.scores, strict=True):
                unit = self.unit_of.get(d)
                if unit is not None and unit not in best:
                    best[unit] = s
                    if len(best) == self.options.top_k:
                        break
            out[q.id] = Ranking(q.id, list(best), list(best.values()))
        return out
