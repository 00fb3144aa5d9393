"""The one interface every LLM backend implements (rerankers, readers and judges use only this).

Prompts are OpenAI-style chats (lists of `{"role", "content"}`), rendered by the model's own
chat template, so the same request means the same tokens on every backend; a `plain_prompt` is
sent as text, without the template (the model's BOS token first, as its tokenizer adds it). `prefix`
is text the assistant's reply starts with (FIRST appends "["): the backend continues it instead
of opening a new turn. `chat.render_chat` is that rendering, shared by the backends.

Two request kinds:
- `chat`: generate a reply per chat with the given sampling parameters;
- `next_token_logprobs`: log-probabilities of the first generated token, restricted to given
  candidate strings, each the text of some single token (FIRST's single-token ranking; see
  `label_token_ids` for which tokens count). Backends that
  only see the top-n log-probabilities return what they see; callers fill the rest.

Beyond these, a backend declares `capabilities`: what else it can do for a stage (ICR needs
"attention", which only a backend that holds the model in this process can give).

Every finished request is cached (key: backend, model, rendered request, parameters), so a
crashed or killed run re-asks only what had not finished. Backends implement the
`_chat` / `_logprobs` hooks and report each result as soon as it is done through `done`.
Each finished request is also reported to the `listener` (the stage's progress). Calls may come
from several threads at once (a stage's batches in flight): a server backend queues them
together; a backend holding the model in this process (`serial`) answers one call at a time.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ragbench.cache import Cache, make_key
from ragbench.errors import RagbenchError

Chat = list[dict[str, str]]
#: the role of a chat's only message when it is a plain-text prompt, sent without the chat template
#: (completion models, and protocols written for them: PopQA's "Q: ... A:")
PLAIN = "text"
#: the capability of reading the model's attention weights (ICR)
ATTENTION = "attention"


def plain_prompt(text: str) -> Chat:
    """A prompt the model reads as it is, not as a user turn (no chat template)."""
    return [{"role": PLAIN, "content": text}]


def plain_text(chat: Chat) -> str | None:
    """The text of a plain prompt, or None for a real chat."""
    return chat[0]["content"] if len(chat) == 1 and chat[0].get("role") == PLAIN else None

#: called by a backend as soon as request i (index into the list it was given) is finished
Done = Callable[[int, Any], None]


@dataclass(frozen=True)
class Sampling:
    """Generation parameters. Defaults: greedy, which every evaluation wants unless it samples."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    #: a JSON schema (as JSON text, so Sampling stays hashable) the reply must follow: constrained
    #: decoding, on the vLLM backends (structured outputs) only
    json_schema: str | None = None


@dataclass
class Generation:
    text: str
    finish_reason: str = "stop"  # "stop" (end of turn or a stop string) | "length" (max_tokens hit)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Generation:
        return cls(**{k: d[k] for k in ("text", "finish_reason", "prompt_tokens", "completion_tokens")}, cached=True)


@dataclass
class LLMStats:
    """Request counts; several batches of a stage may ask at once, so counts go through `add` (under a lock)."""

    requests: int = 0  # asked of the backend in this process
    cached: int = 0  # answered from the request cache
    failed: int = 0
    seconds: float = 0.0  # wall time with at least one call in flight (overlapping calls count once)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, requests: int = 0, cached: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.cached += cached
            self.failed += failed

    def summary(self) -> str:
        return f"{self.requests + self.cached} LLM requests ({self.cached} from cache, {self.requests} asked)"


class RequestListener(Protocol):
    """Who hears of each request (a stage's progress, `Reporter.requests`): called in the thread that made the
    call; may raise to stop the call (the stage is stopping)."""

    def __call__(self, *, submitted: int = 0, asked: int = 0, cached: int = 0) -> None: ...


@dataclass
class Request:
    """One request as the backend sees it: the chat, the assistant prefix, and its parameters."""

    chat: Chat
    prefix: str = ""
    sampling: Sampling = field(default_factory=Sampling)
    candidates: tuple[str, ...] = ()  # next_token_logprobs only


