"""Answer metrics on hand-worked examples. Each metric keeps the quirks of the paper it copies."""

from __future__ import annotations

import math
import unicodedata

import pytest

from ragbench.judges.judge import JUDGE_PROMPT
from ragbench.metrics.answers import (
    answer_recall,
    dpr_tokens,
    exact_match,
    f1,
    has_answer,
    log_popularity_bins,
    mean_by_group,
    normalize_answer,
    parse_answer_metric,
    parse_judgement,
    popqa_acc,
    popularity_deciles,
    token_recall,
)

ZURICH_NFC = "Z\u00fcrich"  # precomposed ü
ZURICH_NFD = unicodedata.normalize("NFD", ZURICH_NFC)  # "Zu" + U+0308 + "rich"


# ---------------------------------------------------------------- SQuAD normalisation, EM, F1

@pytest.mark.parametrize(("raw", "norm"), [
    ("The  Eiffel Tower!", "eiffel tower"),  # article, double space, "!"
    ("An apple, a pear", "apple pear"),
    ("theater", "theater"),                  # "the" only as a whole word
    ("U.S.A.", "usa"),
    ("Jean-Paul", "jeanpaul"),               # ASCII hyphen is removed with no space
    ("Paris\u2014France", "paris\u2014france"),  # em dash is not in string.punctuation
    ("\u201cParis\u201d", "\u201cparis\u201d"),  # nor are curly quotes
    ('"Paris"', "paris"),                    # straight quotes are
    ("  \t\n ", ""),
])
def test_normalize_answer_is_squad(raw: str, norm: str) -> None:
    assert normalize_answer(raw) == norm


