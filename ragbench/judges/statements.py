"""Statement-level faithfulness and correctness (Ispas et al., ICLR'25 workshop; docs/methods.md,
Statement-level faithfulness and correctness (Ispas et al.)).

Three steps, only the first two asking an LLM:
- **S, simplify**: the answer (and, for correctness, the gold answer) is split into atomic,
  pronoun-free statements, one per line after "- " (few-shot).
- **E, evaluate**: the judge reasons about each statement and writes `VERDICT: <LABEL>`:
  faithfulness labels PASSED / FAILED (supported by the retrieved context or not);
  correctness labels TP / FP for answer statements (supported by the gold answer or not)
  and FN for gold statements that no answer statement states.
- **P, parse** (deterministic, outside the LLM): the labels are counted with the paper's
  regexes. R1 `\\bVERDICT: LABEL\\b`; R2 `\\bVERDICT: .*LABEL\\b` (anything on the line
  between the colon and the label). Both are case-sensitive, as in the paper. With
  `parser: json` the judge instead fills a JSON schema under constrained decoding (one
  label per statement), which needs a vLLM backend.

Scores: faithfulness = PASSED / (PASSED + FAILED); correctness = TP / (TP + FN) (the recall
the paper uses) or, with `score: f1`, TP / (TP + (FP + FN) / 2).

What is scored and what is unparseable:
- An evaluator reply with at least one verdict is parsed. Correctness with TP + FN = 0 but
  FP > 0 scores 0: every answer statement is unsupported, so by the paper's definition every
  gold statement is an FN (the judge merely did not list them), and recall is 0, not missing.
- An empty answer states nothing. Correctness scores it 0 (TP = 0, every gold statement an FN)
  without asking the judge; faithfulness (PASSED / (PASSED + FAILED) over no statements) is 0/0
  and stays unscored. Both are flagged `empty` and counted apart (metrics.json `judges.*.empty`).
- Only a reply with no verdict at all, or a split with no statements, is unparseable: counted
  and left out, never scored as zero.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Parser = Literal["r1", "r2", "json"]

SPLIT_PROMPT = """Break the answer to the question into short, atomic statements. Each statement must make sense on its own: write names instead of pronouns, and include what the question asks about. Write one statement per line, starting with "- ".

Question: Who directed Jaws?
Answer: Steven Spielberg, who also made E.T.
Statements:
- Steven Spielberg directed Jaws.
- Steven Spielberg made E.T.

Question: What is George Rankin's occupation?
Answer: politician
Statements:
- George Rankin's occupation is politician.

Question: {question}
Answer: {answer}
Statements:"""  # noqa: E501

FAITHFULNESS_PROMPT = """Decide whether each statement is supported by the context. For each statement, give its number, explain in one sentence, then write "VERDICT: PASSED" if the context supports it or "VERDICT: FAILED" if it does not.

Context:
Title: Marie Curie
Marie Curie was a Polish-born physicist and chemist who won two Nobel Prizes.

Statements:
1. Marie Curie was a physicist.
2. Marie Curie was born in France.

1. The context says she was a physicist. VERDICT: PASSED
2. The context says she was Polish-born, not born in France. VERDICT: FAILED

Context:
{context}

Statements:
{statements}

"""  # noqa: E501

CORRECTNESS_PROMPT = """Compare the answer statements with the ground-truth statements. For each answer statement, give its number, explain in one sentence, then write "VERDICT: TP" if the ground truth supports it or "VERDICT: FP" if it does not. Then, for each ground-truth statement that no answer statement states, write it and "VERDICT: FN".

Question: What is Alan Turing's occupation?
Answer statements:
1. Alan Turing's occupation is mathematician.
2. Alan Turing was born in Paris.
Ground-truth statements:
1. Alan Turing's occupation is mathematician.
2. Alan Turing's occupation is computer scientist.

A1. The ground truth says he was a mathematician. VERDICT: TP
A2. The ground truth says nothing about Paris. VERDICT: FP
G2. Alan Turing's occupation is computer scientist. VERDICT: FN

