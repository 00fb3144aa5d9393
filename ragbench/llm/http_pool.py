"""The HTTP side of `backend: openai_server`: servers, connections, concurrency, retries, timeouts.

Nothing here knows the OpenAI protocol (that is `openai_server`): it sends JSON to a pool of
servers and hands back JSON.
- requests go out `concurrency` at a time from a thread pool, each to the server with the
  fewest requests in flight (round-robin on ties), so several base URLs share the load;
- a failed attempt (connection error, timeout, HTTP 5xx or 429) moves at once to a server the
  request has not tried yet, without spending a retry; once every server has been tried,
  retries follow with exponential backoff. A request that still fails stops the whole call
  with one line naming the server. Requests that finished before that were already handed to
  `done` (so the caller could cache them), and those in flight are waited for: a killed
  server costs only the unfinished requests;
- a server that cannot be reached is marked down (one warning line, however many requests
  saw it fail) and gets no requests while another server is up; every `REVIVE_AFTER` seconds
  one request probes it, and a server that answers again is back in the pool. A pool of
  several servers thus finishes a run on the survivors when one dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed, wait
from typing import Any, TypeVar

import httpx

from ragbench.errors import RagbenchError

log = logging.getLogger(__name__)
#: seconds to open a connection: a server that accepts none is down, however long requests may take
CONNECT_TIMEOUT = 10.0
#: seconds a server found unreachable gets no requests before one request probes it again
REVIVE_AFTER = 30.0
T = TypeVar("T")


def one_line(text: object, limit: int = 300) -> str:
    """Server messages and exception texts, squeezed onto one line (errors are one line each)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


class Retryable(Exception):
    """A failed attempt worth repeating (connection, timeout, 5xx, 429); `reason` says why."""

    def __init__(self, reason: str, unreachable: bool):
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


class ServerPool:
    """The servers, their requests in flight and which are down: `acquire` picks the least busy one up.

    Ties go round-robin, so a sequential caller (concurrency 1) still alternates servers;
    `avoid` lets a retry prefer a server that has not just failed.
    """

    def __init__(self, urls: list[str], revive_after: float = REVIVE_AFTER):
        self.urls = urls
        self.revive_after = revive_after
        self.in_flight = Counter({u: 0 for u in urls})
        self.served: Counter[str] = Counter()  # requests answered per server: how the load was spread
        self.down: dict[str, float] = {}  # server -> when it was last found unreachable (time.monotonic)
        self._next = 0
        self._lock = threading.Lock()

    def _up(self, url: str, now: float) -> bool:
        since = self.down.get(url)
        return since is None or now - since >= self.revive_after

    def acquire(self, avoid: Collection[str] = ()) -> str:
        with self._lock:
            n, now = len(self.urls), time.monotonic()
            order = [self.urls[(self._next + k) % n] for k in range(n)]
            up = [u for u in order if self._up(u, now)]
            fresh = [u for u in order if u not in avoid]
            pool = [u for u in up if u not in avoid] or fresh or up or order
            url = min(pool, key=lambda u: self.in_flight[u])  # min keeps the first of equals
            if url in self.down and self._up(url, now):
                self.down[url] = now  # this request probes it; the others keep avoiding it meanwhile
            self._next = (self.urls.index(url) + 1) % n
            self.in_flight[url] += 1
            return url

    def release(self, url: str, answered: bool) -> None:
        with self._lock:
            self.in_flight[url] -= 1
            self.served[url] += answered
            if answered and self.down.pop(url, None) is not None and len(self.urls) > 1:
                log.warning("LLM server %s answers again: back in the pool", url)

    def mark_down(self, url: str) -> bool:
        """Note that `url` cannot be reached; True the first time (since it last answered), to warn once."""
        with self._lock:
            first = url not in self.down
            self.down[url] = time.monotonic()
            return first

    def other_up(self, tried: Collection[str]) -> bool:
        """Whether a server this request has not tried is up (a failover costs no retry then)."""
        with self._lock:
            now = time.monotonic()
            return any(u not in tried and self._up(u, now) for u in self.urls)


