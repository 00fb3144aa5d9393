"""ICR: in-context reranking from a causal LM's attention, with no generation.

Chen, Jiménez Gutiérrez, Su, *Attention in Large Language Models Yields Efficient Zero-Shot
Re-Rankers* (ICLR 2025; code: OSU-NLP-Group/In-Context-Reranking, src/in_context_reranker.py and
experiments.py). docs/methods.md, In-context reranking (ICR).

1. One prompt holds every candidate: " Here are some paragraphs:" SEP "[1] doc_1" SEP ... SEP
   "[N] doc_N" SEP <late instruction> SEP "Query:" " " <query>. `prompt_format` wraps it the
   way the authors do for their two families, written by hand and tokenised with the
   tokenizer's own BOS: mistral "[INST]" ... "[/INST]" (SEP "\n\n"); llama3 the user header
   ... eot + assistant header, with no system block and no newlines after the headers (SEP
   " \n\n"). `auto` picks the family from the config's model_type and the tokenizer. Other
   models (SmolLM2: a Llama architecture with a ChatML tokenizer, which the authors' code
   refuses) get the chat template's user turn and generation prompt instead.
   doc = (title + "\n" + text).strip(), the text first cut to `max_words` space-separated
   words. With `reverse_order` (every released script) the first-stage order is reversed, so
   the top document sits last, next to the query.
2. Spans are read from the tokenizer's offset mapping on the whole prompt, so they are the
   model's own tokens. D_i is the tokens of "[i] doc_i". Q runs from the first token of the
   late instruction to the last token of the prompt, the closing wrapper included.
3. s(j) = sum over layers and heads of the mean over t in Q of a_{t,j}. Everything before Q
   (the documents) is encoded once. The Q tokens of the calibration prompt (query "N/A") run
   on that KV cache, the cache is cropped back, and then the real Q tokens run.
   No full attention matrix is ever held. The prefix runs with sdpa, which returns no
   weights. Only the Q passes run eager. Forward hooks on every `*.self_attn` fold each
   layer's (heads, |Q|, keys) weights into one running vector and drop them as they appear.
4. c(j) = s_q(j) - s_NA(j) on D_i. Keep c(j) > mean_i - 2 std_i, where std_i is the sample
   std (n - 1), as the authors' `torch.std` computes it (undefined for one token, which then
   keeps nothing). score_i is the sum of the kept c(j). Rank descending, ties in first-stage
   order. `calibration: false` is the authors' `query_last` ablation: the plain sum of s_q.

Too long for `llm.context_length`: the per-passage word limit shrinks by max(1, overflow /
(4 N)) words until the prompt fits, as the listwise reranker does. The run logs how often that
happened. If even one word per passage does not fit, it is an error.
`window` reranks bottom-up in RankGPT-style windows. The output scores are then rank scores,
because ICR scores from different prompts cannot be compared.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ragbench.errors import RagbenchError
from ragbench.llm.base import ATTENTION
from ragbench.llm.config import LLMConfig, TransformersLLMConfig
from ragbench.llm.factory import backend_class, make_llm
from ragbench.passages import render
from ragbench.rerankers.base import (
    LLMReranker,
    LLMRerankerOptions,
    by_order,
    windows,
)
from ragbench.types import Query, Ranking, TaskData

if TYPE_CHECKING:
    from ragbench.llm.transformers_backend import TransformersLLM

OPENING = " Here are some paragraphs:"
INSTRUCTIONS = {  # the authors' retrieval_instruction_late, QA and IE variants
    "qa": "Please answer the following question based on the information in the paragraphs above.",
    "ie": "Please find information that are relevant to the following query in the paragraphs above.",
}
CALIBRATION_QUERY = "N/A"

PromptFormat = Literal["auto", "mistral", "llama3", "chat_template"]


@dataclass(frozen=True)
class Layout:
    """How the authors wrap the prompt for one model family: by hand, not by chat template."""

    prefix: str
    suffix: str
    separator: str


LAYOUTS = {
    "mistral": Layout("[INST]", "[/INST]", "\n\n"),
    "llama3": Layout("<|start_header_id|>user<|end_header_id|>",
                     "<|eot_id|><|start_header_id|>assistant<|end_header_id|>", " \n\n"),
}
CHAT_TEMPLATE_SEPARATOR = "\n\n"  # the authors' separator for any other name
LLAMA3_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def detect_format(config: Any, tokenizer: Any) -> str:
    """`auto`: the authors' family for this model, or 'chat_template' for one they do not support.

    The authors choose by Hub name ('mistral' / 'llama-3' in it). A local copy has no such name,
    so the architecture (config.model_type) and the tokenizer decide: Llama-3 is a llama model
    whose tokenizer has the header and eot tokens, Mistral a mistral model whose chat template
    (if any) speaks [INST]. SmolLM2 is llama with ChatML tokens, so it gets its chat template.
    """
    model_type = getattr(config, "model_type", None)
    if model_type == "llama" and all(t in tokenizer.get_vocab() for t in LLAMA3_TOKENS):
        return "llama3"
    if model_type == "mistral" and "[INST]" in str(getattr(tokenizer, "chat_template", None) or "[INST]"):
        return "mistral"
    return "chat_template"


class ICROptions(LLMRerankerOptions):
    fields: tuple[str, ...] = Field(("title", "text"), description="document fields shown: the title on its own line, "
                                                                  "then the others (the authors' title + '\\n' + text)")
    max_words: int = Field(300, ge=1, description="each passage's text is cut to its first N space-separated words "
                                                  "(the authors' BEIR scripts: 300)")
    instruction: Literal["qa", "ie"] = Field("qa", description="late instruction: qa (NQ, trec-covid, fiqa, touche, "
                                                               "dbpedia, multi-hop) | ie (other BEIR sets)")
    prompt_format: PromptFormat = Field("auto", description="auto (the authors' layout for Mistral and Llama-3, "
                                                            "else chat_template) | mistral | llama3 | chat_template")
    reverse_order: bool = Field(True, description="put the first-stage top document last, next to the query "
                                                  "(the authors' scripts)")
    calibration: bool = Field(True, description="subtract the 'N/A'-query attention and drop outlier tokens "
                                                "(false: the query_last ablation)")
    separator: str | None = Field(None, description="between prompt parts; default the format's: "
                                                    "'\\n\\n' (mistral, chat_template), ' \\n\\n' (llama3)")
    window: int | None = Field(None, ge=2, description="candidates per prompt; default all of them in one prompt "
                                                       "(ICR is worse with windows)")
    stride: int | None = Field(None, ge=1, description="window step, bottom-up; default window // 2")
    llm: LLMConfig = Field(default_factory=TransformersLLMConfig, description="must be backend 'transformers'; "
                                                                            "ICR loads the model with eager attention")

    @field_validator("llm")
    @classmethod
    def _needs_attention(cls, v: Any) -> Any:
        if ATTENTION not in backend_class(v.backend).capabilities:
            raise ValueError("icr reads attention weights, which only backend 'transformers' exposes "
                             f"(got backend '{v.backend}')")
        return v

    @model_validator(mode="after")
    def _stride_needs_window(self) -> ICROptions:
        if self.stride is not None and (self.window is None or self.stride >= self.window):
            raise ValueError("stride needs a window larger than it")
        return self


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    doc_spans: list[tuple[int, int]]  # token [start, end) of "[i] doc_i", in prompt order
    query_start: int  # first token of the late instruction; ids[:query_start] is the shared prefix
    text: str = ""  # the prompt as tokenised (without the BOS the tokenizer adds for mistral / llama3)


def _chat_wrap(llm: Any, content: str) -> tuple[str, int]:
    """The chat template's rendering of one user turn, and where `content` starts in it."""
    rendered = llm.render([{"role": "user", "content": content}])
    base = rendered.find(content)
    if base < 0:  # templates that trim the message (Llama-3) move it by the stripped whitespace
        found = rendered.find(content.strip())
        if found < 0:
            raise RagbenchError.at("llm.model", f"the chat template of '{llm.model_name}' rewrites the user message; "
                                   "ICR cannot locate the passages in it")
        base = found - (len(content) - len(content.lstrip()))
    return rendered, base


