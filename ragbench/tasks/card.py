"""The task card: what a task is (its data source, splits, metrics), validated with every problem located.

Cards are YAML files in the catalogue (`tasks/`, or a folder on RAGBENCH_PATH); `tasks/__init__.py` loads
the data a card names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from ragbench import catalog
from ragbench.errors import Problem, RagbenchError
from ragbench.metrics.spec import check_metrics
from ragbench.yamlio import LocatedYaml, Strict, load_yaml, validate_mapping


class HFSource(Strict):
    """One Hugging Face dataset table (or a local parquet/jsonl file or save_to_disk folder)."""

    path: str
    name: str | None = None
    split: str = "{split}"
    revision: str | None = None
    fields: dict[str, str] = Field(default_factory=dict,
                                   description="our field -> dataset column; id '__index__' = row number")


class HFSpec(Strict):
    queries: HFSource
    corpus: HFSource | None = None
    qrels: HFSource | None = None
    relevant_format: str = Field(
        "ids", description="how the queries' 'relevant' column names documents: ids | wikipedia_urls")


class SplitSpec(Strict):
    where: dict[str, Any] = Field(default_factory=dict, description="keep queries whose fields equal these values")
    hf_split: str | None = None


class TaskCard(Strict):
    name: str
    description: str = ""
    homepage: str = ""
    citation: str = ""
    license: str = ""
    embedded: str | None = Field(None, description="folder under ragbench/data shipped with the package")
    hf: HFSpec | None = None
    splits: dict[str, SplitSpec] = Field(default_factory=lambda: {"test": SplitSpec()})
    default_split: str = "test"
    metrics: list[str] = Field(default_factory=lambda: ["nDCG@10", "R@100", "RR@10"])
    answer_metrics: list[str] = Field(
        default_factory=list,
        description="answer metrics added when the pipeline has a reader (EM, F1, popqa_acc, answer_recall@k)")
    answers_field: str = Field(
        "answers", description="query field holding the gold answers (a list, or a JSON list as text)")
    group_by: list[str] = Field(
        default_factory=list,
        description="query fields results are broken down by "
                    "(s_pop -> popularity deciles; lists -> one group per value)")
    corpus_hint: str = Field("", description="how to get a corpus when none ships (printed when missing)")
    irds: str | None = Field(None, description="an ir_datasets id: queries, qrels and corpus come from ir_datasets")


def parse_task_card(doc: LocatedYaml) -> tuple[TaskCard | None, list[Problem]]:
    card, problems = validate_mapping(doc, TaskCard, "a task card must be a YAML mapping with 'name'")
    if card is None:
        return None, problems
    if card.default_split not in card.splits:
        problems.append(Problem(doc.file, f"'{card.default_split}' is not one of splits: {', '.join(card.splits)}",
                                doc.line(("default_split",)), "default_split"))
    problems += check_metrics(card.metrics, None, doc, ("metrics",))
    problems += check_metrics(card.answer_metrics, None, doc, ("answer_metrics",))
    return (None, problems) if problems else (card, [])


IRDS = "irds:"


def load_task_card(name_or_path: str | Path) -> tuple[TaskCard, Path]:
    """A task card from the catalogue or a file; `irds:<id>` is the card of an ir_datasets collection."""
    if str(name_or_path).startswith(IRDS):
        irds_id = str(name_or_path)[len(IRDS):]
        return TaskCard(name=str(name_or_path), irds=irds_id, description=f"ir_datasets: {irds_id}",
                        homepage=f"https://ir-datasets.com/#{irds_id}"), Path(str(name_or_path))
    path = catalog.find(name_or_path, "task")
    card, problems = parse_task_card(load_yaml(path))
    if problems:
        raise RagbenchError(problems)
    assert card is not None
    return card, path
