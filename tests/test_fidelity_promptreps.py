"""PromptReps (llm_sparse) follows the authors' released code (ielab/PromptReps).

- Candidate words: encode.py, get_valid_tokens_values: `word_tokenize(text.lower())` (NLTK: Punkt
  sentences, then the Treebank word tokenizer), minus `set(stopwords.words('english') +
  list(string.punctuation))`; each word is encoded alone, without special tokens.
- The text those words come from is the full text: dataset.py's collator returns the raw texts
  next to the truncated ids, and encode.py/search.py pass the raw ones to get_valid_tokens_values.
- Expansion pool: encode.py, get_filtered_ids (strip one leading "▁" or " ", then alphabetic or
  numeric, first character a-z).
- Hybrid: search.py's get_run_dict takes min and max of each run, hybrid.py's fuse divides by
  max(max - min, 1e-9), so a run whose scores are all equal gives every document 0.
"""

from __future__ import annotations

import string

import numpy as np
import pytest

from ragbench.retrievers.llm_sparse import (
    PromptReps,
    candidate_words,
    fuse_hybrid,
    minmax,
    nltk_stopwords,
    word_tokenize,
)


# ----------------------------------------------------------------------------- stopwords and words
def test_stopwords_are_nltks_english_list_plus_punctuation():
    """encode.py: stopwords = NLTK's English list + string.punctuation.

    NLTK's English file had 179 words until nltk_data commit 47111d8 (February 2025, 19 pronoun
    contractions added); PromptReps (2024) ran with the 179. Unlike scikit-learn's 318-word list it
    keeps content words such as system, fire, first, bill, found, interest, part, side, top, name.
    """
    stop = nltk_stopwords()
    words = stop - set(string.punctuation)
    assert len(words) == 179
    assert set(string.punctuation) <= stop
    assert {"the", "i", "should've", "wouldn't", "mightn", "ma", "s", "t", "don't"} <= words
    assert "i'm" not in words and "he's" not in words  # added to NLTK's data only in 2025
    # ... and those 2025 additions could never match: word_tokenize always splits them ("i" + "'m")
    added = ["i'm", "i've", "i'll", "i'd", "he's", "he'll", "he'd", "she'll", "she'd", "it'll", "it'd", "we're",
             "we've", "we'll", "we'd", "they're", "they've", "they'll", "they'd"]
    for w in added:
        assert w not in word_tokenize(f"so {w} here, ({w}) {w}.")
    kept = {"system", "fire", "first", "bill", "found", "interest", "part", "side", "top", "name", "three", "five",
            "amount", "show", "thick", "describe"}
    assert not kept & stop


def test_candidate_words_follow_nltk_word_tokenize():
    """encode.py: words = [w for w in word_tokenize(text.lower()) if w not in stopwords].

    Hand-worked with NLTK's rules: the Treebank tokenizer turns an opening double quote into ``
    and a closing one into '' (two characters, so not punctuation to drop), splits "don't" into
    "do" (a stopword) + "n't" (kept), keeps "il-6" and "0.05" whole; Punkt ends a sentence after
    "cells." so that period is split off (and dropped) although it is not the text's last one.
    """
    assert candidate_words('The system caught fire first; "Bill" found it.') == [
        "system", "caught", "fire", "first", "``", "bill", "''", "found"]
    assert candidate_words("Mice don't lack IL-6 cells. Three of them died (p < 0.05).") == [
        "mice", "n't", "lack", "il-6", "cells", "three", "died", "p", "0.05"]
    # Punkt's English model knows "u.s." and "dr." as abbreviations (no sentence end, the period stays);
    # "e.g." is not among them, so a sentence ends there and its period is split off
    assert word_tokenize("in the u.s. mice died. dr. smith agreed.") == [
        "in", "the", "u.s.", "mice", "died", ".", "dr.", "smith", "agreed", "."]
    assert word_tokenize("cells, e.g. neurons. mice") == ["cells", ",", "e.g", ".", "neurons", ".", "mice"]


# ----------------------------------------------------------------------------- with the real tokenizer
@pytest.fixture(scope="module")
def lm():
    from ragbench.llm import load_causal_lm

    model, tok, _ = load_causal_lm()
    return model, tok


def test_candidate_ids_are_each_word_encoded_alone(lm):
    """encode.py: token_ids.update(tokenizer.encode(word, add_special_tokens=False)) for each word."""
    model, tok = lm
    reps = PromptReps(model, tok)
    text = 'The system caught fire first; "Bill" found it.'
    expected: set[int] = set()
    for w in ["system", "caught", "fire", "first", "``", "bill", "''", "found"]:
        expected.update(tok.encode(w, add_special_tokens=False))
    assert reps.candidate_ids(text) == expected
    assert not set(tok.encode("the", add_special_tokens=False)) & reps.candidate_ids(text)


