"""The output of a corpus stage (long_units): the task as later stages see it."""

from __future__ import annotations

from typing import Any

from ragbench.outputs.base import Output
from ragbench.types import TaskData


class DerivedCorpus(Output):
    """A derived corpus with the task's qrels mapped onto it, and how it was made.

    Stages that name it with `corpus:` rank `view` in place of the task; its statistics go to
    metrics.json `corpora`.
    """

    label = "a corpus"
    section = "corpora"

    def __init__(self, view: TaskData, stats: dict[str, Any] | None = None, built: bool = True):
        super().__init__({})
        self.view = view  # the task with the derived corpus and its qrels (fingerprint includes the derivation)
        self.stats = stats or {}
        self.built = built  # made by this run (False: read from the cache)

    def summary(self, task: TaskData) -> dict[str, Any]:
        return self.stats
