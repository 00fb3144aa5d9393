"""`backend: openai_server`: any OpenAI-compatible endpoint, above all vLLM's server.

The model runs elsewhere (a GPU box, a vLLM pool), so this backend is only an HTTP client:
- requests go out `concurrency` at a time from a thread pool, each to the server with the
  fewest requests in flight (round-robin on ties), so several `base_url`s share the load;
- connection errors, timeouts, HTTP 5xx and 429 are retried with exponential backoff, on
  another server when there is one; a request that still fails stops the whole call with
  one line naming the server. Requests that finished before that were already handed to
  `done`, so they are cached and a re-run asks only for the rest;
- the token budget (`count_tokens`, `render`) needs the served model's tokenizer, which
  the server does not expose: it is loaded locally (`tokenizer:`, else the model name when
  it resolves locally), and without one token counts fall back to vLLM's `/tokenize`.

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
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

import httpx

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

if TYPE_CHECKING:
    from ragbench.cache import Cache
    from ragbench.llm.config import OpenAIServerConfig

log = logging.getLogger(__name__)
#: vLLM's cap on `logprob_token_ids` per request (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS)
_MAX_LOGPROB_TOKEN_IDS = 128
#: seconds to open a connection: a server that accepts none is down, however long requests may take
_CONNECT_TIMEOUT = 10.0


def _one_line(text: object, limit: int = 300) -> str:
    """Server messages and exception texts, squeezed onto one line (errors are one line each)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


class _Retryable(Exception):
    """A failed attempt worth repeating (connection, timeout, 5xx, 429); `reason` says why."""

    def __init__(self, reason: str, unreachable: bool):
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


class ServerPool:
    """The servers and their requests in flight: `acquire` picks the least busy one.

    Ties go round-robin, so a sequential caller (concurrency 1) still alternates servers;
    `avoid` lets a retry prefer a server that has not just failed.
    """

    def __init__(self, urls: list[str]):
        self.urls = urls
        self.in_flight = Counter({u: 0 for u in urls})
        self.served: Counter[str] = Counter()  # requests answered per server: how the load was spread
        self._next = 0
        self._lock = threading.Lock()

    def acquire(self, avoid: Collection[str] = ()) -> str:
        with self._lock:
            n = len(self.urls)
            order = [self.urls[(self._next + k) % n] for k in range(n)]
            pool = [u for u in order if u not in avoid] or order
            url = min(pool, key=lambda u: self.in_flight[u])  # min keeps the first of equals
            self._next = (self.urls.index(url) + 1) % n
            self.in_flight[url] += 1
            return url

    def release(self, url: str, answered: bool) -> None:
        with self._lock:
            self.in_flight[url] -= 1
            self.served[url] += answered


