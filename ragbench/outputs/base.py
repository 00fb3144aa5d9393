"""The base of every stage output type."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ragbench.cache import atomic_write_text

if TYPE_CHECKING:
    from ragbench.types import TaskData


class Output:
    """One stage's output over a query set: its records by query id, in the order they were asked for."""

    #: how validation messages name it ("input 'x' produces answers, but ...")
    label: ClassVar[str] = "output"
    #: the per-query record type (Ranking, Answer, Judgement, Probe, Assessment)
    record: ClassVar[Any] = None
    #: its key in metrics.json, when it has a summary there (judges, experiments, relevance, corpora)
    section: ClassVar[str | None] = None

    def __init__(self, records: dict[str, Any]):
        self.records = records
        self.model: str | None = None  # the LLM that made it (from its stage's identity), for the run folder

    # -- the cache's text --------------------------------------------------------------------
    @classmethod
    def dump(cls, records: list[Any]) -> str:
        """Records as cache text: one JSON line each."""
        return dump_json_records(records)

    @classmethod
    def parse(cls, text: str) -> dict[str, Any]:
        return parse_json_records(cls.record, text)

    @property
    def computed(self) -> dict[str, Any]:
        """The records the stage itself computed, what its cache holds (a judged ranking: its grades)."""
        return self.records

    # -- what later stages, scoring and the run folder read ------------------------------------
    def get(self, qid: str) -> Any:
        """What a downstream stage reads for one query (None: nothing for it)."""
        return self.records.get(qid)

    def summary(self, task: TaskData) -> dict[str, Any] | None:
        """Its entry in metrics.json's `section`, computed once when the run is scored."""
        return None

    def summarize(self, task: TaskData) -> tuple[dict[str, Any] | None, dict[str, float], dict[str, dict[str, float]]]:
        """(its metrics.json entry, the flat metrics it adds to the run's, their per-query values): what scoring
        asks for, once per run. Most types add no metrics."""
        return self.summary(task), {}, {}

    @classmethod
    def write(cls, folder: Path, task: TaskData, produced: list[Produced], tag: str) -> None:
        """Its run-folder file(s) from every stage of the run that produced this type, in pipeline order
        (most types keep the last stage's: the final ranking, the last reader's answers)."""


@dataclass(frozen=True)
class Produced:
    """One stage's output as the run folder sees it, with the stage that made it."""

    stage_id: str
    output: Any


def dump_json_records(records: list[Any]) -> str:
    return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)


def parse_json_records(record: Any, text: str) -> dict[str, Any]:
    rows = (record.from_json(json.loads(line)) for line in text.splitlines() if line.strip())
    return {r.qid: r for r in rows}


def jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