def test_words_beyond_the_truncation_point_are_candidates(lm):
    """encode.py gets the raw text (dataset.py's collator returns it beside the truncated ids).

    The model reads only max_length=6 tokens, all stopwords; the words after the cut still decide
    the candidates, so the vector is those words' tokens, weighted by the logits of the prompt the
    model read (not the 10-best-overall fallback of a text without candidates).
    """
    model, tok = lm
    reps = PromptReps(model, tok, max_length=6)
    text = "the of and the of and the of and zebra giraffe elephant"
    seen = reps.truncate([text])[0]
    assert candidate_words(seen) == [] and candidate_words(text) == ["zebra", "giraffe", "elephant"]
    (vec,), _ = reps.encode([text], is_query=False)
    w, _ = reps.forward([reps.prompt(seen, is_query=False)])
    ids = {i for word in ("zebra", "giraffe", "elephant") for i in tok.encode(word, add_special_tokens=False)}
    expected = {i: int(np.rint(w[0][i] * 100)) for i in ids}
    assert vec == {i: v for i, v in expected.items() if v > 0}
    # the non-default option reads words from the truncated text only: no candidate, so the
    # 10 best tokens of the whole vocabulary (encode.py's fallback)
    (cut,), _ = PromptReps(model, tok, max_length=6, candidate_text="truncated").encode([text], is_query=False)
    best = {int(i): int(np.rint(w[0][i] * 100)) for i in np.argsort(-w[0], kind="stable")[:10]}
    assert cut == {i: v for i, v in best.items() if v > 0} and cut != vec


def test_prompt_is_the_authors_prompt_files_wording(lm):
    """ielab/PromptReps prompts/<model>/passage_suffix.txt and query_suffix.txt (every model's files):
    `Passage: "<text>". Use one word to represent the passage in a retrieval task. Make sure your
    word is in lowercase.` then the assistant turn opened with `The word is: "` (with a colon), the
    next token being the word; README.md's example omits the colon (`assistant_prefix` gives it)."""
    model, tok = lm
    prompt = PromptReps(model, tok).prompt("Paris is big", is_query=False)
    assert ('Passage: "Paris is big". Use one word to represent the passage in a retrieval task. '
            'Make sure your word is in lowercase.') in prompt
    assert prompt.endswith('The word is: "')
    assert PromptReps(model, tok).prompt("capital", is_query=True).endswith('The word is: "')
    query_prompt = PromptReps(model, tok).prompt("capital", is_query=True)
    assert 'Query: "capital". Use one word to represent the query' in query_prompt
    prefixed = PromptReps(model, tok, assistant_prefix='The word is "').prompt("x", is_query=False)
    assert prefixed.endswith('The word is "')


def test_expansion_pool_is_the_authors_vocabulary_filter(lm):
    """encode.py, get_filtered_ids: strip one leading "▁" or " " (not byte-level BPE's "Ġ"), then
    keep alphabetic-or-numeric entries whose first character is a-z."""
    model, tok = lm
    pool = set(PromptReps(model, tok).expandable_ids().tolist())
    vocab = tok.get_vocab()
    assert vocab["fox"] in pool and vocab["Ġfox"] not in pool  # "Ġfox" starts with "Ġ", not a-z
    assert vocab["ĠFox"] not in pool and vocab["``"] not in pool
    # SmolLM2's vocabulary is byte-level BPE: no entry starts with "▁" or " ", so the pool is the
    # entries that are themselves lowercase-initial words or numbers
    assert not any(t[:1] in ("▁", " ") for t in vocab)
    assert pool == {i for t, i in vocab.items() if (t.isalpha() or t.isdigit()) and "a" <= t[0] <= "z"}


# ----------------------------------------------------------------------------- hybrid
def test_minmax_of_all_equal_scores_is_zero():
    """hybrid.py, fuse: (s - min) / max(max - min, 1e-9); max == min gives 0 for every document."""
    assert minmax({"a": 7.0, "b": 7.0}) == {"a": 0.0, "b": 0.0}
    assert minmax({"only": 3.2}) == {"only": 0.0}
    assert minmax({"a": 1.0, "b": 3.0, "c": 2.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert minmax({}) == {}


def test_hybrid_fusion_hand_worked():
    """hybrid.py, fuse: alpha * norm(dense) + (1 - alpha) * norm(sparse) over the union, 0 when absent.

    dense {d1: 0.9, d2: 0.5} -> {d1: 1, d2: 0}; sparse {d1: 7, d3: 7} (all equal) -> {d1: 0, d3: 0};
    alpha 0.5: d1 = 0.5, d2 = 0, d3 = 0. With alpha 0.25 and sparse {d1: 2, d3: 6}: d1 = 0.25 * 1 + 0.75 * 0,
    d2 = 0, d3 = 0.75.
    """
    assert fuse_hybrid({"d1": 0.9, "d2": 0.5}, {"d1": 7.0, "d3": 7.0}, 0.5) == {"d1": 0.5, "d2": 0.0, "d3": 0.0}
    assert fuse_hybrid({"d1": 0.9, "d2": 0.5}, {"d1": 2.0, "d3": 6.0}, 0.25) == {"d1": 0.25, "d2": 0.0, "d3": 0.75}
    assert fuse_hybrid({"d1": 0.9}, {}, 0.5) == {"d1": 0.0}  # an empty sparse run (no query terms) adds nothing
