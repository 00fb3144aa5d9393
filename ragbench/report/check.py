"""`ragbench check`: the CI regression gate. Exit 0 pass, 1 a quality regression, 2 bad input.

A run is checked against a baseline (a run folder, or a metrics.json alone) metric by metric,
with rules from a thresholds YAML:

    alpha: 0.05                 # significance level for `significant: true`
    test: randomization         # randomization | t (paired, over the queries both runs share)
    metrics:
      nDCG@10: {min: 0.60, max_drop: 0.01, significant: true}
      R@100:   {max_drop: 0.02}

- `min`: the run's value must be at least this (absolute);
- `max_drop`: the run may be at most this much below the baseline (absolute: baseline - run);
- `significant: true`: a drop beyond `max_drop` fails only if the paired test says p < alpha
  (needs both runs' per_query.jsonl; a baseline given as metrics.json alone cannot be tested, so
  a drop then fails, which is the conservative reading).

Without a thresholds file every metric the two share is checked with max_drop 0 and
significant: true: any significant drop fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragbench.errors import Problem, RagbenchError
from ragbench.metrics.spec import direction
from ragbench.record import RunRecord
from ragbench.report.compare import paired, paired_tests
from ragbench.yamlio import format_loc, load_yaml


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: float | None = Field(None, description="the lowest acceptable value")
    max_drop: float | None = Field(None, ge=0, description="the largest acceptable drop below the baseline")
    significant: bool = Field(False, description="a drop fails only if the paired test finds it significant")


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(0.05, gt=0, lt=1)
    test: Literal["randomization", "t"] = "randomization"
    metrics: dict[str, Rule] = Field(default_factory=dict)


def load_thresholds(path: str | Path | None) -> Thresholds:
    if path is None:
        return Thresholds()
    doc = load_yaml(path)
    try:
        return Thresholds.model_validate(doc.data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            problems.append(Problem(doc.file, err["msg"], doc.line(loc), format_loc(loc)))
        raise RagbenchError(problems) from None


@dataclass
class Verdict:
    metric: str
    value: float
    baseline: float | None
    delta: float | None
    p: float | None
    n: int
    passed: bool
    reason: str  # why it failed, or what was checked


def check(run: Path, baseline: Path, thresholds: Thresholds) -> list[Verdict]:
    head, base = RunRecord.read(run), RunRecord.read(baseline)
    if head.task != base.task:
        raise RagbenchError.at(str(baseline), f"baseline is on task '{base.task}', the run on '{head.task}'")
    if head.n_queries != base.n_queries:  # means over different query sets: a drop would mean nothing
        raise RagbenchError.at(str(baseline), f"baseline scored {base.n_queries} queries, the run {head.n_queries}; "
                               "check needs both on the same queries (same task, split, data and --limit)")
    # by default every shared metric with a direction must not drop significantly (k*, the best k, has none)
    rules = thresholds.metrics or {m: Rule(max_drop=0.0, significant=True) for m in head.metrics
                                   if m in base.metrics and direction(m) is not None}
    missing = [m for m in rules if m not in head.metrics]
    if missing:
        raise RagbenchError.at(str(run), f"no value for {', '.join(missing)} in its metrics.json "
                               f"(has: {', '.join(head.metrics)})")
    base_pq = base.per_query if base.has_per_query else None
    run_pq = head.per_query
    out = []
    for m, rule in rules.items():
        value = float(head.metrics[m])
        b = base.metrics.get(m)
        # a drop is a change for the worse: a fall where higher is better, a rise where lower is (HND, rel_drop)
        sign = -1.0 if direction(m) is False else 1.0
        delta = None if b is None else value - float(b)
        p, n, reasons = None, 0, []
        if rule.min is not None and value < rule.min:
            reasons.append(f"{value:.4f} < min {rule.min:.4f}")
        if rule.max_drop is not None and delta is not None and -sign * delta > rule.max_drop:
            if rule.significant and base_pq is not None:
                a, r = paired(base_pq, run_pq, m)
                n = len(a)
                t_p, rand_p = paired_tests(a, r)
                p = rand_p if thresholds.test == "randomization" else t_p
                if p is not None and p < thresholds.alpha:
                    reasons.append(f"dropped {-sign * delta:.4f} (> {rule.max_drop:.4f}), "
                                   f"significant: p = {p:.2g} < {thresholds.alpha}")
            else:
                why = "" if not rule.significant else " (baseline has no per-query values to test)"
                reasons.append(f"dropped {-sign * delta:.4f} (> {rule.max_drop:.4f}){why}")
        if rule.max_drop is not None and b is None:
            reasons.append("baseline has no value to compare with")
        checked = "ok" if not reasons else "; ".join(reasons)
        out.append(Verdict(m, value, None if b is None else float(b), delta, p, n, not reasons, checked))
    return out


def junit(verdicts: list[Verdict], run: Path, path: Path) -> None:
    """JUnit XML: one test case per metric, a failure element for each failed rule."""
    suite = ET.Element("testsuite", name="ragbench check", tests=str(len(verdicts)),
                       failures=str(sum(not v.passed for v in verdicts)))
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"ragbench.{run.parent.name}.{run.name}", name=v.metric)
        if not v.passed:
            ET.SubElement(case, "failure", message=v.reason).text = (
                f"{v.metric}: {v.value:.4f} (baseline {v.baseline}, delta {v.delta}, p {v.p})")
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
