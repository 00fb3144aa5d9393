"""How a reader's raw reply becomes the answer that is scored (`answer_rule` of `type: reader`).

Each method's authors cut their model's generation their own way, and the cut decides what
EM / popqa_acc see, so ragbench applies the rule of the method a pipeline reproduces
(docs/methods.md, "Reader" and "PopQA's protocol (Mallen et al.)"):

- `popqa` (Mallen et al., AlexTMallen/adaptive-retrieval `run_model.py`, `call_model`): one
  leading blank line ("\\n\\n") is dropped, then everything up to the first "\\n". A reply that
  opens with a single newline is an empty prediction; nothing is stripped.
- `longrag` (TIGER-AI-Lab/LongRAG `utils/*_inference.py`, `post_process`): the rest of the line
  after the FIRST "answer:" (any case, at a word start) that is followed by one whitespace
  character; a reply without one is kept whole, unstripped.
- `lenient`: ragbench's earlier rule (after the LAST "answer:", then the first non-empty line,
  trimmed); kept for runs that want it and for the hard-negative experiment.
"""

from __future__ import annotations

import re
from typing import Literal

AnswerRule = Literal["popqa", "longrag", "lenient"]

# a word-initial "answer:" then exactly one whitespace character; the answer is the rest of that line
_LONGRAG_ANSWER = re.compile(r"(?<=\banswer:\s).*", re.IGNORECASE)


def popqa_answer(text: str) -> str:
    """Mallen et al.'s cut: drop one leading "\\n\\n", keep the text before the first "\\n" (may be empty)."""
    if text.startswith("\n\n"):
        text = text[2:]
    return text.split("\n")[0]


def longrag_answer(text: str) -> str:
    """LongRAG's post-processing: the line after the first "answer:<whitespace>", else the whole reply."""
    match = _LONGRAG_ANSWER.search(text)
    return match.group(0) if match else text


def clean_answer(text: str) -> str:
    """ragbench's lenient rule: after the last 'answer:' if the model wrote one, first non-empty line, trimmed."""
    low = text.lower()
    if "answer:" in low:
        text = text[low.rindex("answer:") + len("answer:"):]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


RULES = {"popqa": popqa_answer, "longrag": longrag_answer, "lenient": clean_answer}


def extract_answer(text: str, rule: AnswerRule) -> str:
    """The reply cut by the named rule."""
    return RULES[rule](text)