def build_prompt(llm: TransformersLLM, query: str, docs: Sequence[str], instruction: str, separator: str | None = None,
                 prompt_format: str = "chat_template") -> Prompt:
    """The ICR prompt as token ids, with spans taken from the offsets of the whole prompt text.

    `prompt_format` mistral / llama3: the authors' hand-written wrapper, tokenised as they do
    (the tokenizer adds its BOS). chat_template: the tokenizer's template, which brings its own.
    Tokenising pieces one by one can disagree with the whole text at the seams. Offsets cannot.
    """
    sep = separator
    if sep is None:
        sep = LAYOUTS[prompt_format].separator if prompt_format in LAYOUTS else CHAT_TEMPLATE_SEPARATOR
    content, char_spans = OPENING, []
    for i, doc in enumerate(docs, 1):
        content += sep
        piece = f"[{i}] {doc}"
        char_spans.append((len(content), len(content) + len(piece)))
        content += piece
    content += sep
    instruction_at = len(content)
    content += f"{instruction}{sep}Query: {query.strip()}"

    if prompt_format in LAYOUTS:
        layout = LAYOUTS[prompt_format]
        text, base, special = layout.prefix + content + layout.suffix, len(layout.prefix), True
    elif prompt_format == "chat_template":
        (text, base), special = _chat_wrap(llm, content), False
    else:
        raise ValueError(f"unknown ICR prompt_format '{prompt_format}'")
    if not getattr(llm.tokenizer, "is_fast", False):
        raise RagbenchError.at("llm.model", f"ICR needs a fast (Rust) tokenizer for '{llm.model_name}': "
                               "spans come from its offset mapping")
    enc = llm.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    starts = [a for a, _ in enc["offset_mapping"]]
    ends = [b for _, b in enc["offset_mapping"]]
    spans = [(bisect.bisect_left(starts, base + a), bisect.bisect_left(starts, base + b)) for a, b in char_spans]
    query_start = bisect.bisect_right(ends, base + instruction_at)  # the token holding the instruction's first char
    return Prompt(list(enc["input_ids"]), spans, query_start, text)


