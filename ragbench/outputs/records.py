"""Answers (readers), judgements (judges) and probes (experiment stages)."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from ragbench.outputs.base import Output, Produced, jsonl
from ragbench.types import Answer, Judgement, Probe, TaskData


class Answers(Output):
    """Each query's answer, with the prompts and replies: the last reader's go to answers.jsonl."""

    label = "answers"
    record = Answer
    records: dict[str, Answer]

    @classmethod
    def write(cls, folder: Path, task: TaskData, produced: list[Produced], tag: str) -> None:
        out: Answers = produced[-1].output
        jsonl(folder / "answers.jsonl", [{**out.records[q.id].to_json(), "llm": out.model}
                                         for q in task.queries if q.id in out.records])


class Judgements(Output):
    """Each answer's score from an LLM judge; every judge's go to judgements.jsonl, its summary to `judges`."""

    label = "judgements"
    record = Judgement
    section = "judges"
    records: dict[str, Judgement]

    def __init__(self, records: dict[str, Judgement], metric: str, counts_empty: bool):
        super().__init__(records)
        self.metric = metric  # the per-query score it gives: judge_acc, faithfulness, correctness
        self.counts_empty = counts_empty  # statement judges count empty answers apart (a rating judge reads them)

    def scores(self) -> dict[str, float]:
        return {qid: j.value for qid, j in self.records.items() if j.value is not None}

    def summary(self, task: TaskData) -> dict[str, Any]:
        """Answers seen, how many got a score, how many replies were unparseable (and why); for
        statement judges how many answers were empty (`empty`: scored 0 by correctness, left
        unscored by faithfulness, never counted as unparsed); with several samples, the spread:
        the standard deviation of each sample's run mean and the mean per-answer standard deviation."""
        judged = self.records
        values = [j.value for j in judged.values()]
        samples = [j.samples for j in judged.values()]
        n_samples = max((len(s) for s in samples), default=0)
        empty = {qid for qid, j in judged.items()
                 if any(d.get("empty") or d.get("failure") == "empty answer" for d in j.details)}
        unparsed = sum(j.value is None and qid not in empty for qid, j in judged.items())
        summary: dict[str, Any] = {"metric": self.metric, "model": self.model, "n": len(values),
                                   "judged": sum(v is not None for v in values), "unparsed": unparsed}
        if self.counts_empty:
            summary["empty"] = len(empty)
        failures = Counter(d.get("failure") for j in judged.values() for d in j.details if d.get("failure"))
        if n_samples > 1 or failures:
            flat = [v for s in samples for v in s]
            none = sum(v is None for v in flat) - failures.get("empty answer", 0)  # an empty answer is no parse failure
            summary.update(samples=n_samples, sample_values=len(flat), sample_unparsed=none,
                           unparsed_share=none / len(flat) if flat else None, failures=dict(failures))
        if n_samples > 1:
            means = []
            for i in range(n_samples):
                col = [s[i] for s in samples if len(s) > i and s[i] is not None]
                means.append(statistics.fmean(col) if col else None)
            parsed = ([v for v in s if v is not None] for s in samples)
            per_answer = [statistics.pstdev(p) for p in parsed if len(p) > 1]
            present = [m for m in means if m is not None]
            summary.update(sample_means=means,
                           sd_of_sample_means=statistics.stdev(present) if len(present) > 1 else None,
                           mean_per_answer_sd=statistics.fmean(per_answer) if per_answer else None)
        return summary

    @classmethod
    def write(cls, folder: Path, task: TaskData, produced: list[Produced], tag: str) -> None:
        rows = [{"stage": p.stage_id, **p.output.records[q.id].to_json(), "llm": p.output.model}
                for p in produced for q in task.queries if q.id in p.output.records]
        jsonl(folder / "judgements.jsonl", rows)


class Probes(Output):
    """Each query's trials in an experiment (hard negatives); the summary: accuracy tables, HND, curves."""

    label = "probes"
    record = Probe
    section = "experiments"
    records: dict[str, Probe]

    def __init__(self, records: dict[str, Probe], metric: str, grid: tuple[int, ...]):
        super().__init__(records)
        self.metric = metric  # the answer metric each trial is scored by
        self.grid = grid  # the numbers of negatives read with the gold passage (m)

    def summary(self, task: TaskData) -> dict[str, Any]:
        return self.summarize(task)[0]

    def summarize(self, task: TaskData) -> tuple[dict[str, Any], dict[str, float], dict[str, dict[str, float]]]:
        """The accuracy tables and curves; HND[...], rel_drop[...], k_star[...], peak_drop[...] as flat metrics
        (what compare and check read), with their per-query values."""
        from ragbench.metrics.degradation import headline, summarize

        summary = summarize(self.records, task, self.metric, self.grid)
        per_query = summary.pop("per_query")  # in per_query.jsonl, not in metrics.json
        return summary, headline(summary), per_query

    @classmethod
    def write(cls, folder: Path, task: TaskData, produced: list[Produced], tag: str) -> None:
        out: Probes = produced[-1].output
        jsonl(folder / "experiment.jsonl", [{**out.records[q.id].to_json(), "llm": out.model}
                                            for q in task.queries if q.id in out.records])
