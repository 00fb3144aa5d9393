"""Rankings: what retrievers, rerankers and fusion produce; judged rankings carry their own qrels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragbench.cache import atomic_write_text
from ragbench.outputs.base import Output, Produced, dump_json_records, jsonl, parse_json_records
from ragbench.trec import dump_rankings, format_run, load_rankings
from ragbench.types import Assessment, Qrels, Ranking, SearchTrace, TaskData


class Rankings(Output):
    """Each query's ranked documents. The final ranking of a run is its `run.trec`."""

    label = "rankings"
    record = Ranking
    records: dict[str, Ranking]

    #: the relevance these rankings are scored against (None: the task's, or its derived corpus')
    qrels: Qrels | None = None
    #: how metrics.json `stages` names those qrels
    qrels_source: str = "task"

    @classmethod
    def dump(cls, records: list[Any]) -> str:
        return dump_rankings(records)

    @classmethod
    def parse(cls, text: str) -> dict[str, Any]:
        return load_rankings(text)

    def get(self, qid: str) -> Ranking:
        return self.records.get(qid) or Ranking(qid, [], [])

    @classmethod
    def write(cls, folder: Path, task: TaskData, produced: list[Produced], tag: str) -> None:
        last: Rankings = produced[-1].output
        atomic_write_text(folder / "run.trec", format_run((last.get(q.id) for q in task.queries), tag=tag))


class JudgedRankings(Rankings):
    """A ranking passed on unchanged, scored against an LLM assessor's grades (relevance_judge).

    Its records are the input's rankings; `assessments` holds the grades, `qrels` the relevance
    they make (`qrels_source`: llm, or fill: the task's qrels with the grades filling the gaps).
    """

    record = Assessment  # what the stage itself computes and the cache holds
    section = "relevance"

    def __init__(self, rankings: dict[str, Ranking], assessments: dict[str, Assessment], qrels: Qrels,
                 qrels_source: str, relevant_at: int):
        super().__init__(rankings)
        self.assessments = assessments
        self.qrels = qrels
        self.qrels_source = qrels_source
        self.relevant_at = relevant_at

    @property
    def computed(self) -> dict[str, Any]:
        return self.assessments

    @classmethod
    def dump(cls, records: list[Any]) -> str:
        return dump_json_records(records)  # assessments, as JSON lines

    @classmethod
    def parse(cls, text: str) -> dict[str, Any]:
        return parse_json_records(Assessment, text)

    def summary(self, task: TaskData) -> dict[str, Any]:
        grades = [g for a in self.assessments.values() for g in a.grades.values()]
        parsed = [g for g in grades if g is not None]
        return {"qrels": self.qrels_source, "pairs": len(grades), "graded": len(parsed),
                "unparsed": len(grades) - len(parsed), "relevant": sum(g >= self.relevant_at for g in parsed),
                "grades": {str(g): parsed.count(g) for g in range(4)}}

    @classmethod
    def write(cls, folder: Path, task: TaskData, produced: list[Produced], tag: str) -> None:
        """relevance.jsonl (the grades and replies) and qrels.llm.tsv (what the ranking was scored against)."""
        p = produced[-1]
        out: JudgedRankings = p.output
        jsonl(folder / "relevance.jsonl", [{"stage": p.stage_id, **out.assessments[q.id].to_json(), "llm": out.model}
                                           for q in task.queries if q.id in out.assessments])
        atomic_write_text(folder / "qrels.llm.tsv", "".join(
            f"{qid}\t0\t{d}\t{g}\n" for qid, row in out.qrels.items() for d, g in row.items()))


class SearchedRankings(Rankings):
    """Rankings accumulated over several searches (multi_step), with the trace of each query's steps.

    Its records are the rankings; `traces` holds what the stage computed and the cache holds (the queries
    the LLM wrote at each step, what they found, the prompts and replies): queries.generated.jsonl.
    """

    record = SearchTrace
    section = "search"

    def __init__(self, traces: dict[str, SearchTrace]):
        super().__init__({qid: t.ranking for qid, t in traces.items()})
        self.traces = traces

    @property
    def computed(self) -> dict[str, Any]:
        return self.traces

    @classmethod
    def dump(cls, records: list[Any]) -> str:
        return dump_json_records(records)

    @classmethod
    def parse(cls, text: str) -> dict[str, Any]:
        return parse_json_records(SearchTrace, text)

    def summary(self, task: TaskData) -> dict[str, Any]:
        """Per step: queries written (mean per question), replies with no query, new documents (mean)."""
        steps: dict[int, list[dict[str, Any]]] = {}
        for t in self.traces.values():
            for s in t.steps:
                steps.setdefault(int(s["step"]), []).append(s)
        return {"queries": len(self.traces), "steps": [
            {"step": n, "queries_written": round(sum(len(s["queries"]) for s in rows) / len(rows), 3),
             "no_query": sum(not s["queries"] for s in rows) if n else 0,
             "new_documents": round(sum(len(s["new"]) for s in rows) / len(rows), 3)}
            for n, rows in sorted(steps.items())]}

    @classmethod
    def write(cls, folder: Path, task: TaskData, produced: list[Produced], tag: str) -> None:
        """queries.generated.jsonl: per question and step, the queries written, what each found, the reply."""
        rows = []
        for p in produced:
            out: SearchedRankings = p.output
            rows += [{"stage": p.stage_id, "query_id": q.id, **step} for q in task.queries if q.id in out.traces
                     for step in out.traces[q.id].steps]
        jsonl(folder / "queries.generated.jsonl", rows)