class OpenAIServerLLM(LLM):
    backend = "openai_server"

    def __init__(self, config: OpenAIServerConfig, cache: Cache | None = None):
        super().__init__(cache, config.cache)
        self.config = config
        self.pool = ServerPool([u.rstrip("/") for u in config.base_url])
        api_key = config.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._client = httpx.Client(
            timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, _CONNECT_TIMEOUT)),
            limits=httpx.Limits(max_connections=config.concurrency + len(config.base_url)),
            headers={"Authorization": f"Bearer {api_key}"},
        )
        self._tokenizer: Any = None
        self._tokenizer_loaded = False
        self._tokenizer_lock = threading.Lock()
        self._model_info: dict[str, Any] | None = None

    @property
    def served(self) -> Counter[str]:
        """Requests answered per base_url."""
        return self.pool.served

    def close(self) -> None:
        self._client.close()

    # -- HTTP -----------------------------------------------------------------------------------
    def _attempt(self, url: str, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One try at one server; raises _Retryable for what another try may fix."""
        try:
            resp = self._client.request(method, url + path, json=body)
        except httpx.ConnectTimeout:
            raise _Retryable(f"ConnectTimeout: no connection within {min(self.config.timeout, _CONNECT_TIMEOUT):g} s", unreachable=True) from None
        except httpx.TimeoutException as e:
            raise _Retryable(f"no answer within {self.config.timeout:g} s ({type(e).__name__})", unreachable=False) from None
        except httpx.TransportError as e:
            raise _Retryable(f"{type(e).__name__}: {_one_line(e) or 'connection failed'}", unreachable=True) from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code}: {self._server_message(resp)}", unreachable=False)
        if resp.status_code >= 400:
            raise RagbenchError.at("llm", f"LLM server {url} rejected the request: HTTP {resp.status_code}: {self._server_message(resp)}")
        try:
            return resp.json()
        except ValueError:
            raise RagbenchError.at("llm.base_url", f"{url}{path} did not answer JSON (is it an OpenAI-compatible server?)") from None

    @staticmethod
    def _server_message(resp: httpx.Response) -> str:
        try:
            data = resp.json()
            err = data.get("error", data) if isinstance(data, dict) else data
            msg = err.get("message", err) if isinstance(err, dict) else err
        except ValueError:
            msg = resp.text or resp.reason_phrase
        return _one_line(msg)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              cancel: threading.Event | None = None, root: bool = False) -> dict[str, Any]:
        """Send a request with retries and backoff; RagbenchError when it cannot be answered.

        `root`: the path is under the server root, not under `/v1` (vLLM's `/tokenize`).
        `cancel`: set when another request of the call failed; this one then stops quietly.
        """
        cfg = self.config
        cancel = cancel or threading.Event()
        failed: set[str] = set()
        attempt = 0
        while True:
            if cancel.is_set():
                raise CancelledError()
            url = self.pool.acquire(avoid=failed)
            answered = False
            try:
                result = self._attempt(url.removesuffix("/v1") if root else url, method, path, body)
                answered = True
                return result
            except _Retryable as e:
                failed.add(url)
                if attempt == cfg.retries:
                    raise self._gave_up(url, e) from None
                delay = cfg.backoff * 2**attempt
                attempt += 1
                log.warning("LLM server %s: %s; retry %d/%d in %.2g s", url, e.reason, attempt, cfg.retries, delay)
            finally:
                self.pool.release(url, answered)
            cancel.wait(delay)

    def _gave_up(self, url: str, e: _Retryable) -> RagbenchError:
        retries = f"after {self.config.retries} retries" if self.config.retries else "(no retries)"
        if e.unreachable:
            return RagbenchError.at("llm.base_url", f"cannot reach LLM server {url} {retries} ({e.reason}); start it or fix base_url")
        return RagbenchError.at("llm.base_url", f"LLM server {url} failed {retries}: {e.reason}")

    def _run_all(self, requests: list[Request], one: Callable[[Request, threading.Event], Any], done: Done) -> None:
        """Run `one` over the requests, `concurrency` at a time, handing each result to `done`.

        `done` is called from this thread only (the cache and stats need no locks). On the
        first failure the queued requests are cancelled, those in flight are waited for (and
        kept if they succeed), then the error is raised.
        """
        cancel = threading.Event()
        first: BaseException | None = None
        workers = max(1, min(self.config.concurrency, len(requests)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ragbench-llm") as executor:
            futures: dict[Future[Any], int] = {executor.submit(one, r, cancel): i for i, r in enumerate(requests)}
            try:
                for fut in as_completed(futures):
                    try:
                        result = fut.result()
                    except CancelledError:
                        continue
                    except Exception as e:
                        self.stats.failed += 1
                        if first is None:
                            first = e
                            cancel.set()
                            for f in futures:
                                f.cancel()
                        continue
                    done(futures[fut], result)
            except BaseException:  # Ctrl-C or a failing `done`: stop queueing, let the pool wind down
                cancel.set()
                for f in futures:
                    f.cancel()
                raise
        if first is not None:
            raise first

    # -- requests ---------------------------------------------------------------------------------
    def _sampling(self, r: Request) -> dict[str, Any]:
        s = r.sampling
        body: dict[str, Any] = {"model": self.config.model, "max_tokens": s.max_tokens, "temperature": s.temperature, "top_p": s.top_p}
        if s.seed is not None and self.config.request_seed:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if s.json_schema is not None:  # OpenAI's structured outputs; vLLM's server enforces it by guided decoding
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "verdicts", "schema": json.loads(s.json_schema)}}
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
            messages = [*r.chat, {"role": "assistant", "content": r.prefix}]
            return "/chat/completions", {**body, "messages": messages, "continue_final_message": True, "add_generation_prompt": False}
        return "/completions", {**body, "prompt": self.render(r.chat, r.prefix)}

    def _one_chat(self, r: Request, cancel: threading.Event) -> Generation:
        path, body = self._request_body(r)
        data = self._call("POST", path, body, cancel)
        choice = data["choices"][0]
        text = choice["message"]["content"] if path == "/chat/completions" else choice["text"]
        usage = data.get("usage") or {}
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Generation(text or "", finish, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))

    def _one_logprobs(self, r: Request, cancel: threading.Event) -> dict[str, float]:
        path, body = self._request_body(r)
        body.update(max_tokens=1, temperature=0.0, top_p=1.0)
        body.pop("stop", None)
        ids = self._candidate_ids(r.candidates, r.prefix) if self.config.vllm_extensions and path == "/chat/completions" else None
        if path == "/chat/completions":
            body.update(logprobs=True, top_logprobs=self.config.top_logprobs)
            if ids:  # vLLM then returns exactly these tokens (and the sampled one), named by id
                body["logprob_token_ids"] = sorted({t for group in ids for t in group})
                body["return_tokens_as_token_ids"] = True
        else:  # the legacy completions API takes the count in `logprobs`
            body["logprobs"] = self.config.top_logprobs
        choice = self._call("POST", path, body, cancel)["choices"][0]
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
        self._run_all(requests, self._one_chat, done)

    def _logprobs(self, requests: list[Request], done: Done) -> None:
        self._run_all(requests, self._one_logprobs, done)

    # -- model facts ------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.config.model

    def model_info(self) -> dict[str, Any]:
        """The server's entry for the model in GET /models (vLLM adds `max_model_len`, `root`)."""
        if self._model_info is None:
            listed = self._call("GET", "/models").get("data", [])
            entry = next((m for m in listed if m.get("id") == self.config.model), None)
            if entry is None:
                served = ", ".join(str(m.get("id")) for m in listed) or "nothing"
                raise RagbenchError.at("llm.model", f"the LLM server serves {served}, not '{self.config.model}'")
            self._model_info = entry
        return self._model_info

    def identity(self) -> dict[str, Any]:
        info = self.model_info()
        return {"backend": self.backend, "model": self.config.model, "base_url": self.pool.urls,
                "server_model": {k: info[k] for k in ("id", "root", "owned_by", "max_model_len") if k in info}}

    def cache_identity(self) -> Any:
        # every server of the pool serves the same model: answers are interchangeable
        return [self.backend, self.config.model]

    @property
    def context_length(self) -> int:
        if self.config.max_model_len:
            return self.config.max_model_len
        n = self.model_info().get("max_model_len")
        if not n:
            raise RagbenchError.at("llm.max_model_len", f"the LLM server does not report the context length of '{self.config.model}'; set max_model_len")
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
                    self._tokenizer = _load_tokenizer(name, self.cache.root if self.cache else None)
                self._tokenizer_loaded = True
        return self._tokenizer

    def _no_tokenizer(self, what: str) -> RagbenchError:
        return RagbenchError.at("llm.tokenizer", f"{what} needs the model's tokenizer locally; set tokenizer to a model name or folder")

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False).input_ids)
        if not self.config.vllm_extensions:
            raise self._no_tokenizer("counting tokens")
        body = {"model": self.config.model, "prompt": text, "add_special_tokens": False}
        return int(self._call("POST", "/tokenize", body, root=True)["count"])

    def render(self, chat: Chat, prefix: str = "") -> str:
        text = plain_text(chat)
        if text is not None:
            return text + prefix
        tok = self.tokenizer
        if tok is None:
            raise self._no_tokenizer("rendering prompts")
        if prefix:
            return tok.apply_chat_template([*chat, {"role": "assistant", "content": prefix}], tokenize=False, continue_final_message=True)
        return tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)

    def prompt_tokens(self, chat: Chat, prefix: str = "") -> int:
        if self.tokenizer is not None or not self.config.vllm_extensions:
            return super().prompt_tokens(chat, prefix)
        messages = [*chat, {"role": "assistant", "content": prefix}] if prefix else chat
        body = {"model": self.config.model, "messages": messages, "add_generation_prompt": not prefix, "continue_final_message": bool(prefix)}
        return int(self._call("POST", "/tokenize", body, root=True)["count"])


def _load_tokenizer(name: str, cache_root: Any) -> Any:
    """A tokenizer by bundled name, folder or Hub id (a GGUF's comes from its converted folder)."""
    from transformers import AutoTokenizer

    from ragbench.llm.loading import converted_model_dir
    from ragbench.models import resolve

    resolved = resolve(name)
    source = str(converted_model_dir(name, cache_root)) if resolved.gguf_file else resolved.path
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise RagbenchError.at("llm.tokenizer", f"could not load tokenizer '{name}' from {source}: {_one_line(e)}") from None
