"""First-stage retrievers: index a corpus once, then rank batches of queries against it."""

from __future__ import annotations

from abc import abstractmethod

from ragbench.outputs import Rankings
from ragbench.stage import Contract, Stage
from ragbench.types import Query, Ranking, TaskData


class Retriever(Stage):
    contract = Contract("retriever", Rankings)

    def prepare(self, task: TaskData) -> None:
        if task.corpus is None:
            raise RuntimeError("retrievers need a corpus")  # load_task already explained how to get one
        self.index(task)

    @abstractmethod
    def index(self, task: TaskData) -> None:
        """Build or load the index for task.corpus (cache it with self.artifact_dir)."""

    @abstractmethod
    def search(self, queries: list[Query]) -> dict[str, Ranking]:
        """Top-k documents for each query."""

    def process(self, queries: list[Query], inputs: list[dict[str, Ranking]]) -> dict[str, Ranking]:
        return self.search(queries)
