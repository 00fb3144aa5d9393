"""The one table from YAML `type:` names to component classes.

Entries are import paths, so heavy libraries (torch, the JVM) load only when a pipeline uses
the component. A new component is one module plus one line here.
"""

from __future__ import annotations

import difflib
import importlib

from ragbench.stage import Stage

COMPONENTS: dict[str, str] = {
    "bm25": "ragbench.retrievers.bm25:BM25",
    "dense": "ragbench.retrievers.dense:Dense",
    "splade": "ragbench.retrievers.splade:Splade",
    "llm_sparse": "ragbench.retrievers.llm_sparse:LLMSparse",
    "fusion": "ragbench.retrievers.fusion:Fusion",
    "multi_step": "ragbench.retrievers.multi_step:MultiStep",
    "maxp": "ragbench.retrievers.maxp:MaxP",
    "icr": "ragbench.rerankers.icr:ICR",
    "listwise": "ragbench.rerankers.listwise:Listwise",
    "first": "ragbench.rerankers.first:First",
    "cross_encoder": "ragbench.rerankers.cross_encoder:CrossEncoderReranker",
    "reader": "ragbench.readers.reader:Reader",
    "long_units": "ragbench.corpora.long_units:LongUnits",
    "passages": "ragbench.corpora.passages:Passages",
    "judge": "ragbench.judges.judge:Judge",
    "hard_negatives": "ragbench.experiments.hard_negatives:HardNegatives",
    "relevance_judge": "ragbench.judges.relevance:RelevanceJudge",
}


def names() -> list[str]:
    return sorted(COMPONENTS)


def suggest(name: str) -> str:
    close = difflib.get_close_matches(name, COMPONENTS, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def get(name: str) -> type[Stage]:
    """The class registered as `name`; KeyError if there is none."""
    module, _, attr = COMPONENTS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
