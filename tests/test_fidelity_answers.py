"""Issue 14 (method fidelity), answer metrics and statement judges: each test states the authors' rule
and where it is; every expected value is worked by hand from that rule."""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

import pytest

from ragbench.cache import Cache
from ragbench.config import StageSpec
from ragbench.evaluation import evaluate_ranking, evaluate_result
from ragbench.judges import statements as st
from ragbench.judges.judge import Judge, JudgeOptions
from ragbench.metrics.answers import (
    answer_recall,
    exact_match,
    has_answer,
    longrag_exact_match,
    parse_answer_metric,
    popqa_acc,
    recall_text,
    token_recall,
)
from ragbench.metrics.degradation import standard_error
from ragbench.outputs import Answers, Rankings
from ragbench.pipeline import PipelineResult, StageResult
from ragbench.progress import Reporter
from ragbench.readers.reader import Reader, ReaderOptions
from ragbench.retrievers.bm25 import BM25, BM25Options
from ragbench.stage import StageEnv
from ragbench.types import Answer, Corpus, Document, Judgement, Query, Ranking, TaskData

# ---------------------------------------------------------------- statement-level correctness

RIGHT = "A1. The ground truth says so. VERDICT: TP"
WRONG_WITH_FN = "A1. Not in the ground truth. VERDICT: FP\nG1. Paris is the capital. VERDICT: FN"
WRONG_WITHOUT_FN = "A1. Not in the ground truth. VERDICT: FP"  # the judge did not list the missed gold statement
NO_VERDICT = "The answer seems wrong to me."


def _task(queries: list[Query], corpus: Corpus | None = None) -> TaskData:
    return TaskData("t", "test", queries, {}, corpus, "", "")


def _judge_stage(method: str, judgements: dict[str, Judgement]) -> StageResult:
    options = JudgeOptions(method=method)  # type: ignore[arg-type]
    spec = StageSpec("judge", "judge", Judge, options, ("reader",))
    output = Judge.output(options, judgements, [], _task([]))
    output.model = "m"
    return StageResult(spec, "k", output, _task([]), 1, 0, 0.0, {"llm": {"model": "m"}})


def _scored(qid: str, reply: str) -> Judgement:
    counts = st.count_labels(reply, "correctness", "r2")
    value = None if counts is None else st.score(counts, "correctness")
    return Judgement(qid, value, outputs=[reply], samples=[value],
                     details=[st.Sample(value, counts=counts, failure=None if counts else "verdict").to_json()])


def test_correctness_scores_every_reply_with_a_verdict() -> None:
    """Ispas et al. (ICLR'25 workshop, paper text; their repository Razvanip13/Towards_Lighter_And_Robust_Evaluation
    holds no scorer): FN is every gold statement that no answer statement supports, correctness = TP / (TP + FN).
    Three replies: right (TP 1: 1.0), wrong with its FN line (TP 0, FN 1: 0.0), wrong whose judge wrote only the FP
    line (every gold statement is still an FN: 0.0). Mean (1 + 0 + 0) / 3 = 1/3; dropping the FP-only reply as
    unparseable, as before, gave (1 + 0) / 2 = 0.5."""
    assert st.score(st.count_labels(WRONG_WITHOUT_FN, "correctness", "r2"), "correctness") == 0.0  # type: ignore[arg-type]
    assert st.score({"TP": 0, "FP": 2, "FN": 0}, "correctness", "f1") == 0.0  # 0 / (0 + 2/2)
    queries = [Query(q, "Capital of France?", {"answers": ["Paris"]}) for q in ("a", "b", "c")]
    judge = _judge_stage("correctness", {"a": _scored("a", RIGHT), "b": _scored("b", WRONG_WITH_FN),
                                         "c": _scored("c", WRONG_WITHOUT_FN)})
    aggregate, per_query, _ = evaluate_result(PipelineResult([judge]), _task(queries), ["correctness"])
    assert per_query == {"a": {"correctness": 1.0}, "b": {"correctness": 0.0}, "c": {"correctness": 0.0}}
    assert aggregate["correctness"] == pytest.approx(1 / 3)


