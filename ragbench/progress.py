"""Progress that suits where output goes: rich bars on a terminal, plain log lines elsewhere.

Two kinds of step. `task` counts items of one kind (documents indexed, rows encoded). `stage`
follows a pipeline stage over its queries and, for LLM stages, the requests under them: a
query is done only when its whole batch is, so on its own a 40-query judge would sit at 0/40
for its whole run. The LLM layer reports every request as it finishes (`Reporter.requests`),
which moves the line and gives requests/s; the ETA comes from the requests a finished query
took (see `StageProgress.remaining`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
#: seconds between plain (non-terminal) progress lines
PLAIN_EVERY = 5.0


class Stopped(Exception):
    """Raised in a batch's thread at its next LLM request once the stage is stopping (another batch failed, or
    Ctrl-C): requests already finished are cached, the rest of the batch is not asked."""


class Reporter:
    """Counts work done in a named step; shows items/s and ETA."""

    def __init__(self, interactive: bool | None = None, quiet: bool = False):
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.quiet = quiet
        self._stages: list[StageProgress] = []  # open stage steps, innermost last

    def log(self, message: str) -> None:
        if not self.quiet:
            if self.interactive:
                console.print(message, highlight=False)
            else:
                _plain(message)

    def warn(self, message: str) -> None:
        if self.interactive:
            console.print(f"[yellow]warning:[/] {message}", highlight=False)
        else:
            _plain(f"warning: {message}")

    @contextmanager
    def task(self, description: str, total: int, unit: str = "items") -> Iterator[_Advance]:
        if self.quiet:
            yield _Advance(lambda n: None)
            return
        if self.interactive:
            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                       TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
            with Progress(*columns, console=console, transient=False) as bar:
                tid = bar.add_task(description, total=total, rate="")
                start = time.perf_counter()

                def advance(n: int) -> None:
                    bar.advance(tid, n)
                    done = bar.tasks[0].completed
                    elapsed = max(time.perf_counter() - start, 1e-9)
                    bar.update(tid, rate=f"{done / elapsed:,.1f} {unit}/s")

                yield _Advance(advance)
            return
        start = last = time.perf_counter()
        done = 0
        lock = threading.Lock()
        _plain(f"{description}: 0/{total} {unit}")

        def advance_plain(n: int) -> None:
            nonlocal done, last
            with lock:
                done += n
                now = time.perf_counter()
                if now - last < PLAIN_EVERY and done < total:
                    return
                last = now
                rate = done / max(now - start, 1e-9)
                eta = (total - done) / rate if rate > 0 else 0
                _plain(f"{description}: {done}/{total} {unit} ({rate:,.1f} {unit}/s, ETA {eta:.0f}s)")

        yield _Advance(advance_plain)

    @contextmanager
    def stage(self, description: str, total: int) -> Iterator[StageProgress]:
        """A stage over `total` queries, its batches (`StageProgress.batch`) and the LLM requests they make."""
        progress = StageProgress(total)
        self._stages.append(progress)
        try:
            if self.quiet:
                yield progress
            elif self.interactive:
                with _StageBar(description, progress):
                    yield progress
            else:
                with _StageLines(description, progress):
                    yield progress
        finally:
            self._stages.remove(progress)

    def requests(self, *, submitted: int = 0, asked: int = 0, cached: int = 0) -> None:
        """The LLM layer's report: requests handed to it, and finished (asked of the backend, or from its cache).

        Goes to the innermost open stage, from whatever thread the request finished in; outside one, nothing.
        Raises Stopped when that stage is stopping.
        """
        if self._stages:
            self._stages[-1].requests(submitted=submitted, asked=asked, cached=cached)


def _plain(message: str) -> None:
    print(f"[ragbench] {message}", file=sys.stderr, flush=True)


class _Advance:
    def __init__(self, fn: Callable[[int], None]):
        self._fn = fn

    def __call__(self, n: int = 1) -> None:
        self._fn(n)


@dataclass
class _Batch:
    queries: int
    submitted: int = 0  # requests handed to the LLM layer so far (a listwise batch hands them over round by round)
    done: int = 0  # of those, finished


class StageProgress:
    """Queries and LLM requests of one stage; thread-safe (batches run in threads, requests finish in them).

    Requests are attributed to the batch whose thread made them, so a finished batch says exactly
    how many requests its queries took.
    """

    def __init__(self, total: int):
        self.total = total
        self.queries = 0
        self.asked = 0
        self.cached = 0
        self.start = time.perf_counter()
        self._finished_requests = 0  # requests of finished batches
        self._open: dict[int, _Batch] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listeners: list[Callable[[], None]] = []
        self._first: tuple[float, int] | None = None  # (when, how many) the first requests finished

    @contextmanager
    def batch(self, queries: int) -> Iterator[None]:
        """A batch being processed in this thread: its queries count as done when it ends without error."""
        b = _Batch(queries)
        with self._lock:
            self._open[id(b)] = b
        self._local.batch = b
        ok = False
        try:
            yield
            ok = True
        finally:
            self._local.batch = None
            with self._lock:
                del self._open[id(b)]
                if ok:
                    self.queries += queries
                    self._finished_requests += b.done
        if ok:
            self._changed()

    def requests(self, *, submitted: int = 0, asked: int = 0, cached: int = 0) -> None:
        if self._stop.is_set():
            raise Stopped()
        b: _Batch | None = getattr(self._local, "batch", None)
        with self._lock:
            self.asked += asked
            self.cached += cached
            if self._first is None and (asked or cached):
                self._first = (time.perf_counter(), self.asked or self.cached)
            if b is not None:
                b.submitted += submitted
                b.done += asked + cached
        if asked or cached:
            self._changed()

    def stop(self) -> None:
        """Make every batch still running raise Stopped at its next request."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    # -- what the display shows -------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)

    @property
    def rate(self) -> float:
        """Requests asked per second (cached ones cost nothing, so they would flatter it; all of them when none
        was asked), counted from when the first finished: the wait before it (a model loading, a pool filling)
        says nothing of the pace after. Over the whole time until a second has passed since."""
        n = self.asked or self.cached
        now = time.perf_counter()
        if self._first is not None and now - self._first[0] >= 1.0 and n > self._first[1]:
            return (n - self._first[1]) / (now - self._first[0])
        return n / self.elapsed

    def remaining(self) -> float | None:
        """Requests still to finish: the requests per query of finished batches (before any, what open batches
        have handed over so far, a lower bound) times the queries left, less what open batches finished."""
        with self._lock:
            opened = list(self._open.values())
            queries, finished = self.queries, self._finished_requests
        if queries:
            per_query = finished / queries
        elif sum(b.queries for b in opened) and sum(b.submitted for b in opened):
            per_query = sum(b.submitted for b in opened) / sum(b.queries for b in opened)
        else:
            return None
        left = self.total - queries - sum(b.queries for b in opened)
        in_open = sum(max(b.submitted, per_query * b.queries) - b.done for b in opened)
        return max(0.0, in_open + per_query * left)

    def eta(self) -> float | None:
        remaining, rate = self.remaining(), self.rate
        if remaining is None or rate <= 0:
            return None
        return remaining / rate

    def requests_text(self) -> str:
        """'212 requests (12 cached), 1.4 req/s'; empty for a stage that asked no LLM."""
        n = self.asked + self.cached
        if not n:
            return ""
        cached = f" ({self.cached} cached)" if self.cached else ""
        return f"{n} request{'s' if n != 1 else ''}{cached}, {self.rate:,.1f} req/s"

    def line(self) -> str:
        """Queries, requests, rate and ETA in one line."""
        parts = [f"{self.queries}/{self.total} queries"]
        if self.requests_text():
            parts.append(self.requests_text())
        eta = self.eta()
        if self.queries < self.total:
            parts.append(f"ETA {duration(eta)}" if eta is not None else "ETA ?")
        return ", ".join(parts)


