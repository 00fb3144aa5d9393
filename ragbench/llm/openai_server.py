"""`backend: openai_server`: any OpenAI-compatible endpoint, above all vLLM's server.

The model runs elsewhere (a GPU box, a vLLM pool), so this backend maps requests onto the
OpenAI protocol and leaves the HTTP side (servers, concurrency, retries, timeouts, a killed
server) to `http_pool`. A server is contacted only when a request must be sent or a value
asked of it (the context length without `max_model_len`, token counts without a local
tokenizer), so a rerun answered from the request cache runs with no server up. The token
budget (`count_tokens`, `render`) needs the served model's tokenizer, which the server does not
expose: it is loaded locally (`tokenizer:`, else the model name when it resolves locally), and
without one token counts fall back to vLLM's `/tokenize`.

With `vllm_extensions`, an assistant `prefix` is sent as the last message with vLLM's
`continue_final_message`, so the server applies the chat template; other servers get the
prompt rendered locally on `/completions`. Log-probabilities are read from the first token's
`top_logprobs`, matched to candidates by token text; with vLLM and a local tokenizer the
request also names the candidates' token ids (`logprob_token_ids`, every token whose text after
the prefix is a candidate, see `label_token_ids`) and gets tokens back by id, so every
candidate comes back, not only those in the top-n.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from ragbench.errors import RagbenchError
from ragbench.llm.base import (
    LLM,
    Chat,
    Done,
    Generation,
    Request,
    label_token_ids,
    match_top_logprobs,
    plain_text,
)
from ragbench.llm.chat import render_chat, template_flags, template_messages
from ragbench.llm.http_pool import PooledClient
from ragbench.llm.loading import load_tokenizer

if TYPE_CHECKING:
    from ragbench.cache import Cache
    from ragbench.llm.config import OpenAIServerConfig

#: vLLM's cap on `logprob_token_ids` per request (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS)
_MAX_LOGPROB_TOKEN_IDS = 128
#: the lock file's `server_model` when no server was asked anything (every request came from the cache)
UNREACHED = "unreached"


class OpenAIServerLLM(LLM):
    backend = "openai_server"

    def __init__(self, config: OpenAIServerConfig, cache: Cache | None = None):
        super().__init__(cache, config.cache)
        self.config = config
        given = config.api_key.get_secret_value() if config.api_key is not None else None
        api_key = given or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.http = PooledClient(config.base_url, api_key, timeout=config.timeout, concurrency=config.concurrency,
                                 retries=config.retries, backoff=config.backoff)
        self._tokenizer: Any = None
        self._tokenizer_loaded = False
        self._tokenizer_lock = threading.Lock()
        self._model_info: dict[str, Any] | None = None

    @property
    def served(self) -> Counter[str]:
        """Requests answered per base_url."""
        return self.http.pool.served

    def close(self) -> None:
        self.http.close()

    # -- requests ---------------------------------------------------------------------------------
    def _sampling(self, r: Request) -> dict[str, Any]:
        s = r.sampling
        body: dict[str, Any] = {"model": self.config.model, "max_tokens": s.max_tokens, "temperature": s.temperature,
                                "top_p": s.top_p}
        if s.seed is not None and self.config.request_seed:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if s.json_schema is not None:  # OpenAI's structured outputs; vLLM's server enforces it by guided decoding
            schema = {"name": "verdicts", "schema": json.loads(s.json_schema)}
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        return body

    def _request_body(self, r: Request) -> tuple[str, dict[str, Any]]:
        """(path, body) for a request: the chat endpoint, or a locally rendered completion."""
        body = self._sampling(r)
        text = plain_text(r.chat)
        if text is not None:  # a plain prompt: the completions endpoint, which adds BOS itself
            return "/completions", {**body, "prompt": text + r.prefix}
        if not r.prefix:
            return "/chat/completions", {**body, "messages": r.chat}
        if self.config.vllm_extensions:
            messages = template_messages(r.chat, r.prefix)
            return "/chat/completions", {**body, "messages": messages, **template_flags(r.prefix)}
        return "/completions", {**body, "prompt": self.render(r.chat, r.prefix)}

    def _one_chat(self, r: Request, cancel: threading.Event) -> Generation:
        path, body = self._request_body(r)
        data = self.http.call("POST", path, body, cancel)
        choice = data["choices"][0]
        text = choice["message"]["content"] if path == "/chat/completions" else choice["text"]
        usage = data.get("usage") or {}
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        prompt_tokens, completion_tokens = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        return Generation(text or "", finish, prompt_tokens, completion_tokens)

    def _one_logprobs(self, r: Request, cancel: threading.Event) -> dict[str, float]:
        path, body = self._request_body(r)
        body.update(max_tokens=1, temperature=0.0, top_p=1.0)
        body.pop("stop", None)
        by_id = self.config.vllm_extensions and path == "/chat/completions"
        ids = self._candidate_ids(r.candidates, r.prefix) if by_id else None
        if path == "/chat/completions":
            body.update(logprobs=True, top_logprobs=self.config.top_logprobs)
            if ids:  # vLLM then returns exactly these tokens (and the sampled one), named by id
                body["logprob_token_ids"] = sorted({t for group in ids for t in group})
                body["return_tokens_as_token_ids"] = True
        else:  # the legacy completions API takes the count in `logprobs`
            body["logprobs"] = self.config.top_logprobs
        choice = self.http.call("POST", path, body, cancel)["choices"][0]
        lp = choice.get("logprobs") or {}
        if path == "/chat/completions":
            top = [(t["token"], t["logprob"]) for t in (lp.get("content") or [{}])[0].get("top_logprobs", [])]
        else:
            top = list(((lp.get("top_logprobs") or [{}])[0] or {}).items())
        return match_top_logprobs(top, r.candidates, ids)

    def _candidate_ids(self, candidates: tuple[str, ...], prefix: str) -> list[list[int]] | None:
        """Per candidate, the token ids whose text after `prefix` is the candidate (local tokenizer), else None.

        None (string matching instead) without a local tokenizer, when a candidate has no such
        token, or when the ids exceed vLLM's cap on `logprob_token_ids`.
        """
        if self.tokenizer is None or not candidates:
            return None
        try:
            ids = label_token_ids(self.tokenizer, candidates, self.config.model, after=prefix or "\n")
        except RagbenchError:
            return None
        return ids if len({t for group in ids for t in group}) <= _MAX_LOGPROB_TOKEN_IDS else None

    def _chat(self, requests: list[Request], done: Done) -> None:
        self.http.run_all(requests, self._one_chat, done, self._failed)

    def _logprobs(self, requests: list[Request], done: Done) -> None:
        self.http.run_all(requests, self._one_logprobs, done, self._failed)

    def _failed(self) -> None:
        self.stats.add(failed=1)  # from any calling thread

    # -- model facts ------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.config.model

    def model_info(self) -> dict[str, Any]:
        """The server's entry for the model in GET /models (vLLM adds `max_model_len`, `root`)."""
        if self._model_info is None:
            listed = self.http.call("GET", "/models").get("data", [])
            entry = next((m for m in listed if m.get("id") == self.config.model), None)
            if entry is None:
                served = ", ".join(str(m.get("id")) for m in listed) or "nothing"
                raise RagbenchError.at("llm.model", f"the LLM server serves {served}, not '{self.config.model}'")
            self._model_info = entry
        return self._model_info

    def identity(self) -> dict[str, Any]:
        """The server's facts about the model when a server was used; `unreached` when none was.

        A rerun answered wholly from the request cache needs no server (it may be gone), so the
        facts are asked only of a server that answered a request in this process.
        """
        info = self._model_info
        if info is None and sum(self.served.values()):
            try:
                info = self.model_info()
            except RagbenchError:  # every server went away after the last request: the work is done
                info = None
        facts: Any = UNREACHED if info is None else {k: info[k] for k in ("id", "root", "owned_by", "max_model_len")
                                                      if k in info}
        return {"backend": self.backend, "model": self.config.model, "base_url": self.http.pool.urls,
                "server_model": facts}

    def cache_identity(self) -> Any:
        # every server of the pool serves the same model: answers are interchangeable
        return [self.backend, self.config.model]

    @property
    def context_length(self) -> int:
        if self.config.max_model_len:
            return self.config.max_model_len
        n = self.model_info().get("max_model_len")
        if not n:
            raise RagbenchError.at("llm.max_model_len", "the LLM server does not report the context length of "
                                   f"'{self.config.model}'; set max_model_len")
        return int(n)

    @property
    def tokenizer(self) -> Any:
        """The local tokenizer (`tokenizer:`, else the model when it resolves locally), or None."""
        with self._tokenizer_lock:  # worker threads may ask at once; load it once
            if not self._tokenizer_loaded:
                from ragbench.models import resolve

                name = self.config.tokenizer
                if name is None and resolve(self.config.model).source != "hub":
                    name = self.config.model
                if name is not None:
                    cache_root = self.cache.root if self.cache else None
                    self._tokenizer = load_tokenizer(name, cache_root, where="llm.tokenizer")[0]
                self._tokenizer_loaded = True
        return self._tokenizer

    def _no_tokenizer(self, what: str) -> RagbenchError:
        return RagbenchError.at("llm.tokenizer", f"{what} needs the model's tokenizer locally; "
                                "set tokenizer to a model name or folder")

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False).input_ids)
        if not self.config.vllm_extensions:
            raise self._no_tokenizer("counting tokens")
        body = {"model": self.config.model, "prompt": text, "add_special_tokens": False}
        return int(self.http.call("POST", "/tokenize", body, root=True)["count"])

    def render(self, chat: Chat, prefix: str = "") -> str:
        """The prompt text; a plain prompt goes as it is (the server adds BOS as its tokenizer does)."""
        if plain_text(chat) is None and self.tokenizer is None:
            raise self._no_tokenizer("rendering prompts")
        return render_chat(self.tokenizer, chat, prefix, model=self.config.model)

    def prompt_tokens(self, chat: Chat, prefix: str = "") -> int:
        if self.tokenizer is not None or not self.config.vllm_extensions:
            return super().prompt_tokens(chat, prefix)
        body = {"model": self.config.model, "messages": template_messages(chat, prefix), **template_flags(prefix)}
        return int(self.http.call("POST", "/tokenize", body, root=True)["count"])

