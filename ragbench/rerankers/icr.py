"""ICR: in-context reranking from a causal LM's attention, with no generation.

Chen, Jiménez Gutiérrez, Su, *Attention in Large Language Models Yields Efficient Zero-Shot
Re-Rankers* (ICLR 2025; code: OSU-NLP-Group/In-Context-Reranking). METHODS.md section 1.

1. One prompt holds every candidate. The chat template's user turn is " Here are some
   paragraphs:" SEP "[1] doc_1" SEP ... SEP "[N] doc_N" SEP <late instruction> SEP "Query:"
   " " <query>, then the assistant generation prompt. doc = title + "\\n" + text, with the
   text cut to `max_words` words. With `reverse_order` (every released script), the
   first-stage order is reversed, so the top document sits last, next to the query.
2. Spans are read from the tokenizer's offset mapping on the rendered prompt, so they are the
   model's own tokens. D_i is the tokens of "[i] doc_i". Q runs from the first token of the
   late instruction to the end of the prompt, chat suffix included.
3. s(j) = sum over layers and heads of the mean over t in Q of a_{t,j}. Everything before Q
   (the documents) is encoded once. The Q tokens of the calibration prompt (query "N/A") run
   on that KV cache, the cache is cropped back, and then the real Q tokens run.
   No full attention matrix is ever held. The prefix runs with sdpa, which returns no
   weights. Only the Q passes run eager. Forward hooks on every `*.self_attn` fold each
   layer's (heads, |Q|, keys) weights into one running vector and drop them as they appear.
4. c(j) = s_q(j) - s_NA(j) on D_i. Keep c(j) > mean_i - 2 std_i, where std_i is the sample
   std (n - 1), as the authors' `torch.std` computes it. score_i is the sum of the kept c(j).
   Rank descending, ties in first-stage order. `calibration: false` is the authors'
   `query_last` ablation: the plain sum of s_q over D_i.

Too long for `llm.context_length`: the per-passage word limit shrinks by max(1, overflow /
(4 N)) words until the prompt fits, as the listwise reranker does. The run logs how often that
happened. If even one word per passage does not fit, it is an error.
`window` reranks bottom-up in RankGPT-style windows. The output scores are then rank scores,
because ICR scores from different prompts cannot be compared.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ragbench.errors import RagbenchError
from ragbench.llm.config import LLMConfig, TransformersLLMConfig, make_llm
from ragbench.rerankers.base import (
    LLMReranker,
    LLMRerankerOptions,
    by_order,
    truncate_words,
    windows,
)
from ragbench.types import Query, Ranking

if TYPE_CHECKING:
    from ragbench.llm.transformers_backend import TransformersLLM

OPENING = " Here are some paragraphs:"
INSTRUCTIONS = {  # the authors' retrieval_instruction_late, QA and IE variants
    "qa": "Please answer the following question based on the information in the paragraphs above.",
    "ie": "Please find information that are relevant to the following query in the paragraphs above.",
}
CALIBRATION_QUERY = "N/A"


class ICROptions(LLMRerankerOptions):
    fields: tuple[str, ...] = Field(("title", "text"), description="document fields shown: the title on its own line, then the others (the authors' title + '\\n' + text)")
    instruction: Literal["qa", "ie"] = Field("qa", description="late instruction: qa (NQ, trec-covid, fiqa, touche, dbpedia, multi-hop) | ie (other BEIR sets)")
    reverse_order: bool = Field(True, description="put the first-stage top document last, next to the query (the authors' scripts)")
    calibration: bool = Field(True, description="subtract the 'N/A'-query attention and drop outlier tokens (false: the query_last ablation)")
    separator: str = Field("\n\n", description="between prompt parts: '\\n\\n' (Mistral), ' \\n\\n' (Llama-3)")
    window: int | None = Field(None, ge=2, description="candidates per prompt; default all of them in one prompt (ICR is worse with windows)")
    stride: int | None = Field(None, ge=1, description="window step, bottom-up; default window // 2")
    llm: LLMConfig = Field(default_factory=TransformersLLMConfig, description="must be backend 'transformers'; ICR loads the model with eager attention")

    @field_validator("llm")
    @classmethod
    def _needs_attention(cls, v: Any) -> Any:
        if v.backend != "transformers":
            raise ValueError(f"icr reads attention weights, which only backend 'transformers' exposes (got backend '{v.backend}')")
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


def build_prompt(llm: TransformersLLM, query: str, docs: Sequence[str], instruction: str, separator: str = "\n\n") -> Prompt:
    """The ICR prompt as token ids, with spans taken from the offsets of the rendered text.

    Tokenising pieces one by one can disagree with the whole text at the seams. Offsets on the
    rendered prompt cannot.
    """
    content, char_spans = OPENING, []
    for i, doc in enumerate(docs, 1):
        content += separator
        piece = f"[{i}] {doc}"
        char_spans.append((len(content), len(content) + len(piece)))
        content += piece
    content += separator
    instruction_at = len(content)
    content += f"{instruction}{separator}Query: {query.strip()}"

    rendered = llm.render([{"role": "user", "content": content}])
    base = rendered.find(content)
    if base < 0:  # templates that trim the message (Llama-3) move it by the stripped whitespace
        found = rendered.find(content.strip())
        if found < 0:
            raise RagbenchError.at("llm.model", f"the chat template of '{llm.model_name}' rewrites the user message; ICR cannot locate the passages in it")
        base = found - (len(content) - len(content.lstrip()))
    if not getattr(llm.tokenizer, "is_fast", False):
        raise RagbenchError.at("llm.model", f"ICR needs a fast (Rust) tokenizer for '{llm.model_name}': spans come from its offset mapping")
    enc = llm.tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    starts = [a for a, _ in enc["offset_mapping"]]
    ends = [b for _, b in enc["offset_mapping"]]
    spans = [(bisect.bisect_left(starts, base + a), bisect.bisect_left(starts, base + b)) for a, b in char_spans]
    query_start = bisect.bisect_right(ends, base + instruction_at)  # the token holding the instruction's first char
    return Prompt(list(enc["input_ids"]), spans, query_start)


def _self_attention_modules(model: Any) -> list[Any]:
    mods = [m for name, m in model.named_modules() if name.endswith("self_attn")]
    if not mods:
        raise RagbenchError.at("llm.model", f"{type(model).__name__} has no '*.self_attn' modules; ICR needs a decoder-only transformer")
    return mods


@contextmanager
def _implementation(model: Any, name: str) -> Iterator[None]:
    """Run with another attention implementation (where the model supports it), then restore."""
    old = model.config._attn_implementation
    with suppress(ValueError, ImportError):  # not supported: stay as loaded
        model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(old)


@contextmanager
def _accumulate(model: Any, acc: Any) -> Iterator[None]:
    """While active, add each layer's head-summed, query-averaged attention to `acc`.

    Eager attention returns (output, weights (1, heads, |Q|, keys)). The hook reduces the
    weights at once and returns None in their place, so at most one layer's |Q| rows are
    alive at any time, and nothing is collected into the model's output.
    """
    def hook(module: Any, args: Any, output: Any) -> Any:
        weights = output[1]
        if weights is None:
            raise RuntimeError("attention weights missing: ICR needs attn_implementation 'eager'")
        acc[: weights.shape[-1]] += weights[0].float().sum(0).mean(0)
        return (output[0], None, *output[2:])

    handles = [m.register_forward_hook(hook) for m in _self_attention_modules(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def attention_mass(model: Any, prefix: list[int], suffixes: Sequence[list[int]]) -> list[np.ndarray]:
    """For each suffix run after `prefix`: s(j) = sum of layers, heads and mean of suffix tokens.

    The prefix is encoded once, into a KV cache. It uses sdpa because no weights are needed
    there, and eager would build a heads x P x P matrix per layer. Each suffix then runs
    eagerly on that cache. The cache is cropped back to the prefix between suffixes. Each
    result has one value per position of prefix + suffix.
    """
    import torch
    from transformers import DynamicCache

    device = model.device
    out = []
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        with _implementation(model, "sdpa"):
            model(input_ids=torch.tensor([prefix], device=device), past_key_values=cache, use_cache=True, logits_to_keep=1)
        for k, suffix in enumerate(suffixes):
            if k:
                cache.crop(-len(suffixes[k - 1]))
            acc = torch.zeros(len(prefix) + len(suffix), dtype=torch.float32, device=device)
            with _implementation(model, "eager"), _accumulate(model, acc):
                model(input_ids=torch.tensor([suffix], device=device), past_key_values=cache, use_cache=True, logits_to_keep=1)
            out.append(acc.double().cpu().numpy())
    return out


def document_scores(s_q: np.ndarray, s_na: np.ndarray | None, spans: Sequence[tuple[int, int]]) -> list[float]:
    """score_i = sum of the kept c(j) over D_i, with c = s_q - s_NA. Without calibration: the sum of s_q."""
    scores = []
    for a, b in spans:
        c = s_q[a:b] if s_na is None else s_q[a:b] - s_na[a:b]
        if s_na is not None and len(c) > 1:
            c = c[c > c.mean() - 2 * c.std(ddof=1)]
        scores.append(float(c.sum()))
    return scores


class ICR(LLMReranker):
    Options = ICROptions
    options: ICROptions
    shrunk: int = 0  # prompts whose passages were cut below max_words to fit the context

    @property
    def llm(self) -> TransformersLLM:
        if getattr(self, "_llm", None) is None:
            self._llm = make_llm(self.options.llm.model_copy(update={"attn_implementation": "eager"}), self.env.cache)
        return self._llm  # type: ignore[return-value]

    def doc_text(self, docid: str, max_words: int) -> str:
        """title + "\\n" + text, with the text cut to `max_words` (the authors' format)."""
        doc = self.corpus.get(docid)
        if doc is None:
            return ""
        fields = self.options.fields
        body = " ".join(str(doc.text if f == "text" else doc.extra.get(f, "")).strip() for f in fields if f != "title")
        body = truncate_words(body, max_words)
        title = doc.title.strip() if "title" in fields and doc.title else ""
        return f"{title}\n{body}".strip() if title else body

    def prompts(self, query: str, docids: Sequence[str]) -> tuple[Prompt, Prompt | None]:
        """The real and calibration prompts, passages shrunk until both fit the context."""
        o, llm = self.options, self.llm
        instruction, words = INSTRUCTIONS[o.instruction], o.max_words
        while True:
            docs = [self.doc_text(d, words) for d in docids]
            real = build_prompt(llm, query, docs, instruction, o.separator)
            na = build_prompt(llm, CALIBRATION_QUERY, docs, instruction, o.separator) if o.calibration else None
            over = max(len(real.ids), len(na.ids) if na else 0) - llm.context_length
            if over <= 0:
                break
            if words == 1:
                raise RagbenchError.at("llm", f"the ICR prompt for {len(docids)} passages is {over} tokens over the context length {llm.context_length} even at one word per passage; lower top_k or set window")
            words = max(1, words - max(1, over // (4 * len(docids))))
        if words < o.max_words:
            self.shrunk += 1
        if na is not None and (na.ids[:na.query_start] != real.ids[:real.query_start] or na.doc_spans != real.doc_spans):
            raise RuntimeError("ICR: the calibration prompt does not share the real prompt's prefix")
        return real, na

    def score(self, query: str, docids: Sequence[str]) -> list[float]:
        """ICR scores of `docids` (in the order given)."""
        import time

        start = time.perf_counter()
        shown = list(docids)[::-1] if self.options.reverse_order else list(docids)
        real, na = self.prompts(query, shown)
        suffixes = [na.ids[na.query_start:]] if na else []
        masses = attention_mass(self.llm.model, real.ids[:real.query_start], [*suffixes, real.ids[real.query_start:]])
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
            self.env.reporter.log(f"{self.env.stage_id}: {self.shrunk} prompts had their passages cut below max_words={self.options.max_words} to fit the context")