Question: {question}
Answer statements:
{statements}
Ground-truth statements:
{gold_statements}

"""  # noqa: E501

LABELS = {"faithfulness": ("PASSED", "FAILED"), "correctness": ("TP", "FP", "FN")}
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)\s*$")


def parse_statements(reply: str, limit: int = 20) -> list[str]:
    """The statements of a simplifier reply: its bullet ("- ", "* ", "1.") lines, in order, deduplicated."""
    out: list[str] = []
    for line in reply.splitlines():
        m = _BULLET.match(line)
        if m and m.group(1) not in out:
            out.append(m.group(1))
    return out[:limit]


def verdict_regex(label: str, parser: Parser) -> re.Pattern[str]:
    """The paper's R1 (`VERDICT: LABEL`) or R2 (`VERDICT: ` then anything on the line, then LABEL)."""
    middle = "" if parser == "r1" else ".*"
    return re.compile(rf"\bVERDICT: {middle}{re.escape(label)}\b")


def count_labels(reply: str, method: str, parser: Parser, n_answer: int = 0, n_gold: int = 0) -> dict[str, int] | None:
    """Label counts in an evaluator reply; None when it holds no verdict at all (unparseable)."""
    labels = LABELS[method]
    if parser == "json":
        try:
            data = json.loads(reply)
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        found = ([*data.get("answer", []), *data.get("gold", [])] if method == "correctness"
                 else data.get("verdicts", []))
        counts = {label: sum(1 for v in found if v == label) for label in labels}
    else:
        counts = {label: len(verdict_regex(label, parser).findall(reply)) for label in labels}
    return counts if sum(counts.values()) else None


def json_schema(method: str, n_answer: int, n_gold: int = 0) -> str:
    """The schema constrained decoding fills: one label per statement."""
    def array(options: list[str], n: int) -> dict[str, Any]:
        return {"type": "array", "items": {"type": "string", "enum": options}, "minItems": n, "maxItems": n}

    if method == "faithfulness":
        props = {"verdicts": array(["PASSED", "FAILED"], n_answer)}
    else:  # per gold statement: FN when no answer statement states it, COVERED otherwise
        props = {"answer": array(["TP", "FP"], n_answer), "gold": array(["FN", "COVERED"], n_gold)}
    return json.dumps({"type": "object", "properties": props, "required": list(props), "additionalProperties": False})


def score(counts: dict[str, int], method: str, kind: Literal["recall", "f1"] = "recall") -> float | None:
    """Faithfulness PASSED/(PASSED+FAILED); correctness TP/(TP+FN) or TP/(TP+(FP+FN)/2).

    None only when no label was counted at all. Recall with TP + FN = 0 and FP > 0 is 0: the
    paper defines FN as every gold statement no answer statement supports, so an answer whose
    statements are all FP leaves every gold statement an FN, whether the judge listed them or not.
    """
    if method == "faithfulness":
        den = counts["PASSED"] + counts["FAILED"]
        return counts["PASSED"] / den if den else None
    tp, fp, fn = counts["TP"], counts["FP"], counts["FN"]
    if tp + fp + fn == 0:
        return None
    den = tp + fn if kind == "recall" else tp + 0.5 * (fp + fn)
    return tp / den if den else 0.0


def numbered(statements: list[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(statements, 1))


@dataclass
class Sample:
    """One judging of one answer: statements, label counts, score (None: not scored, and why in `failure`)."""

    value: float | None
    statements: list[str] = field(default_factory=list)
    gold_statements: list[str] = field(default_factory=list)
    counts: dict[str, int] | None = None
    # "split" (no statements), "verdict" (no label), "empty answer" (faithfulness), "no context"
    failure: str | None = None
    empty: bool = False  # the answer was empty: correctness scores it 0, faithfulness leaves it unscored

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "statements": self.statements, "gold_statements": self.gold_statements,
                "counts": self.counts, "failure": self.failure, "empty": self.empty}
