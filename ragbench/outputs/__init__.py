"""What stages hand each other: one output type per stage kind.

A stage declares the type it produces and the type it reads (`Stage.contract`); the pipeline,
validation, scoring and the run folder ask the type, never a name. Each type knows

- its records' cache text (`dump` / `parse`: byte-for-byte what the cache has always held),
- what a downstream stage reads for one query (`get`),
- its run-folder file (`write`) and its `metrics.json` section (`section`, `summary`).
"""

from ragbench.outputs.base import Output
from ragbench.outputs.corpus import DerivedCorpus
from ragbench.outputs.rankings import JudgedRankings, Rankings, SearchedRankings
from ragbench.outputs.records import Answers, Judgements, Probes

__all__ = ["Answers", "DerivedCorpus", "JudgedRankings", "Judgements", "Output", "Probes", "Rankings",
           "SearchedRankings"]
