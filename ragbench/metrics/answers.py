"""Answer-quality metrics, one query at a time; the caller aggregates.

Each metric copies the rule of the paper whose numbers it is compared with (docs/methods.md,
sections SQuAD EM/F1, PopQA accuracy, DPR has_answer and answer recall, LongRAG EM): SQuAD v1.1
EM/F1, PopQA's substring accuracy, DPR's ``has_answer`` (used by LongRAG's answer recall),
LongRAG's EM and a FRAMES-style TRUE/FALSE judge. They disagree on purpose. Unicode is where it
shows: SQuAD and PopQA compare code points as given, DPR and LongRAG decompose (NFD) first, and
none of them folds accents, so "Zürich" never matches "Zurich".

``golds`` is a list of acceptable answers (a bare string counts as one answer). An empty list
raises ValueError, because a query with no gold answer cannot be scored.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import regex

from ragbench.errors import RagbenchError
from ragbench.types import Query

Golds = Sequence[str] | str


def _golds(golds: Golds) -> list[str]:
    out = [golds] if isinstance(golds, str) else list(golds)
    if not out:
        raise ValueError("no gold answers to compare with")
    return out


# ---------------------------------------------------------------- SQuAD v1.1 EM / F1

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop ASCII punctuation, drop a/an/the, collapse spaces.

    This is the official rule, unchanged. Only ``string.punctuation`` (ASCII) is removed, so
    curly quotes, the em dash, « » and similar characters stay in the text. There is no Unicode
    normalisation, so precomposed "ü" (NFC) and "u" + U+0308 (NFD) differ.
    """
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, golds: Golds) -> float:
    """1.0 if the prediction equals some gold answer after SQuAD normalisation."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in _golds(golds)))


def longrag_exact_match(prediction: str, golds: Golds) -> float:
    """LongRAG's EM (TIGER-AI-Lab/LongRAG, utils/eval_util.py ``single_ans_em``; its ``_normalize``
    is in utils/wiki_util.py): both sides are decomposed to Unicode NFD, then SQuAD-normalised and
    compared; the maximum over the gold answers. Unlike SQuAD's EM, precomposed "ü" (NFC) and
    "u" + U+0308 (NFD) are equal; accents are still not folded, so "Zürich" != "Zurich"."""
    p = normalize_answer(unicodedata.normalize("NFD", prediction))
    return float(any(p == normalize_answer(unicodedata.normalize("NFD", g)) for g in _golds(golds)))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:  # v1.1 rule: this also gives 0 when both sides are empty (v2.0 gives 1)
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, golds: Golds) -> float:
    """SQuAD v1.1 token F1 (bag of normalised tokens), the maximum over the gold answers."""
    p = normalize_answer(prediction).split()
    return max(_f1(p, normalize_answer(g).split()) for g in _golds(golds))


def token_recall(prediction: str, golds: Golds) -> float:
    """Bag-of-tokens recall (InstructQA; the correctness baseline of Ispas et al., docs/methods.md, token_recall):
    the share of a gold answer's SQuAD-normalised tokens that the prediction contains, counted with
    multiplicity; the maximum over the gold answers. A gold that normalises to nothing scores 1, as in
    InstructQA's ``Recall`` (McGill-NLP/instruct-qa, instruct_qa/evaluation/metrics.py)."""
    p = Counter(normalize_answer(prediction).split())
    best = 0.0
    for g in _golds(golds):
        gold = Counter(normalize_answer(g).split())
        best = max(best, sum((p & gold).values()) / sum(gold.values()) if gold else 1.0)
    return best


# ---------------------------------------------------------------- PopQA

def popqa_acc(prediction: str, golds: Golds) -> float:
    """PopQA (Mallen et al. 2023): 1.0 if some gold ``pa`` is a raw substring of the prediction.

    A gold matches in its given form, as ``pa.lower()`` or as ``pa.capitalize()``; nothing else is
    normalised (AlexTMallen/adaptive-retrieval, run_model.py). As there, an empty gold string is a
    substring of every prediction (PopQA has none).
    """
    return float(any((pa in prediction or pa.lower() in prediction or pa.capitalize() in prediction)
                     for pa in _golds(golds)))


