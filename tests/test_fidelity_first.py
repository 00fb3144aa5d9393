"""Issue 14 (method fidelity), FIRST identifier tokens and the listwise/FIRST prompt layout.

Each test's docstring states the authors' rule it checks and where it lives. The tokenizers
below are built here: SentencePiece-style (Metaspace) BPE models where `encode("A")` gives the
space-prefixed piece `▁A` but a bare `A` (and a byte-fallback `<0x41>`) also exist, as in the
Mistral/Zephyr/Llama-2 tokenizers of the FIRST and RankZephyr checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ragbench.cache import Cache
from ragbench.llm.base import best_label_logprobs, label_token_ids, match_top_logprobs
from ragbench.llm.config import OpenAIServerConfig, TransformersLLMConfig
from ragbench.llm.factory import make_llm
from ragbench.passages import rank_llm_passage
from ragbench.progress import Reporter
from ragbench.rerankers.first import First, FirstOptions, order_by_logprobs
from ragbench.rerankers.listwise import (
    Listwise,
    ListwiseOptions,
    build_chat,
    rank_llm_windows,
)
from ragbench.stage import StageEnv
from ragbench.types import Corpus, Document, Query

PIECES = ["<unk>", "<s>", "</s>", "▁", "A", "B", "C", "[", "]", ">", "▁A", "▁B", "▁C", "▁[", "<0x41>", "x",
          "▁x"]
ID = {p: i for i, p in enumerate(PIECES)}
TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}ANSWER:{% endif %}"


def sentencepiece_tokenizer(prepend_scheme: str) -> Any:
    """A Mistral-like tokenizer: BPE over Metaspace pieces, byte fallback, legacy off."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    merges = [("▁", "A"), ("▁", "B"), ("▁", "C"), ("▁", "["), ("▁", "x")]
    tok = Tokenizer(models.BPE(vocab=dict(ID), merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme, split=False)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(),
                                     decoders.Metaspace(replacement="▁", prepend_scheme=prepend_scheme, split=False)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>", legacy=False)
    fast.chat_template = TEMPLATE
    return fast


@pytest.mark.parametrize("scheme", ["first", "always"])
def test_identifier_is_the_bare_letter_token_not_encode_of_the_letter(scheme: str) -> None:
    """FIRST's identifier token is the one whose decoded text, right after "[", is the letter.

    Rule: gangiswag/llm-reranker `scripts/utils/rank_listwise_os_llm.py` `_evaluate_logits` and
    castorini/rank_llm `src/rank_llm/rerank/listwise/rank_listwise_os_llm.py` `_evaluate_logits`
    keep the logprob entries whose `decoded_token` is exactly one letter A..; vLLM decodes
    `▁A` after "[" as " A", so only the bare `A` and the byte token `<0x41>` count for "A".
    The old code took `tokenizer.encode("A")`, which here is `▁A`.
    """
    tok = sentencepiece_tokenizer(scheme)
    assert tok.encode("A", add_special_tokens=False) == [ID["▁A"]]  # what the old rule picked
    assert tok.convert_ids_to_tokens(tok.encode("[A", add_special_tokens=False)) == ["▁[", "A"]  # what follows "["
    assert label_token_ids(tok, ["A", "B", "C"], "sp", after="[") == [[ID["A"], ID["<0x41>"]], [ID["B"]], [ID["C"]]]


def test_several_tokens_for_one_letter_keep_the_likeliest() -> None:
    """rank_llm `_evaluate_logits` (after its "Bug Fix - FIRSTMistral"): per letter, the highest logprob of its
    tokens."""
    ids = [[ID["A"], ID["<0x41>"]], [ID["B"]], [ID["C"]]]
    lp = {ID["A"]: -3.0, ID["<0x41>"]: -1.5, ID["B"]: -2.0, ID["▁C"]: -0.1}  # C's bare token not reported
    assert best_label_logprobs(["A", "B", "C"], ids, lp) == {"A": -1.5, "B": -2.0}


def test_smollm2_letters_are_its_bare_letter_tokens(smollm2_dir: Path) -> None:
    """Byte-level BPE (SmolLM2): the bare `A` is both encode("A") and the token after "["; `ĠA` (" A") is not."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    letters = [chr(ord("A") + i) for i in range(20)]
    ids = label_token_ids(tok, letters, "smollm2", after="[")
    assert [tok.convert_ids_to_tokens(g) for g in ids] == [[c] for c in letters]
    assert tok.convert_tokens_to_ids("ĠA") not in ids[0]


def _biased_llm(tok: Any, logits: dict[str, float], tmp_path: Path) -> Any:
    """A real TransformersLLM over a one-layer Llama whose next-token logits are `logits` (0 elsewhere)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ragbench.llm.loading import LoadedLM

    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    head = torch.nn.Linear(8, len(tok), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for piece, value in logits.items():
            head.bias[ID[piece]] = value
    model.lm_head = head
    llm = make_llm(TransformersLLMConfig(model=str(tmp_path), cache=False), None)
    llm._loaded = LoadedLM(model, tok, {"path": str(tmp_path)})
    return llm


@pytest.mark.parametrize("scheme", ["first", "always"])
def test_first_ranks_by_the_bare_letters_through_the_transformers_backend(scheme: str, tmp_path: Path) -> None:
    """A FIRST window ordered from one next-token distribution, read by the transformers backend.

    Logits: ▁A 5, ▁C 4, ▁B 0 (the tokens encode() gives) but bare B 3, <0x41> 2.5, C 2, A 1.
    The authors' rule (decoded text == letter, likeliest token per letter; rank_llm and
    gangiswag `_evaluate_logits`) gives A = max(1, 2.5) = 2.5, B = 3, C = 2: order B, A, C.
    The old encode() rule read ▁A, ▁B, ▁C: order A, C, B.
    """
    import math

    tok = sentencepiece_tokenizer(scheme)
    llm = _biased_llm(tok, {"▁A": 5.0, "▁C": 4.0, "B": 3.0, "<0x41>": 2.5, "C": 2.0, "A": 1.0}, tmp_path)
    chat = [{"role": "user", "content": "x x x"}]
    (lp,) = llm.next_token_logprobs([chat], ["A", "B", "C"], prefix="[")
    # log-softmax by hand: 6 tokens carry the logits above, the other len(PIECES) - 6 have 0
    z = math.log(sum(math.exp(v) for v in (5.0, 4.0, 3.0, 2.5, 2.0, 1.0)) + (len(PIECES) - 6))
    assert lp == pytest.approx({"A": 2.5 - z, "B": 3.0 - z, "C": 2.0 - z}, abs=1e-5)
    assert order_by_logprobs(lp, 3) == [1, 0, 2]


def test_server_matches_tokens_by_id_or_by_exact_text(tmp_path: Path) -> None:
    """openai_server: with a local tokenizer the request names the bare-letter ids and reads tokens back by id.

    Rule as above. vLLM's server names a token `token_id:N` when asked (`return_tokens_as_token_ids`);
    without ids, an entry counts only when its text is exactly the letter (vLLM shows `▁A` as " A").
    """
    tok = sentencepiece_tokenizer("first")
    tok.save_pretrained(tmp_path / "tok")
    config = OpenAIServerConfig(model="served", base_url=["http://127.0.0.1:9/v1"], tokenizer=str(tmp_path / "tok"))
    llm = make_llm(config, None)
    ids = llm._candidate_ids(("A", "B"), "[")
    assert ids == [[ID["A"], ID["<0x41>"]], [ID["B"]]]
    by_id = [(f"token_id:{ID['▁A']}", -0.2), (f"token_id:{ID['A']}", -2.0), (f"token_id:{ID['<0x41>']}", -1.0),
             (f"token_id:{ID['B']}", -3.0)]
    assert match_top_logprobs(by_id, ("A", "B"), ids) == {"A": -1.0, "B": -3.0}
    by_text = [(" A", -0.2), ("A", -2.0), ("A", -1.0), (" B", -0.5)]
    assert match_top_logprobs(by_text, ("A", "B"), None) == {"A": -1.0}


# ----------------------------------------------------------------------------- prompt layout (7a)
def _stage(cls: type, docs: dict[str, Document], **options: Any) -> Any:
    opts = (ListwiseOptions if cls is Listwise else FirstOptions)(**options)
    stage = cls(opts, StageEnv(Cache("/nonexistent"), Reporter(quiet=True), "rerank"))
    stage.corpus = Corpus(docs, "fp")
    return stage


def test_passages_are_laid_out_as_rank_llm_writes_them() -> None:
    """rank_llm `src/rank_llm/rerank/inference_handler.py` `_convert_doc_to_prompt_content`.

    Rule: "Title: " + title + " Content: " + text when the title is non-empty, else the text;
    then stripped and cut to the first max_length whitespace words, the title and both labels
    counting as words (here 5 words: "Title:", "Big", "Cat", "Content:", "one").
    """
    assert rank_llm_passage("Big Cat", "one two  three", 300) == "Title: Big Cat Content: one two three"
    assert rank_llm_passage("Big Cat", "one two three", 5) == "Title: Big Cat Content: one"
    assert rank_llm_passage("", "  one two ", 300) == "one two"
    docs = {"t": Document("t", "a [1] text", title="Paris"), "n": Document("n", "no title here")}
    for cls in (Listwise, First):
        assert _stage(cls, docs).passage("t") == "Title: Paris Content: a [1] text"
        assert _stage(cls, docs).passage("n") == "no title here"
        # the old layout, as an option
        assert _stage(cls, docs, passage_format="plain").passage("t") == "Paris: a [1] text"


def test_the_whole_first_prompt_is_rank_zephyrs_alpha_template() -> None:
    """rank_llm `src/rank_llm/rerank/prompt_templates/rank_zephyr_alpha_template.yaml` and
    `src/rank_llm/rerank/listwise/singleturn_listwise_inference_handler.py` `generate_prompt`.

    Rule: user message = prefix (ends with one newline) + "[X] passage\\n" per passage + suffix;
    `_replace_number` turns "[digits]" into "(digits)" in the query and in every passage,
    letters untouched; the query is followed by "." in both prefix and suffix.
    """
    docs = {"t": Document("t", "see [2] and [B]", title="Paris"), "n": Document("n", "plain text")}
    chat = build_chat("what is [1]", [_stage(First, docs).passage(d) for d in ("t", "n")], "letters")
    assert chat == [
        {"role": "system", "content": "You are RankLLM, an intelligent assistant that can rank passages based on "
                                      "their relevancy to the query"},
        {"role": "user", "content":
            "I will provide you with 2 passages, each indicated by an alphabetical identifier []. Rank the passages "
            "based on their relevance to the search query: what is (1).\n"
            "[A] Title: Paris Content: see (2) and [B]\n"
            "[B] plain text\n"
            "Search Query: what is (1).\n"
            "Rank the 2 passages above based on their relevance to the search query. All the passages should be "
            "included and listed using identifiers, in descending order of relevance. The output format should be "
            "[] > [], e.g., [B] > [A], Answer concisely and directly and only respond with the ranking results, do not "
            "say any word or explain."},
    ]


def test_sliding_windows_are_rank_llms() -> None:
    """rank_llm `src/rank_llm/rerank/listwise/listwise_rankllm.py` `sliding_windows` (gangiswag's
    `scripts/utils/rankllm.py` is the same loop): from (n - w, n), both ends move up by stride
    while end > 0 and the unclamped start + stride != 0; start is clamped at 0.

    n=25, w=20, s=10: starts 5, -5, -15 -> [5,25), [0,15), [0,5) (-25 + 10 != 0 but end = -5).
    n=100: the loop stops when start = -10 (-10 + 10 == 0). The old code stopped after [0,15).
    """
    assert rank_llm_windows(25, 20, 10) == [(5, 25), (0, 15), (0, 5)]
    assert rank_llm_windows(100, 20, 10) == [(80 - 10 * i, 100 - 10 * i) for i in range(9)]
    assert rank_llm_windows(20, 20, 10) == [(0, 20)]
    # starts 5, 2, -1 (clamped), then -4: [0,1), not asked
    assert rank_llm_windows(10, 5, 3) == [(5, 10), (2, 7), (0, 4)]
    assert rank_llm_windows(5, 20, 10) == [(0, 5)]
    # n=11, w=4, s=2: starts 7, 5, 3, 1, -1, -3 -> ..., [1,5), [0,3), then [0,1), one passage, not asked
    assert rank_llm_windows(11, 4, 2) == [(7, 11), (5, 9), (3, 7), (1, 5), (0, 3)]
    assert rank_llm_windows(1, 20, 10) == [] and rank_llm_windows(0, 20, 10) == []


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ragbench.llm.loading import DEFAULT_MODEL, converted_model_dir

    return make_llm(TransformersLLMConfig(model=str(converted_model_dir(DEFAULT_MODEL)), cache=False), None)


def _kept_words(chat: Any, n: int) -> list[int]:
    """Words of each passage line `[X] ...` of a window's prompt (the label excluded)."""
    labels = {f"[{chr(65 + i)}]" for i in range(n)}
    return [len(line.split()) - 1 for line in chat[1]["content"].splitlines() if line.split(" ", 1)[0] in labels]


def test_windows_fit_rank_llms_prompt_budget(smollm2: Any) -> None:
    """rank_llm `src/rank_llm/rerank/listwise/rank_listwise_os_llm.py` `create_prompt`: a window's
    prompt must fit context_size (default 4096) minus `num_output_tokens` (the tokens of
    "[A] > [B] > ..."), whatever the model's own context; passages start at max_passage_words
    (300) and lose max(1, overflow // (4 * window)) words per round until it fits.

    Eight passages of 300 one-token words (about 2,500 prompt tokens): they keep their 300
    words under the default 4096 and under null (the model's 8192), and are cut, all to the
    same length, under context_size 1000. The old code knew only the model's context.
    """
    docs = {f"d{i}": Document(f"d{i}", "cat dog " * 200) for i in range(8)}
    q = Query("q", "query")
    perm = smollm2.count_tokens(" > ".join(f"[{chr(65 + i)}]" for i in range(8)))
    for size in (4096, None):
        stage = _stage(First, docs, window=8, context_size=size)
        stage._llm = smollm2
        assert _kept_words(stage.window_chat(q, list(docs), 1), 8) == [300] * 8
    stage = _stage(First, docs, window=8, context_size=1000)
    stage._llm = smollm2
    chat = stage.window_chat(q, list(docs), 1)
    assert smollm2.prompt_tokens(chat, "[") <= 1000 - perm
    kept = _kept_words(chat, 8)
    assert len(kept) == 8 and len(set(kept)) == 1 and kept[0] < 300


def test_passages_and_query_are_repaired_with_ftfy_as_rank_llm_does() -> None:
    """rank_llm `_convert_doc_to_prompt_content` runs `ftfy.fix_text` on each passage (and on the
    rendered prompt, hence the query): UTF-8 read as Latin-1 ("CafÃ©") is repaired before the word cut."""
    from ragbench.passages import rank_llm_passage
    from ragbench.rerankers.listwise import build_chat

    repaired = "Title: Café de Flore Content: A café in Paris."
    assert rank_llm_passage("CafÃ© de Flore", "A cafÃ© in Paris.", 300) == repaired
    chat = build_chat("which cafÃ©?", ["x"], "numeric")
    assert "which café?" in chat[-1]["content"] and "Ã" not in chat[-1]["content"]