class LLM(ABC):
    """A chat model behind some backend. Subclasses set `backend` and implement the hooks."""

    backend: str = "?"
    #: what this backend can do beyond chat and log-probabilities (ATTENTION: `attention_mass`)
    capabilities: frozenset[str] = frozenset()
    #: a model held in this process serves one call at a time: calls from several threads take turns
    #: (a server backend queues them itself, bounded by its `concurrency`)
    serial: bool = False

    def __init__(self, cache: Cache | None = None, use_cache: bool = True):
        self.cache = cache
        self.use_cache = use_cache and cache is not None
        self.stats = LLMStats()
        #: told of every request handed over and finished (the stage's progress); None: nobody listens
        self.listener: RequestListener | None = None
        self._model_lock = threading.Lock()
        self._busy_lock = threading.Lock()
        self._busy = 0  # calls in flight
        self._busy_since = 0.0

    # -- what subclasses provide ------------------------------------------------------------
    @property
    @abstractmethod
    def model_name(self) -> str:
        """The model as requests name it (a path, a Hub id, a served model name)."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Backend, model, weights hash or server model, versions: for config.lock.yaml."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Tokens the model accepts (prompt + generated)."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens in `text` under the model's tokenizer (no special tokens added)."""

    def render(self, chat: Chat, prefix: str = "") -> str:
        """The prompt text the model sees: the chat template with the generation prompt, then `prefix`."""
        raise NotImplementedError(f"backend '{self.backend}' does not render prompts locally")

    def prompt_tokens(self, chat: Chat, prefix: str = "") -> int:
        """Tokens in the rendered prompt (for prompt budgets)."""
        return self.count_tokens(self.render(chat, prefix))

    @abstractmethod
    def _chat(self, requests: list[Request], done: Done) -> None:
        """Generate for each request; call `done(i, Generation)` as each finishes."""

    @abstractmethod
    def _logprobs(self, requests: list[Request], done: Done) -> None:
        """For each request, `done(i, {candidate: logprob})` for the first generated token."""

    def require(self, capability: str, user: str) -> None:
        """Fail with one line naming this backend when it lacks what `user` (a stage type) needs."""
        if capability not in self.capabilities:
            raise self._lacks(capability, user)

    def _lacks(self, capability: str, user: str) -> RagbenchError:
        return RagbenchError.at("llm.backend", f"{user} needs the '{capability}' capability, "
                                f"which backend '{self.backend}' does not have")

    def attention_mass(self, prefix: list[int], suffixes: Sequence[list[int]]) -> list[Any]:
        """Per suffix run after `prefix`, each position's attention summed over layers and heads and
        averaged over the suffix tokens (ICR): only backends with the ATTENTION capability."""
        raise self._lacks(ATTENTION, "reading attention")

    def cache_identity(self) -> Any:
        """What makes two backends' answers interchangeable; part of every request key."""
        return [self.backend, self.identity().get("model_key", self.model_name)]

    # -- the public calls ---------------------------------------------------------------------
    def chat(self, chats: Sequence[Chat], sampling: Sampling | None = None, prefix: str = "") -> list[Generation]:
        """One reply per chat (the reply excludes `prefix`)."""
        sampling = sampling or Sampling()
        reqs = [Request(list(c), prefix, sampling) for c in chats]
        raw = self._run("chat", reqs, self._chat, lambda g: asdict(g), Generation.from_json)
        return raw

    def next_token_logprobs(self, chats: Sequence[Chat], candidates: Sequence[str],
                            prefix: str = "") -> list[dict[str, float]]:
        """Per chat, {candidate: log-probability of it as the first generated token}.

        Backends that see the full distribution return every candidate; those limited to the
        top-n log-probabilities (OpenAI-style servers) return the candidates among them.
        """
        cands = tuple(candidates)
        reqs = [Request(list(c), prefix, Sampling(max_tokens=1), cands) for c in chats]
        return self._run("logprobs", reqs, self._logprobs, lambda d: d, lambda d: {k: float(v) for k, v in d.items()})

    # -- request cache --------------------------------------------------------------------------
    def _key(self, kind: str, r: Request) -> str:
        # json_schema is left out when unset, so keys made before it existed stay valid
        sampling = {k: v for k, v in asdict(r.sampling).items() if not (k == "json_schema" and v is None)}
        return make_key("llm-request", self.cache_identity(), kind, r.chat, r.prefix, sampling, r.candidates)

    def _run(self, kind: str, reqs: list[Request], hook: Callable[[list[Request], Done], None],
             dump: Callable[[Any], Any], load: Callable[[Any], Any]) -> list[Any]:
        out: list[Any] = [None] * len(reqs)
        keys = [self._key(kind, r) for r in reqs]
        todo: list[int] = []
        for i, k in enumerate(keys):
            hit = self._cache_get(k) if self.use_cache else None
            if hit is not None:
                out[i] = load(hit)
            else:
                todo.append(i)
        self.stats.add(cached=len(reqs) - len(todo))
        self._notify(submitted=len(reqs), cached=len(reqs) - len(todo))
        if todo:

            def done(j: int, result: Any) -> None:
                i = todo[j]
                out[i] = result
                self.stats.add(requests=1)
                if self.use_cache:
                    self._cache_put(keys[i], dump(result))
                self._notify(asked=1)  # after the cache: a stopping stage keeps what finished

            with self._model_lock if self.serial else nullcontext(), self._timed():
                hook([reqs[i] for i in todo], done)
        missing = [i for i, o in enumerate(out) if o is None]
        if missing:  # a backend bug, never a silent gap
            raise RuntimeError(f"{self.backend} backend returned no result for {len(missing)} of {len(reqs)} requests")
        return out

    def _notify(self, **counts: int) -> None:
        if self.listener is not None and any(counts.values()):
            self.listener(**counts)

    @contextmanager
    def _timed(self) -> Any:
        """Adds to `stats.seconds` the time during which at least one call is in flight."""
        with self._busy_lock:
            if self._busy == 0:
                self._busy_since = time.perf_counter()
            self._busy += 1
        try:
            yield
        finally:
            with self._busy_lock:
                self._busy -= 1
                if self._busy == 0:
                    self.stats.seconds += time.perf_counter() - self._busy_since

    def _cache_get(self, key: str) -> Any:
        assert self.cache is not None
        return self.cache.get_json(self.cache.llm_entry(key))

    def _cache_put(self, key: str, value: Any) -> None:
        assert self.cache is not None
        self.cache.put_json(self.cache.llm_entry(key), value)  # sealed (checksum); the first writer wins