# ---------------------------------------------------------------- DPR has_answer / answer recall

# DPR's SimpleTokenizer: runs of letters/digits/marks, or any single other visible character.
_DPR_TOKEN = regex.compile(r"([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}])",
                           flags=regex.IGNORECASE | regex.UNICODE | regex.MULTILINE)


def dpr_tokens(text: str) -> list[str]:
    """DPR's uncased tokens: decompose to NFD, tokenise with SimpleTokenizer, lowercase.

    Combining marks (\\p{M}) stay inside the word, so NFD "Zürich" is the single token
    "zu\\u0308rich" and does not equal "zurich".
    """
    return [m.group().lower() for m in _DPR_TOKEN.finditer(unicodedata.normalize("NFD", text))]


def _contains(tokens: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return any(tokens[i:i + n] == needle for i in range(len(tokens) - n + 1) if tokens[i] == needle[0])


def has_answer(text: str, golds: Golds) -> bool:
    """DPR's ``has_answer`` (match_type "string"): some gold is a contiguous run of the text's tokens.

    As in DPR (facebookresearch/DPR, dpr/data/qa_validation.py) and LongRAG's copy
    (``has_correct_answer``), a gold with no tokens (for example "" or " ") is found in every text.
    """
    tokens = dpr_tokens(text)
    return any(not needle or _contains(tokens, needle) for needle in map(dpr_tokens, _golds(golds)))


def recall_text(title: str, text: str, with_title: bool = False) -> str:
    """The text answer recall searches in a document: its text only, as DPR's ``check_answer``
    (facebookresearch/DPR, dpr/data/qa_validation.py: ``doc[0]``) and LongRAG's retrieval check
    (TIGER-AI-Lab/LongRAG, eval/eval_qa.py: the context, titles apart) read it. ``with_title``
    (metric names ``answer_recall_with_title@k``) prefixes the title as DPR's ``use_title`` does."""
    return f"{title} . {text}" if with_title and title else text


def answer_recall(texts: Sequence[str], golds: Golds, k: int, joined: bool = False) -> float:
    """1.0 if some gold answer is found in the top-k texts (given in rank order), using ``has_answer``.

    With ``joined=False`` (the default, as in DPR) each text is checked on its own. With
    ``joined=True`` (as in LongRAG's AR@k) the top-k texts are joined with spaces and checked
    once, so an answer that runs across the boundary between two texts also counts. The caller
    builds each text with ``recall_text`` (the document's text only, unless the metric asks for the title).
    """
    if k < 1:
        raise ValueError(f"answer_recall needs k >= 1, got {k}")
    top = list(texts[:k])
    if joined:
        return float(has_answer(" ".join(top), golds))
    return float(any(has_answer(t, golds) for t in top))


# ---------------------------------------------------------------- FRAMES-style judge

_THINK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_LABEL = re.compile(r"\b(?:decision|verdict|final answer|judge?ment|rating|grade)\W{0,3}:", re.IGNORECASE)
_VERDICT = re.compile(r"\b(true|false)\b", re.IGNORECASE)
_NEGATED = re.compile(r"(?:\bnot|\bnever|n't)[\s*_\"'`]*$", re.IGNORECASE)


def parse_judgement(text: str) -> bool | None:
    """Read a TRUE/FALSE verdict from a judge's reply; None when the reply does not give one.

    The rule is deterministic and runs in this order:
    1. Drop reasoning: remove ``<think>...</think>`` blocks and anything before a stray ``</think>``.
    2. If a label such as "Decision:", "Verdict:", "Final answer:", "Judgement:", "Rating:" or
       "Grade:" appears, keep only the text after the last one. Markdown such as
       ``**Decision**:`` is allowed.
    3. If the last non-empty line holds nothing but a single verdict (punctuation and markdown
       allowed, as in "**False**"), return that verdict. A closing verdict line outranks
       earlier text.
    4. Otherwise find the standalone words true/false (case-insensitive, word-bounded, so
       "untrue" is not one). Return None if there are none, if any is directly preceded by a
       negation ("not", "never", "...n't"; "not false" is too unclear to score), or if they
       disagree ("TRUE ... FALSE" on one line). If they all agree, return that verdict.

    A reply that cannot be parsed gives None, never False, so the caller can count it apart.
    """
    text = re.split(r"</think>", _THINK.sub(" ", text), flags=re.IGNORECASE)[-1]
    labels = list(_LABEL.finditer(text))
    if labels:
        text = text[labels[-1].end():]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    last = regex.sub(r"[^\p{L}]", "", lines[-1]).lower() if lines else ""
    if last in ("true", "false"):
        return last == "true"
    matches = list(_VERDICT.finditer(text))
    if not matches or any(_NEGATED.search(text[:m.start()]) for m in matches):
        return None
    values = {m.group(1).lower() for m in matches}
    return values == {"true"} if len(values) == 1 else None


# ---------------------------------------------------------------- registry for YAML names

Needs = Literal["prediction", "retrieved", "judge"]


@dataclass(frozen=True, slots=True)
class AnswerMetric:
    """A named answer metric and the inputs the caller must supply for it.

    ``needs``: "prediction" means the reader's answer (for has_answer, the long answer where the
    reader wrote one, as LongRAG's substring match reads it), "retrieved" means the retrieved texts
    in rank order (answer recall; ``with_title``: each text with its title), and "judge" means the
    score of a `type: judge` stage (judge_acc: a rating judge, whose raw reply `score` can also
    parse; faithfulness and correctness: the statement judges' scores).
    """

    name: str
    kind: Literal["EM", "longrag_EM", "F1", "popqa_acc", "token_recall", "has_answer", "answer_recall", "judge_acc",
                  "faithfulness", "correctness"]
    needs: Needs
    k: int | None = None
    joined: bool = False
    with_title: bool = False

    def score(self, golds: Golds, *, prediction: str | None = None, texts: Sequence[str] | None = None,
              judgement: str | None = None) -> float | None:
        """The per-query value. For judge_acc it is None when the judge's reply cannot be parsed."""
        if self.needs == "retrieved":
            if texts is None:
                raise ValueError(f"{self.name} needs the retrieved texts")
            assert self.k is not None
            return answer_recall(texts, golds, self.k, joined=self.joined)
        if self.needs == "judge":
            if self.kind != "judge_acc":
                raise ValueError(f"{self.name} comes from its judge stage's scores, not from one reply")
            if judgement is None:
                raise ValueError(f"{self.name} needs the judge's reply")
            verdict = parse_judgement(judgement)
            return None if verdict is None else float(verdict)
        if prediction is None:
            raise ValueError(f"{self.name} needs the reader's prediction")
        scorers = {"EM": exact_match, "longrag_EM": longrag_exact_match, "F1": f1, "popqa_acc": popqa_acc,
                   "token_recall": token_recall, "has_answer": lambda p, g: float(has_answer(p, g))}
        return scorers[self.kind](prediction, golds)


KNOWN_ANSWER_METRICS = ("EM", "longrag_EM", "F1", "popqa_acc", "token_recall", "has_answer", "answer_recall@k",
                        "answer_recall_joined@k", "answer_recall_with_title@k", "answer_recall_joined_with_title@k",
                        "judge_acc", "faithfulness", "correctness")
_RECALL = re.compile(r"answer_recall(_joined)?(_with_title)?@(\d+)", re.IGNORECASE)
_Simple = Literal["EM", "longrag_EM", "F1", "popqa_acc", "token_recall", "has_answer", "judge_acc", "faithfulness",
                  "correctness"]


def parse_answer_metric(name: str) -> AnswerMetric:
    """Map a metric name from a YAML file to an AnswerMetric (case-insensitive). Unknown names raise ValueError."""
    key = name.strip()
    simple: dict[str, tuple[_Simple, Needs]] = {
        "em": ("EM", "prediction"), "longrag_em": ("longrag_EM", "prediction"), "f1": ("F1", "prediction"),
        "token_recall": ("token_recall", "prediction"), "has_answer": ("has_answer", "prediction"),
        "popqa_acc": ("popqa_acc", "prediction"), "judge_acc": ("judge_acc", "judge"),
        "faithfulness": ("faithfulness", "judge"), "correctness": ("correctness", "judge")}
    if key.lower() in simple:
        kind, needs = simple[key.lower()]
        return AnswerMetric(name, kind, needs)
    m = _RECALL.fullmatch(key)
    if m and int(m.group(3)) >= 1:
        return AnswerMetric(name, "answer_recall", "retrieved", k=int(m.group(3)), joined=bool(m.group(1)),
                            with_title=bool(m.group(2)))
    raise ValueError(f"unknown answer metric '{name}'; known: {', '.join(KNOWN_ANSWER_METRICS)} (k a positive integer)")


# ---------------------------------------------------------------- grouping for reports

def popularity_deciles(values: Sequence[float]) -> list[int]:
    """Equal-frequency deciles (0-9) of popularity values such as PopQA's s_pop, in input order.

    decile(v) = floor(10 * r / n), where r is the number of values strictly smaller than v. Tied
    values therefore share the lowest decile their block reaches, and a large tie can leave the
    deciles above it empty. With n distinct values every decile holds n/10 values, give or
    take one. NaN raises ValueError.
    """
    if any(math.isnan(v) for v in values):
        raise ValueError("popularity values contain NaN")
    ordered, n = sorted(values), len(values)
    return [10 * bisect.bisect_left(ordered, v) // n for v in values]


def log_popularity_bins(values: Sequence[float], n_bins: int = 10) -> list[int]:
    """Equal-width bins of ln(value), as in PopQA's adaptive-retrieval notebook (docs/methods.md, PopQA accuracy).

    This is the alternative to equal-frequency deciles. Bins are [lo + i*w, lo + (i+1)*w), and
    the maximum goes in the last bin. Values must be > 0.
    """
    if any(not v > 0 for v in values):
        raise ValueError("log bins need positive popularity values")
    logs = [math.log(v) for v in values]
    lo, hi = min(logs, default=0.0), max(logs, default=0.0)
    if hi == lo:
        return [0] * len(logs)
    return [min(int((x - lo) / (hi - lo) * n_bins), n_bins - 1) for x in logs]


def mean_by_group(per_query: Mapping[str, Mapping[str, float | None]],
                  groups: Mapping[str, Hashable | Sequence[str]]) -> dict[Hashable, dict[str, tuple[float, int]]]:
    """Per group and metric, (mean, n) over the queries in that group.

    A query can belong to several groups (a list of labels, as with FRAMES' reasoning types),
    and then it counts once in each. Queries missing from ``groups`` are left out. A None value
    (an unparseable judgement) is left out of that metric's mean and its n; a metric with no
    values left gets (nan, 0). Groups come back sorted by str(label).
    """
    sums: dict[Hashable, dict[str, list[float]]] = {}
    for qid, values in per_query.items():
        if qid not in groups:
            continue
        label = groups[qid]
        labels = [label] if isinstance(label, str) or not isinstance(label, Sequence) else list(label)
        for g in dict.fromkeys(labels):  # a label listed twice still counts once
            acc = sums.setdefault(g, {})
            for metric, v in values.items():
                s = acc.setdefault(metric, [0.0, 0])
                if v is not None:
                    s[0] += v
                    s[1] += 1
    return {g: {m: (s / n if n else math.nan, int(n)) for m, (s, n) in sums[g].items()}
            for g in sorted(sums, key=str)}


def gold_answers(query: Query, field: str) -> list[str]:
    value = query.extra.get(field)
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else [value]
    if not value:
        raise RagbenchError.at(f"query {query.id}",
                               f"no gold answers in field '{field}' (set the task card's answers_field)")
    return [str(v) for v in value]
