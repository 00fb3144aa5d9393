"""ICR against the authors' code (OSU-NLP-Group/In-Context-Reranking): prompt layout per model
family, span boundaries, auto family detection, passage truncation, and the outlier filter.

The tokenizers are built here from `tokenizers` models with each family's special tokens and
pre-processing, so no Hub download is needed:
- Mistral-like: the Mistral-7B-Instruct-v0.2 tokenizer.json structure (normaliser prepends '▁'
  and turns spaces into '▁', BPE with byte fallback, BOS '<s>' added), with one token per
  character, so token k is character k - 2 of the prompt (after '<s>' and the prepended '▁').
- Llama-3-like: Llama-3's pre-tokenizer regex, one token per pre-token, the header/eot special
  tokens, BOS '<|begin_of_text|>' added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import LlamaConfig, MistralConfig, PreTrainedTokenizerFast

from ragbench.cache import Cache
from ragbench.passages import title_line as passage_text
from ragbench.progress import Reporter
from ragbench.rerankers.icr import (
    CALIBRATION_QUERY,
    ICR,
    INSTRUCTIONS,
    LAYOUTS,
    ICROptions,
    build_prompt,
    detect_format,
    document_scores,
)
from ragbench.stage import StageEnv
from ragbench.types import Corpus, Document

DOCS = ["Paris\nParis is in France.", "Rome\nRome is in Italy."]
QUERY = "Where is Paris?"
QA = INSTRUCTIONS["qa"]
LLAMA3_PRETOKENIZER = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                       r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{{ '<|im_start|>assistant\n' }}")
LLAMA3_TEMPLATE = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   "{{ m['content'] | trim }}<|eot_id|>{% endfor %}<|start_header_id|>assistant<|end_header_id|>\n\n")
INST = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"

MISTRAL_TEXT = ("[INST] Here are some paragraphs:\n\n[1] Paris\nParis is in France.\n\n[2] Rome\nRome is in Italy.\n\n"
                "Please answer the following question based on the information in the paragraphs above.\n\n"
                "Query: Where is Paris?[/INST]")
LLAMA3_TEXT = ("<|start_header_id|>user<|end_header_id|> Here are some paragraphs: \n\n"
               "[1] Paris\nParis is in France. \n\n[2] Rome\nRome is in Italy. \n\n"
               "Please answer the following question based on the information in the paragraphs above. \n\n"
               "Query: Where is Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>")


class Backend:
    """What build_prompt reads from an LLM backend: a tokenizer, a name, the chat template renderer."""

    def __init__(self, tokenizer: Any, name: str):
        self.tokenizer, self.model_name = tokenizer, name

    def render(self, chat: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def mistral_tokenizer(chat_template: str | None = INST) -> PreTrainedTokenizerFast:
    chars = sorted({c for t in (MISTRAL_TEXT, CALIBRATION_QUERY) for c in t.replace(" ", "▁") if c != "\n"} | {"▁"})
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, **{c: i + 4 for i, c in enumerate(chars)}}
    tk = Tokenizer(models.BPE(vocab, [], unk_token="<unk>", byte_fallback=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.chat_template = chat_template
    return tok


LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def llama3_tokenizer(specials: tuple[str, ...] = LLAMA3_SPECIALS,
                     chat_template: str | None = None) -> PreTrainedTokenizerFast:
    pre = pre_tokenizers.Split(Regex(LLAMA3_PRETOKENIZER), behavior="isolated")
    plain = LLAMA3_TEXT.replace("<|", " ").replace("|>", " ") + " " + CALIBRATION_QUERY
    plain += plain.replace(" \n\n", "\n\n")  # the chat_template separator
    pieces = sorted({p for p, _ in pre.pre_tokenize_str(plain)} | {"user", "assistant"})
    tk = Tokenizer(models.WordLevel({"<unk>": 0, **{p: i + 1 for i, p in enumerate(pieces)}}, unk_token="<unk>"))
    tk.pre_tokenizer = pre
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    bos = specials[0]
    tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tk.token_to_id(bos))])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=specials[-1], unk_token="<unk>")
    tok.chat_template = chat_template
    return tok


def authors_positions(tok: Any, fmt: str, query: str, docs: list[str],
                      instruction: str) -> tuple[list[tuple[int, int]], int, int]:
    """Spans by the authors' rule: count the tokens of each piece tokenised on its own.

    In _prepare_input_for_document_retrieval every piece is tokenised with the BOS (and, for
    Mistral, the '▁' the tokenizer puts before a leading newline), which are subtracted; a
    document starts one separator after the running count; the query span starts one separator
    after the last document and ends at the last token of " query" + suffix.
    """
    layout = LAYOUTS[fmt]
    sep, extra = layout.separator, 1 if fmt == "mistral" else 0

    def n(text: str) -> int:
        return len(tok(text).input_ids)

    sep_len = n(sep) - 1 - extra
    count = n(layout.prefix + " Here are some paragraphs:" + sep) - sep_len
    spans = []
    for i, doc in enumerate(docs, 1):
        count += sep_len
        length = n(f"{sep}[{i}] {doc}") - 1 - sep_len - extra
        spans.append((count, count + length))
        count += length
    query_start = count + sep_len
    count += sep_len + n(f"{sep}{instruction}{sep}Query:") - 1 - sep_len - extra
    count += n(f" {query.strip()}{layout.suffix}") - 1 - extra
    return spans, query_start, count - 1


def test_mistral_layout_is_the_authors_hand_written_inst_prompt() -> None:
    """Mistral: "[INST]" + " Here are some paragraphs:" + "\\n\\n[i] doc"... + "\\n\\n" + instruction
    + "\\n\\nQuery:" + " " + query + "[/INST]", tokenised with the tokenizer's BOS and no spaces
    around [INST] / [/INST] (the chat template writes "[INST] ... [/INST]"). Source:
    OSU-NLP-Group/In-Context-Reranking, src/in_context_reranker.py (_setup_llm_prompts,
    _prepare_input_for_document_retrieval)."""
    tok = mistral_tokenizer()
    p = build_prompt(Backend(tok, "mistral-like"), QUERY, DOCS, QA, prompt_format="mistral")  # type: ignore[arg-type]
    assert p.text == MISTRAL_TEXT
    # one token per character, after '<s>' and the prepended '▁': token k is character k - 2
    expected = ["<s>", "▁", *("▁" if c == " " else "<0x0A>" if c == "\n" else c for c in MISTRAL_TEXT)]
    assert tok.convert_ids_to_tokens(p.ids) == expected
    first, second = MISTRAL_TEXT.index("[1] Paris"), MISTRAL_TEXT.index("[2] Rome")
    assert p.doc_spans == [(2 + first, 2 + first + len("[1] " + DOCS[0])),
                           (2 + second, 2 + second + len("[2] " + DOCS[1]))]
    assert p.query_start == 2 + MISTRAL_TEXT.index("Please")
    spans, query_start, query_end = authors_positions(tok, "mistral", QUERY, DOCS, QA)
    assert (p.doc_spans, p.query_start, len(p.ids) - 1) == (spans, query_start, query_end)


def test_llama3_layout_has_no_system_block_and_no_newlines_after_the_headers() -> None:
    """Llama-3: "<|start_header_id|>user<|end_header_id|>" + " Here are some paragraphs:" +
    " \\n\\n[i] doc"... + " \\n\\n" + instruction + " \\n\\nQuery:" + " " + query +
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>", after the tokenizer's
    <|begin_of_text|>. No "Cutting Knowledge Date" system turn, no "\\n\\n" after a header, and the
    separator is " \\n\\n". Source: OSU-NLP-Group/In-Context-Reranking, src/in_context_reranker.py
    (_setup_llm_prompts; prompt_separator in __init__)."""
    tok = llama3_tokenizer()
    p = build_prompt(Backend(tok, "llama3-like"), QUERY, DOCS, QA, prompt_format="llama3")  # type: ignore[arg-type]
    assert p.text == LLAMA3_TEXT
    tokens = tok.convert_ids_to_tokens(p.ids)
    assert tokens == [
        "<|begin_of_text|>", "<|start_header_id|>", "user", "<|end_header_id|>",
        " Here", " are", " some", " paragraphs", ":", " \n\n",                                  # 0-9
        "[", "1", "]", " Paris", "\n", "Paris", " is", " in", " France", ".", " \n\n",          # 10-20
        "[", "2", "]", " Rome", "\n", "Rome", " is", " in", " Italy", ".", " \n\n",            # 21-31
        "Please", " answer", " the", " following", " question", " based", " on", " the",
        " information", " in", " the", " paragraphs", " above", ".", " \n\n",                  # 32-46
        "Query", ":", " Where", " is", " Paris", "?",
        "<|eot_id|>", "<|start_header_id|>", "assistant", "<|end_header_id|>",                 # 47-56
    ]
    assert p.doc_spans == [(10, 20), (21, 31)] and p.query_start == 32 and len(p.ids) == 57
    assert authors_positions(tok, "llama3", QUERY, DOCS, QA) == ([(10, 20), (21, 31)], 32, 56)


@pytest.mark.parametrize("fmt", ["mistral", "llama3"])
def test_spans_index_the_documents_and_the_query_span_runs_to_the_last_token(fmt: str) -> None:
    """D_i is exactly the tokens of "[i] doc_i"; Q starts at the late instruction and ends at
    the last token (the closing wrapper included); the 'N/A' calibration prompt shares every
    token before Q. Source: OSU-NLP-Group/In-Context-Reranking, src/in_context_reranker.py
    (query_start_idx / query_end_idx; the KV cache cut at query_start_idx in get_sorted_docs)."""
    tok = mistral_tokenizer() if fmt == "mistral" else llama3_tokenizer()
    backend, layout = Backend(tok, fmt), LAYOUTS[fmt]
    real = build_prompt(backend, QUERY, DOCS, QA, prompt_format=fmt)  # type: ignore[arg-type]
    na = build_prompt(backend, CALIBRATION_QUERY, DOCS, QA, prompt_format=fmt)  # type: ignore[arg-type]
    assert [tok.decode(real.ids[a:b]) for a, b in real.doc_spans] == [f"[{i}] {d}" for i, d in enumerate(DOCS, 1)]
    assert tok.decode(real.ids[real.query_start:]) == f"{QA}{layout.separator}Query: {QUERY}{layout.suffix}"
    assert tok.decode(na.ids[na.query_start:]) == f"{QA}{layout.separator}Query: N/A{layout.suffix}"
    assert na.ids[:na.query_start] == real.ids[:real.query_start] and na.doc_spans == real.doc_spans
    assert (na.doc_spans, na.query_start, len(na.ids) - 1) == authors_positions(tok, fmt, CALIBRATION_QUERY, DOCS, QA)


def test_auto_takes_the_family_from_the_architecture_and_the_tokenizer() -> None:
    """The authors lay out Mistral ('mistral' in the name) and Llama-3 ('llama-3' in the name) by
    hand and refuse every other model; ragbench falls back to the chat template for those.
    SmolLM2 is a llama architecture with ChatML tokens: not Llama-3, so chat_template. Source:
    OSU-NLP-Group/In-Context-Reranking, src/in_context_reranker.py (__init__, _setup_llm_prompts)."""
    chatml = llama3_tokenizer(specials=("<|im_start|>", "<|im_end|>"), chat_template=CHATML)
    assert detect_format(LlamaConfig(), llama3_tokenizer()) == "llama3"
    assert detect_format(LlamaConfig(), chatml) == "chat_template"  # SmolLM2's case
    assert detect_format(MistralConfig(), mistral_tokenizer()) == "mistral"
    assert detect_format(MistralConfig(), mistral_tokenizer(chat_template=None)) == "mistral"  # a base Mistral
    # a ChatML fine-tune of Mistral, and a mistral architecture under a Llama-3 tokenizer
    assert detect_format(MistralConfig(), mistral_tokenizer(chat_template=CHATML)) == "chat_template"
    assert detect_format(MistralConfig(), llama3_tokenizer(chat_template=LLAMA3_TEMPLATE)) == "chat_template"
    o = ICROptions()
    assert (o.prompt_format, o.separator, o.max_words) == ("auto", None, 300)


def test_chat_template_format_still_renders_the_template() -> None:
    """The fallback for other families: the tokenizer's own template around the same content,
    no extra BOS, separator '\\n\\n'."""
    tok = llama3_tokenizer(specials=("<|im_start|>", "<|im_end|>"), chat_template=CHATML)
    docs = [d.rstrip(".") for d in DOCS]  # Llama-3's regex would fuse ".\n\n" into one token across the seam
    p = build_prompt(Backend(tok, "chatml"), QUERY, docs, QA)  # type: ignore[arg-type]
    assert p.text.startswith("<|im_start|>user\n Here are some paragraphs:\n\n[1] Paris\n")
    assert p.text.endswith("Query: Where is Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.convert_ids_to_tokens(p.ids[:3]) == ["<|im_start|>", "user", "\n"]
    assert [tok.decode(p.ids[a:b]) for a, b in p.doc_spans] == [f"[{i}] {d}" for i, d in enumerate(docs, 1)]
    assert tok.decode(p.ids[p.query_start:]).startswith(QA)


def test_passages_are_cut_by_space_on_the_text_only() -> None:
    """Each paragraph_text is cut to ' '.join(text.split(' ')[:n]) (single spaces: a newline does
    not split words, an empty string between two spaces counts as one), and then the passage is
    (title + '\\n' + text).strip(); titles are never cut. Source: OSU-NLP-Group/In-Context-Reranking,
    experiments.py (--truncate_by_space, the passages list)."""
    # split(' ') of "a  b\nc d e" is ["a", "", "b\nc", "d", "e"]; the first two join to "a "
    assert passage_text("T", "a  b\nc d e", 2) == "T\na"
    assert passage_text("T", "one\ntwo three four", 2) == "T\none\ntwo three"
    assert passage_text("A long title of many words", "x y z", 1) == "A long title of many words\nx"
    assert passage_text("", "  x y", 5) == "x y"  # no title: "\n  x y".strip()
    assert passage_text("T", "x y ", 9, with_title=False) == "x y"  # fiqa: text only


def test_icr_doc_text_uses_the_authors_cut(tmp_path: Path) -> None:
    """The stage reads title and text from the corpus and applies the same rule."""
    stage = ICR(ICROptions(), StageEnv(Cache(tmp_path), Reporter(quiet=True), "icr"))
    stage.corpus = Corpus({"d": Document("d", "one\ntwo three four", "Title")}, "fp")
    assert stage.doc_text("d", 2) == "Title\none\ntwo three"
    untitled = ICR(ICROptions(fields=("text",)), StageEnv(Cache(tmp_path), Reporter(quiet=True), "icr"))
    untitled.corpus = stage.corpus
    assert untitled.doc_text("d", 3) == "one\ntwo three four"


def test_a_one_token_span_keeps_nothing() -> None:
    """The mask is c > mean - 2 * c.std() with torch's sample std, which is nan for one value;
    nothing is greater than nan, so a one-token document scores 0. Source:
    OSU-NLP-Group/In-Context-Reranking, src/in_context_reranker.py (masked_NA_calibration)."""
    s_q = np.array([5.0, 1.0, 2.0, 3.0])
    # doc 2: c = [1, 2, 3], mean 2, sample std 1, threshold 0: all kept, score 6
    assert document_scores(s_q, np.zeros(4), [(0, 1), (1, 4)]) == pytest.approx([0.0, 6.0])
    assert document_scores(s_q, None, [(0, 1), (1, 4)]) == pytest.approx([5.0, 6.0])  # query_last: no filter