def label_token_ids(tokenizer: Any, labels: Sequence[str], model: str, after: str = "[") -> list[list[int]]:
    """Per label, every vocabulary id whose text, right after `after`, is exactly the label.

    FIRST reads the log-probability of the identifier the model would write after "[". The
    authors keep the token whose decoded text is the label (gangiswag/llm-reranker and
    castorini/rank_llm `_evaluate_logits`, on vLLM's `decoded_token`): with SentencePiece
    tokenizers that is the bare piece `A` (or the byte token `<0x41>`), never the `▁A` that
    `encode("A")` gives, which decodes to " A" after "[". A token's text is read in context
    (decode of `after` + token, minus decode of `after`) so leading spaces are kept, as vLLM's
    incremental detokenizer keeps them (without an assistant prefix, callers pass "\n", which ends
    most chat templates' generation prompt). Ties (several ids per label) are resolved by the caller
    with rank_llm's rule: the likeliest of them. The table is computed once per tokenizer.
    """
    table = _text_after(tokenizer, after, labels)
    out = []
    for label in labels:
        ids = table.get(label, [])
        if not ids:
            raise RagbenchError.at("llm.model", f"no single token of '{model}' decodes to {label!r} after {after!r}; "
                                   "single-token ranking needs one token per identifier")
        out.append(ids)
    return out


def _text_after(tokenizer: Any, after: str, labels: Sequence[str]) -> dict[str, list[int]]:
    """{text: [token ids]} for the vocabulary tokens decoded right after `after` (cached on the tokenizer).

    Only tokens whose spelling could decode to a label are decoded: a label of m bytes is
    spelled in at most m + 2 characters (a byte-level piece is m, a SentencePiece or WordPiece
    one adds a marker such as `▁` or `##`) or as one byte-fallback `<0xNN>` (6).
    """
    width = max(6, max((len(x.encode()) for x in labels), default=1) + 2)
    cache: dict[tuple[str, int], dict[str, list[int]]] = tokenizer.__dict__.setdefault("_ragbench_text_after", {})
    if (after, width) not in cache:
        anchor = tokenizer.encode(after, add_special_tokens=False) if after else []
        start = len(tokenizer.decode(anchor, skip_special_tokens=False))
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        ids = [i for i, p in enumerate(pieces) if p is not None and len(p) <= width]
        texts = tokenizer.batch_decode([[*anchor, i] for i in ids], skip_special_tokens=False,
                                       clean_up_tokenization_spaces=False)
        table: dict[str, list[int]] = {}
        for i, text in zip(ids, texts, strict=True):
            table.setdefault(text[start:], []).append(i)
        cache[after, width] = table
    return cache[after, width]


def best_label_logprobs(labels: Sequence[str], ids: Sequence[Sequence[int]],
                        logprob_of: Mapping[int, float]) -> dict[str, float]:
    """{label: the highest log-probability among its token ids} for the labels with any id in `logprob_of`.

    rank_llm (`_evaluate_logits`) keeps, per identifier, the likeliest token that decodes to it.
    """
    out: dict[str, float] = {}
    for label, tids in zip(labels, ids, strict=True):
        seen = [logprob_of[t] for t in tids if t in logprob_of]
        if seen:
            out[label] = float(max(seen))
    return out


def trim_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the first stop string (excluded, as OpenAI/vLLM do); whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def match_top_logprobs(top: list[tuple[str, float]], candidates: tuple[str, ...],
                       ids: list[list[int]] | None) -> dict[str, float]:
    """{candidate: log-probability} from a server's first-token `top_logprobs` entries.

    With `ids` (the request named tokens by id: `token_id:N`), an entry counts for the candidate
    whose ids hold N. Otherwise an entry counts when its token text is exactly the candidate:
    the text of the token itself, so a SentencePiece `▁A`, which servers show as " A", is not
    "A". Either way a candidate seen several times keeps its likeliest token (rank_llm's rule).
    """
    if ids is not None:
        by_id: dict[int, float] = {}
        for token, logprob in top:
            if token.startswith("token_id:"):
                by_id[int(token.removeprefix("token_id:"))] = float(logprob)
        return best_label_logprobs(candidates, ids, by_id)
    wanted = set(candidates)
    out: dict[str, float] = {}
    for token, logprob in top:
        if token in wanted:
            out[token] = max(out.get(token, float("-inf")), float(logprob))
    return out