def test_exact_match() -> None:
    assert exact_match("The  Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert exact_match("U.S.A.", "USA") == 1.0            # a bare string is one gold
    assert exact_match("Lyon", ["Paris", "lyon."]) == 1.0  # max over golds
    assert exact_match("", ["Paris"]) == 0.0
    assert exact_match("", ["the"]) == 1.0                 # both normalise to ""
    assert exact_match("\u201cParis\u201d", ["Paris"]) == 0.0  # curly quotes survive
    assert exact_match(ZURICH_NFC, ["Zurich"]) == 0.0      # no accent folding
    assert exact_match(ZURICH_NFD, [ZURICH_NFC]) == 0.0    # nor NFC/NFD unification


def test_f1() -> None:
    # pred [eiffel, tower, in, paris], gold [eiffel, tower]: P = 2/4, R = 2/2, F1 = 2*.5*1/1.5 = 2/3
    assert f1("the Eiffel Tower in Paris", ["Eiffel Tower"]) == pytest.approx(2 / 3)
    # gold "Paris": P = 1/2, R = 1 -> 2/3; gold "Lyon France": P = R = 1/2 -> 1/2; max = 2/3
    assert f1("Paris France", ["Lyon France", "Paris"]) == pytest.approx(2 / 3)
    # bag of tokens: "paris" once in common, P = 1/2, R = 1 -> 2/3
    assert f1("paris paris", ["Paris"]) == pytest.approx(2 / 3)
    assert f1("Paris", ["Paris."]) == 1.0
    assert f1("", ["Paris"]) == 0.0
    assert f1("", ["the"]) == 0.0  # SQuAD v1.1: no shared token gives 0, even when both are empty


def test_no_golds_is_an_error() -> None:
    with pytest.raises(ValueError, match="no gold"):
        exact_match("Paris", [])


# ---------------------------------------------------------------- PopQA

def test_popqa_acc_is_raw_substring() -> None:
    assert popqa_acc("The capital is Paris.", ["Paris"]) == 1.0
    assert popqa_acc("Paris", ["paris"]) == 1.0          # "paris".capitalize() == "Paris"
    assert popqa_acc("paris, of course", ["PARIS"]) == 1.0  # "PARIS".lower()
    assert popqa_acc("new york city", ["New York City"]) == 1.0  # .lower()
    # "new york city" -> .capitalize() is "New york city", so "New York City" never matches
    assert popqa_acc("New York City", ["new york city"]) == 0.0
    assert popqa_acc("a Parisian cafe", ["Paris"]) == 1.0  # substring inside a word counts
    assert popqa_acc("Lyon", ["Marseille", "Lyon"]) == 1.0
    assert popqa_acc("", ["Paris"]) == 0.0
    assert popqa_acc("anything", [""]) == 1.0              # "" is in every string, as in run_model.py
    assert popqa_acc("Zurich", [ZURICH_NFC]) == 0.0
    assert popqa_acc(ZURICH_NFD, [ZURICH_NFC]) == 0.0      # code points differ, no NFD here


# ---------------------------------------------------------------- DPR has_answer

def test_dpr_tokens() -> None:
    assert dpr_tokens("Jean-Paul's \u201cCaf\u00e9\u201d") == [
        "jean", "-", "paul", "'", "s", "\u201c", unicodedata.normalize("NFD", "caf\u00e9"), "\u201d"]
    assert dpr_tokens(ZURICH_NFC) == ["zu\u0308rich"]  # the mark stays inside the word token


def test_has_answer_contiguous_tokens() -> None:
    assert has_answer("I live in new york city", ["New York"])
    assert not has_answer("I live in new york city", ["York New"])
    assert not has_answer("a Parisian cafe", ["Paris"])     # "parisian" is one token
    assert has_answer("Paris, France", ["Lyon", "paris"])
    assert has_answer("Paris", "Paris")


def test_has_answer_unicode_and_punctuation() -> None:
    assert has_answer(ZURICH_NFC, [ZURICH_NFD])             # both become NFD
    assert has_answer(ZURICH_NFD, [ZURICH_NFC])
    assert not has_answer("Zurich", [ZURICH_NFC])           # no accent folding
    # em dash is its own token: [paris, —, france]
    assert not has_answer("Paris\u2014France", ["Paris France"])
    assert has_answer("Paris\u2014France", ["France"])
    assert has_answer("Jean-Paul Sartre", ["Jean-Paul"])
    assert not has_answer("Jean-Paul Sartre", ["Jean Paul"])  # [jean, -, paul] vs [jean, paul]
    assert has_answer("\u201cParis\u201d", ["Paris"])       # quote tokens sit apart (EM gives 0)
    assert has_answer("the U.S. army", ["U.S."])            # [u, ., s, .] found in order
    assert not has_answer("the US army", ["U.S."])
    assert has_answer("anything", ["  "])                   # no gold tokens: DPR's loop matches at position 0
    assert has_answer("", [""])


# ---------------------------------------------------------------- answer recall

def test_answer_recall_k_and_joined() -> None:
    texts = ["Paris is the capital.", "It lies on the Seine near New", "York, said nobody."]
    assert answer_recall(texts, ["Seine"], k=1) == 0.0
    assert answer_recall(texts, ["Seine"], k=2) == 1.0
    assert answer_recall(texts, ["Seine"], k=50) == 1.0     # k past the end uses what is there
    # "New York" runs across the boundary between texts 2 and 3
    assert answer_recall(texts, ["New York"], k=3) == 0.0
    assert answer_recall(texts, ["New York"], k=3, joined=True) == 1.0
    assert answer_recall(texts, ["New York"], k=2, joined=True) == 0.0
    assert answer_recall([], ["Paris"], k=1) == 0.0
    with pytest.raises(ValueError, match="k >= 1"):
        answer_recall(texts, ["Paris"], k=0)


# ---------------------------------------------------------------- judge

@pytest.mark.parametrize(("reply", "verdict"), [
    ("TRUE", True),
    ("**False**", False),
    ("The answer is true.", True),
    ("FALSE. The response does not match.", False),
    ("", None),
    ("   \n ", None),
    ("I cannot decide.", None),
    ("That would be untrue", None),             # word-bounded: "untrue" is not a verdict
    ("TRUE ... FALSE", None),                   # conflict on one line
    ("True or false? It is TRUE", None),        # conflict, no bare closing line
    ("TRUE\nFALSE", False),                     # a bare closing verdict line wins
    ("The response is not true.", None),        # negated verdict
    ("The response is not true.\n**FALSE**", False),
    ("Explanation: it names Paris; saying Lyon would be false.\nDecision: TRUE", True),
    ("Explanation: it says 1912, true year is 1913.\n**Decision**: **FALSE**", False),
    ('{"explanation": "matches", "decision": "TRUE"}', True),
    ("<think>maybe FALSE, maybe TRUE</think>\nTRUE", True),
    ("maybe false... </think> Verdict: true", True),
])
def test_parse_judgement(reply: str, verdict: bool | None) -> None:
    assert parse_judgement(reply) is verdict


def test_judge_prompt_fills() -> None:
    text = JUDGE_PROMPT.format(question="Q?", gold="Paris", response="It is {Paris}")
    assert "Question: Q?" in text and "Ground truth answer: Paris" in text and "{Paris}" in text
    assert "TRUE" in text and "FALSE" in text


# ---------------------------------------------------------------- registry

def test_parse_answer_metric() -> None:
    em = parse_answer_metric("EM")
    assert (em.kind, em.needs) == ("EM", "prediction")
    assert em.score(["Paris"], prediction="the Paris") == 1.0
    assert parse_answer_metric("f1").score(["Eiffel Tower"], prediction="Eiffel") == pytest.approx(2 / 3)
    assert parse_answer_metric("popqa_acc").score(["Paris"], prediction="Parisian") == 1.0

    ar = parse_answer_metric("answer_recall@2")
    assert (ar.needs, ar.k, ar.joined, ar.with_title) == ("retrieved", 2, False, False)
    assert ar.score(["Seine"], texts=["x", "the Seine"]) == 1.0
    arj = parse_answer_metric("answer_recall_joined@2")
    assert (arj.k, arj.joined) == (2, True)
    assert arj.score(["New York"], texts=["New", "York"]) == 1.0

    judge = parse_answer_metric("judge_acc")
    assert judge.needs == "judge"
    assert judge.score(["Paris"], judgement="Decision: TRUE") == 1.0
    assert judge.score(["Paris"], judgement="FALSE") == 0.0
    assert judge.score(["Paris"], judgement="no idea") is None


@pytest.mark.parametrize("name", ["BLEU", "answer_recall@0", "answer_recall@", "answer_recall@k", "EM@3"])
def test_unknown_answer_metric(name: str) -> None:
    with pytest.raises(ValueError,
                       match="known: EM, longrag_EM, F1, popqa_acc, token_recall, has_answer, answer_recall@k"):
        parse_answer_metric(name)


def test_metric_without_its_input() -> None:
    with pytest.raises(ValueError, match="retrieved texts"):
        parse_answer_metric("answer_recall@1").score(["Paris"], prediction="Paris")
    with pytest.raises(ValueError, match="judge"):
        parse_answer_metric("judge_acc").score(["Paris"], prediction="Paris")
    with pytest.raises(ValueError, match="prediction"):
        parse_answer_metric("EM").score(["Paris"], texts=["Paris"])


# ---------------------------------------------------------------- grouping

def test_popularity_deciles() -> None:
    # sorted 1,2,3,3,4,...,9 (n = 10); decile = 10*r//10 = r, r = number of values below.
    # Both 3s have r = 2, so decile 3 is empty.
    assert popularity_deciles([5, 1, 3, 3, 9, 7, 2, 8, 6, 4]) == [5, 0, 2, 2, 9, 7, 1, 8, 6, 4]
    assert popularity_deciles([40, 10, 30, 20]) == [7, 0, 5, 2]  # 10*r//4 for r = 3,0,2,1
    assert popularity_deciles([7, 7, 7]) == [0, 0, 0]
    assert popularity_deciles(list(range(20))) == [i // 2 for i in range(20)]
    assert popularity_deciles([]) == []
    with pytest.raises(ValueError, match="NaN"):
        popularity_deciles([1.0, math.nan])


def test_log_popularity_bins() -> None:
    # ln values 0, ln10, 2ln10, 3ln10 sit at 0, 1/3, 2/3, 1 of the range -> bins 0, 3, 6, 9 (max clamped)
    assert log_popularity_bins([1, 10, 100, 1000]) == [0, 3, 6, 9]
    assert log_popularity_bins([5, 5]) == [0, 0]
    with pytest.raises(ValueError, match="positive"):
        log_popularity_bins([0, 10])


def test_mean_by_group_multi_label() -> None:
    per_query = {
        "q1": {"EM": 1.0, "judge_acc": 1.0},
        "q2": {"EM": 0.0, "judge_acc": None},  # unparseable judgement
        "q3": {"EM": 1.0, "judge_acc": 0.0},
        "q4": {"EM": 0.0, "judge_acc": 0.0},   # in no group
    }
    groups = {"q1": ["temporal", "numerical"], "q2": "numerical", "q3": ["temporal", "temporal"]}
    assert mean_by_group(per_query, groups) == {
        "numerical": {"EM": (0.5, 2), "judge_acc": (1.0, 1)},  # q1, q2; q2's judge left out
        "temporal": {"EM": (1.0, 2), "judge_acc": (0.5, 2)},   # q1, q3 (q3 counted once)
    }
    assert list(mean_by_group(per_query, groups)) == ["numerical", "temporal"]
    by_decile = mean_by_group(per_query, {"q1": 0, "q2": 0, "q3": 9})
    assert by_decile[0]["EM"] == (0.5, 2) and by_decile[9]["EM"] == (1.0, 1)
    only_none = mean_by_group({"q2": {"judge_acc": None}}, {"q2": "x"})
    assert math.isnan(only_none["x"]["judge_acc"][0]) and only_none["x"]["judge_acc"][1] == 0


# -- token recall (bag-of-tokens correctness baseline) -------------------------------------------------
@pytest.mark.parametrize(("prediction", "golds", "expected"), [
    ("Jane Austen wrote it", ["Jane Austen"], 1.0),                 # every gold token present
    ("Austen", ["Jane Austen"], 0.5),                               # 1 of 2
    ("The Eiffel Tower.", ["the Eiffel tower"], 1.0),               # case, article and punctuation normalised away
    ("new york", ["New York New York"], 0.5),                       # multiplicity: 2 of the 4 gold tokens
    ("a politician", ["politician", "political leader"], 1.0),      # the best gold
    ("leader of men", ["politician", "political leader"], 0.5),
    ("anything", ["the", "!"], 1.0),                                # golds normalising to nothing score 1 (InstructQA)
    ("", ["Paris"], 0.0),
])
def test_token_recall(prediction: str, golds: list[str], expected: float) -> None:
    assert token_recall(prediction, golds) == pytest.approx(expected)
    assert parse_answer_metric("token_recall").score(golds, prediction=prediction) == pytest.approx(expected)