def test_only_a_reply_without_any_verdict_is_unparseable() -> None:
    """Ispas et al., parser P: labels are counted with `\\bVERDICT: .*LABEL\\b`; a reply in which no label is
    found gives no counts, so no score (None), counted as unparsed and left out of the mean, never scored 0."""
    assert st.count_labels(NO_VERDICT, "correctness", "r2") is None
    queries = [Query(q, "Capital of France?", {"answers": ["Paris"]}) for q in ("a", "b")]
    judge = _judge_stage("correctness", {"a": _scored("a", RIGHT), "b": _scored("b", NO_VERDICT)})
    aggregate, _, _ = evaluate_result(PipelineResult([judge]), _task(queries), ["correctness"])
    assert aggregate["correctness"] == 1.0
    summary = judge.output.summary(_task([]))
    assert (summary["judged"], summary["unparsed"], summary["empty"]) == (1, 1, 0)


def test_faithfulness_with_a_verdict_is_scored() -> None:
    """Ispas et al.: faithfulness = PASSED / (PASSED + FAILED) over the answer's statements. Any verdict makes the
    denominator positive, so an all-FAILED reply scores 0 (it was never dropped); no verdict stays unparseable."""
    counts = st.count_labels("1. Not in the context. VERDICT: FAILED", "faithfulness", "r2")
    assert counts == {"PASSED": 0, "FAILED": 1} and st.score(counts, "faithfulness") == 0.0
    assert st.count_labels(NO_VERDICT, "faithfulness", "r2") is None


@pytest.mark.parametrize(("method", "value"), [("correctness", 0.0), ("faithfulness", None)])
def test_an_empty_answer_is_counted_as_empty(tmp_path: Path, method: str, value: float | None) -> None:
    """Ispas et al.: an empty answer has no statements. Correctness: TP = 0 and every gold statement is an FN, so
    TP / (TP + FN) = 0. Faithfulness: PASSED / (PASSED + FAILED) = 0/0, no score. Either way the answer is counted as
    `empty` in metrics.json's judge summary and not as unparsed. No LLM is asked: an empty answer needs no judge."""
    judge = Judge(JudgeOptions(method=method), StageEnv(Cache(tmp_path), Reporter(quiet=True), "judge"))  # type: ignore[arg-type]
    queries = [Query("a", "Capital of France?", {"answers": ["Paris"]})]
    out = judge.process(queries, [{"a": Answer("a", "  ", context_ids=["d1"])}])
    assert out["a"].value == value and out["a"].samples == [value] and out["a"].details[0]["empty"] is True
    summary = _judge_stage(method, out).output.summary(_task([]))
    assert (summary["judged"], summary["unparsed"], summary["empty"]) == (int(value is not None), 0, 1)
    assert Judge.version == "2"  # judgements changed: cached ones are not reused


# ---------------------------------------------------------------- answer recall reads the text

def test_answer_recall_reads_the_text_not_the_title() -> None:
    """DPR (facebookresearch/DPR, dpr/data/qa_validation.py, `check_answer`: `text = doc[0]`, the passage text; the
    title only with `use_title`, as "title . text") and LongRAG (TIGER-AI-Lab/LongRAG, eval/eval_qa.py: `is_retrieval =
    has_correct_answer(context, answers)`, titles kept apart) look for the answer in the text only. A document whose
    title holds the answer but whose text does not scores 0; `answer_recall_with_title@k` opts into the title."""
    corpus = Corpus({"d1": Document("d1", "A river flows through the city.", "Paris")}, "fp")
    task = _task([Query("q", "Capital of France?", {"answers": ["Paris"]})], corpus)
    spec = StageSpec("bm25", "bm25", BM25, BM25Options(), ())
    ranking = StageResult(spec, "k", Rankings({"q": Ranking("q", ["d1"], [1.0])}), task, 1, 0, 0.0)
    aggregate, _ = evaluate_ranking(ranking, task, ["answer_recall@1", "answer_recall_joined@1"])
    assert aggregate == {"answer_recall@1": 0.0, "answer_recall_joined@1": 0.0}
    aggregate, _ = evaluate_ranking(ranking, task, ["answer_recall_with_title@1", "answer_recall_joined_with_title@1"])
    assert aggregate == {"answer_recall_with_title@1": 1.0, "answer_recall_joined_with_title@1": 1.0}
    assert recall_text("Paris", "text") == "text" and recall_text("Paris", "text", with_title=True) == "Paris . text"
    m = parse_answer_metric("Answer_Recall_Joined_With_Title@3")
    assert (m.k, m.joined, m.with_title) == (3, True, True)