def duration(seconds: float | None) -> str:
    """12s, 3m05s, 2h07m."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _StageLines:
    """Plain lines (logs, CI): one at the start, then at most one every PLAIN_EVERY seconds while anything moves
    (a change that came too soon is shown by a timer once the interval is up), one at the end."""

    def __init__(self, description: str, progress: StageProgress):
        self.description, self.progress = description, progress
        self.last = time.perf_counter()
        self.dirty = False  # a change not shown yet
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.timer = threading.Thread(target=self._tick, daemon=True, name="ragbench-progress")
        progress.on_change(self.update)

    def __enter__(self) -> _StageLines:
        _plain(f"{self.description}: 0/{self.progress.total} queries")
        self.timer.start()
        return self

    def update(self) -> None:
        with self.lock:
            self.dirty = True
        self._show()

    def _show(self) -> None:
        with self.lock:
            now = time.perf_counter()
            if not self.dirty or now - self.last < PLAIN_EVERY:
                return
            self.last, self.dirty = now, False
        _plain(f"{self.description}: {self.progress.line()}")

    def _tick(self) -> None:
        while not self.closed.wait(max(PLAIN_EVERY, 0.5)):
            self._show()

    def __exit__(self, *exc: object) -> None:
        self.closed.set()
        self.timer.join()
        if self.progress.queries:
            _plain(f"{self.description}: {self.progress.line()} in {duration(self.progress.elapsed)}")


class _StageBar:
    """A rich bar over the queries, with the requests, their rate and the ETA beside it."""

    def __init__(self, description: str, progress: StageProgress):
        self.progress = progress
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("queries"),
                   TextColumn("{task.fields[requests]}"), TimeElapsedColumn(), TextColumn("{task.fields[eta]}")]
        self.bar = Progress(*columns, console=console, transient=False)
        self.tid = self.bar.add_task(description, total=progress.total, requests="", eta="")
        progress.on_change(self.update)

    def __enter__(self) -> _StageBar:
        self.bar.start()
        return self

    def update(self) -> None:
        p = self.progress
        eta = p.eta()
        self.bar.update(self.tid, completed=p.queries, requests=p.requests_text(),
                        eta=f"ETA {duration(eta)}" if p.queries < p.total else "")

    def __exit__(self, *exc: object) -> None:
        self.update()
        self.bar.stop()