class PooledClient:
    """JSON requests to a pool of servers, with retries, backoff and a bound on requests in flight."""

    def __init__(self, urls: Sequence[str], api_key: str, *, timeout: float, concurrency: int, retries: int,
                 backoff: float):
        self.pool = ServerPool([u.rstrip("/") for u in urls])
        self.timeout, self.concurrency, self.retries, self.backoff = timeout, concurrency, retries, backoff
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            limits=httpx.Limits(max_connections=concurrency + len(urls)),
            headers={"Authorization": f"Bearer {api_key}"},
        )
        self._executor: ThreadPoolExecutor | None = None  # shared by every call: `concurrency` bounds them all
        self._executor_lock = threading.Lock()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def executor(self) -> ThreadPoolExecutor:
        """The workers that send requests, created at the first call (building a client contacts nothing)."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="ragbench-llm")
            return self._executor

    def _attempt(self, url: str, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One try at one server; raises Retryable for what another try may fix."""
        try:
            resp = self._client.request(method, url + path, json=body)
        except httpx.ConnectTimeout:
            reason = f"ConnectTimeout: no connection within {min(self.timeout, CONNECT_TIMEOUT):g} s"
            raise Retryable(reason, unreachable=True) from None
        except httpx.TimeoutException as e:
            raise Retryable(f"no answer within {self.timeout:g} s ({type(e).__name__})", unreachable=False) from None
        except httpx.TransportError as e:
            raise Retryable(f"{type(e).__name__}: {one_line(e) or 'connection failed'}", unreachable=True) from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise Retryable(f"HTTP {resp.status_code}: {self._server_message(resp)}", unreachable=False)
        if resp.status_code >= 400:
            raise RagbenchError.at("llm", f"LLM server {url} rejected the request: "
                                   f"HTTP {resp.status_code}: {self._server_message(resp)}")
        try:
            return resp.json()
        except ValueError:
            raise RagbenchError.at("llm.base_url", f"{url}{path} did not answer JSON "
                                   "(is it an OpenAI-compatible server?)") from None

    @staticmethod
    def _server_message(resp: httpx.Response) -> str:
        try:
            data = resp.json()
            err = data.get("error", data) if isinstance(data, dict) else data
            msg = err.get("message", err) if isinstance(err, dict) else err
        except ValueError:
            msg = resp.text or resp.reason_phrase
        return one_line(msg)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             cancel: threading.Event | None = None, root: bool = False) -> dict[str, Any]:
        """Send a request with retries and backoff; RagbenchError when it cannot be answered.

        `root`: the path is under the server root, not under `/v1` (vLLM's `/tokenize`).
        `cancel`: set when another request of the call failed; this one then stops quietly.
        """
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
            except Retryable as e:
                failed.add(url)
                several = len(self.pool.urls) > 1
                if e.unreachable and self.pool.mark_down(url) and several:
                    log.warning("LLM server %s is down (%s): carrying on with the other servers, probing it every "
                                "%g s", url, e.reason, self.pool.revive_after)
                if self.pool.other_up(failed):  # fail over at once: another server has not had this request yet
                    if not e.unreachable:
                        log.warning("LLM server %s: %s; trying another server", url, e.reason)
                    continue
                if attempt == self.retries:
                    raise self._gave_up(url, e) from None
                delay = self.backoff * 2**attempt
                attempt += 1
                log.warning("LLM server %s: %s; retry %d/%d in %.2g s", url, e.reason, attempt, self.retries, delay)
            finally:
                self.pool.release(url, answered)
            cancel.wait(delay)

    def _gave_up(self, url: str, e: Retryable) -> RagbenchError:
        retries = f"after {self.retries} retries" if self.retries else "(no retries)"
        if e.unreachable:
            return RagbenchError.at("llm.base_url", f"cannot reach LLM server {url} {retries} ({e.reason}); "
                                    "start it or fix base_url")
        return RagbenchError.at("llm.base_url", f"LLM server {url} failed {retries}: {e.reason}")

    def run_all(self, items: Sequence[T], one: Callable[[T, threading.Event], Any], done: Callable[[int, Any], None],
                failed: Callable[[], None]) -> None:
        """Run `one` over the items, handing each result to `done(i, result)`.

        Requests of every call in flight (a stage's batches, from several threads) share one queue
        and `concurrency` workers, first come first served. `done` is called from the calling
        thread only; `failed` once per request that failed. On the first failure the call's queued
        requests are cancelled, those in flight are waited for (and kept if they succeed), then the
        error is raised.
        """
        cancel = threading.Event()
        first: BaseException | None = None
        executor = self.executor()
        futures: dict[Future[Any], int] = {executor.submit(one, r, cancel): i for i, r in enumerate(items)}
        try:
            for fut in as_completed(futures):
                try:
                    result = fut.result()
                except CancelledError:
                    continue
                except Exception as e:
                    failed()
                    if first is None:
                        first = e
                        cancel.set()
                        for f in futures:
                            f.cancel()
                    continue
                done(futures[fut], result)
        except BaseException:  # Ctrl-C or a failing `done`: stop queueing, let this call's requests wind down
            cancel.set()
            for f in futures:
                f.cancel()
            wait(futures)
            raise
        if first is not None:
            raise first