def document_scores(s_q: np.ndarray, s_na: np.ndarray | None, spans: Sequence[tuple[int, int]]) -> list[float]:
    """score_i = sum of the kept c(j) over D_i, with c = s_q - s_NA. Without calibration: the sum of s_q.

    The sample std of one token is undefined (the authors' torch.std gives nan, and nothing
    compares greater than nan), so a one-token span keeps nothing and scores 0.
    """
    scores = []
    for a, b in spans:
        c = s_q[a:b] if s_na is None else s_q[a:b] - s_na[a:b]
        if s_na is not None:
            c = c[c > c.mean() - 2 * c.std(ddof=1)] if len(c) > 1 else c[:0]
        scores.append(float(c.sum()))
    return scores


class ICR(LLMReranker):
    Options = ICROptions
    options: ICROptions
    # 2: the authors' hand-written Mistral / Llama-3 prompts (prompt_format), space-split truncation
    #    of the text only, one-token spans scoring 0
    version = "2"
    shrunk: int = 0  # prompts whose passages were cut below max_words to fit the context
    _format: str | None = None

    @property
    def llm(self) -> TransformersLLM:
        """The backend, loaded with eager attention; it must have the ATTENTION capability."""
        if getattr(self, "_llm", None) is None:
            llm = make_llm(self.options.llm.model_copy(update={"attn_implementation": "eager"}), self.env.cache)
            llm.require(ATTENTION, "icr")
            self._llm = llm
        return self._llm  # type: ignore[return-value]

    @property
    def prompt_format(self) -> str:
        """The layout in use: the option, or for `auto` the family detected from the loaded model."""
        if self._format is None:
            fmt, tok = self.options.prompt_format, self.llm.tokenizer
            if fmt == "auto":
                fmt = detect_format(self.llm.model_config, tok)
            elif fmt == "llama3" and not all(t in tok.get_vocab() for t in LLAMA3_TOKENS):
                raise RagbenchError.at("prompt_format", f"'{self.llm.model_name}' has no Llama-3 header tokens; "
                                       "use prompt_format auto or chat_template")
            self._format = fmt
        return self._format

    def prepare(self, task: TaskData) -> None:
        super().prepare(task)
        if self.options.prompt_format == "auto" and self.prompt_format == "chat_template":
            self.env.reporter.log(f"{self.env.stage_id}: '{self.llm.model_name}' is not a family the ICR authors "
                                  "lay out by hand (Mistral, Llama-3); its chat template wraps the prompt")

    def doc_text(self, docid: str, max_words: int) -> str:
        """(title + "\\n" + text).strip(), the text first cut to `max_words` space-separated words (the authors')."""
        return render(self.corpus.get(docid), "title_line", self.options.fields, max_words)

    def prompts(self, query: str, docids: Sequence[str]) -> tuple[Prompt, Prompt | None]:
        """The real and calibration prompts, passages shrunk until both fit the context."""
        o, llm = self.options, self.llm
        instruction, words = INSTRUCTIONS[o.instruction], o.max_words
        while True:
            docs = [self.doc_text(d, words) for d in docids]
            real = build_prompt(llm, query, docs, instruction, o.separator, self.prompt_format)
            na = (build_prompt(llm, CALIBRATION_QUERY, docs, instruction, o.separator, self.prompt_format)
                  if o.calibration else None)
            over = max(len(real.ids), len(na.ids) if na else 0) - llm.context_length
            if over <= 0:
                break
            if words == 1:
                raise RagbenchError.at("llm", f"the ICR prompt for {len(docids)} passages is {over} tokens over the "
                                       f"context length {llm.context_length} even at one word per passage; "
                                       "lower top_k or set window")
            words = max(1, words - max(1, over // (4 * len(docids))))
        if words < o.max_words:
            self.shrunk += 1
        shared_prefix = na is None or (na.ids[:na.query_start] == real.ids[:real.query_start]
                                       and na.doc_spans == real.doc_spans)
        if not shared_prefix:
            raise RuntimeError("ICR: the calibration prompt does not share the real prompt's prefix")
        return real, na

    def score(self, query: str, docids: Sequence[str]) -> list[float]:
        """ICR scores of `docids` (in the order given)."""
        import time

        start = time.perf_counter()
        shown = list(docids)[::-1] if self.options.reverse_order else list(docids)
        real, na = self.prompts(query, shown)
        suffixes = [na.ids[na.query_start:]] if na else []
        masses = self.llm.attention_mass(real.ids[:real.query_start], [*suffixes, real.ids[real.query_start:]])
        scores = document_scores(masses[-1], masses[0] if na else None, real.doc_spans)
        self.llm.stats.requests += 1
        self.llm.stats.seconds += time.perf_counter() - start
        return scores[::-1] if self.options.reverse_order else scores

    def rerank(self, query: Query, candidates: Ranking) -> Ranking:
        ids = list(candidates.docids)
        size = self.options.window
        if size is None or size >= len(ids):
            scores = self.score(query.text, ids)
            order = sorted(range(len(ids)), key=lambda i: -scores[i])  # stable: ties keep first-stage order
            return Ranking(query.id, [ids[i] for i in order], [scores[i] for i in order])
        for a, b in windows(len(ids), size, self.options.stride or size // 2):
            scores = self.score(query.text, ids[a:b])
            ids[a:b] = [ids[a + i] for i in sorted(range(b - a), key=lambda i: -scores[i])]
        return by_order(query.id, ids)

    def finish(self) -> None:
        super().finish()
        if self.shrunk:
            self.env.reporter.log(f"{self.env.stage_id}: {self.shrunk} prompts had their passages cut below "
                                  f"max_words={self.options.max_words} to fit the context")