# ---------------------------------------------------------------- LongRAG's EM

ZURICH_NFC = "Z\u00fcrich"
ZURICH_NFD = unicodedata.normalize("NFD", ZURICH_NFC)


def test_longrag_em_decomposes_unicode_first() -> None:
    """LongRAG (TIGER-AI-Lab/LongRAG, utils/eval_util.py `normalize_answer` calls utils/wiki_util.py `_normalize`,
    unicodedata NFD, before SQuAD's lowercase / punctuation / articles / whitespace steps). Precomposed "Zürich" and
    "Zu" + U+0308 + "rich" are equal under LongRAG's EM and not under SQuAD's; no accent folding in either."""
    assert ZURICH_NFC != ZURICH_NFD
    assert longrag_exact_match(ZURICH_NFD, [ZURICH_NFC]) == 1.0
    assert longrag_exact_match(f"The {ZURICH_NFC}!", [ZURICH_NFD]) == 1.0  # then SQuAD's steps
    assert exact_match(ZURICH_NFD, [ZURICH_NFC]) == 0.0  # SQuAD v1.1 compares code points
    assert longrag_exact_match(ZURICH_NFC, ["Zurich"]) == 0.0
    m = parse_answer_metric("longrag_EM")
    assert (m.kind, m.needs) == ("longrag_EM", "prediction") and m.score([ZURICH_NFC], prediction=ZURICH_NFD) == 1.0


def test_has_answer_scores_the_long_answer() -> None:
    """LongRAG (eval/eval_qa.py): `is_substring_match = has_correct_answer(long_ans, answers)`, DPR's token match on the
    first (long) answer of the two-step reader; ragbench's `has_answer` metric reads `long_answer` when there is one."""
    queries = [Query("q", "Where is the Louvre?", {"answers": ["Paris"]})]
    spec = StageSpec("reader", "reader", Reader, ReaderOptions(), ("bm25",))
    answers = Answers({"q": Answer("q", "France", long_answer="It is in Paris, France.")})
    reader = StageResult(spec, "k", answers, _task(queries), 1, 0, 0.0)
    aggregate, _, _ = evaluate_result(PipelineResult([reader]), _task(queries), ["has_answer", "EM"])
    assert aggregate == {"has_answer": 1.0, "EM": 0.0}


# ---------------------------------------------------------------- standard errors

def test_standard_error_binomial_only_for_binary_values() -> None:
    """Binary per-query values (popqa_acc, EM): sqrt(p(1-p)/n); p = 0.5, n = 4 gives 0.25. Graded values (F1): the
    sample SD (ddof = 1) over sqrt(n); values 0, 0.5, 0.5, 1 have mean 0.5, SD sqrt(0.5/3), so SE sqrt(0.5/3)/2.
    The binomial formula on those values would give 0.25."""
    assert standard_error([1.0, 0.0, 1.0, 0.0]) == pytest.approx(0.25)
    assert standard_error([0.0, 0.5, 0.5, 1.0]) == pytest.approx(math.sqrt(0.5 / 3) / 2)
    assert standard_error([1.0]) == 0.0 and math.isnan(standard_error([0.5])) and math.isnan(standard_error([]))


# ---------------------------------------------------------------- golds with nothing in them

def test_an_empty_gold_matches_as_in_the_authors_code() -> None:
    """PopQA (AlexTMallen/adaptive-retrieval, run_model.py: `pa in pred`): "" is a substring of every prediction.
    DPR (facebookresearch/DPR, dpr/data/qa_validation.py `has_answer`) and LongRAG (utils/eval_util.py
    `has_correct_answer`): a gold with no tokens matches at position 0 of any text, even an empty one.
    InstructQA (McGill-NLP/instruct-qa, instruct_qa/evaluation/metrics.py `Recall`): an empty reference has recall 1."""
    assert popqa_acc("Lyon", ["Paris", ""]) == 1.0
    assert has_answer("Lyon", ["Paris", " "]) and has_answer("", [""])
    assert answer_recall(["Lyon"], ["!!"], k=1) == 0.0  # "!" is a DPR token: not empty, not found
    assert token_recall("Lyon", ["Paris", "the"]) == 1.0  # "the" normalises to no tokens
