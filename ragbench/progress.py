"""Progress that suits where output goes: rich bars on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

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


class Reporter:
    """Counts work done in a named step; shows items/s and ETA."""

    def __init__(self, interactive: bool | None = None, quiet: bool = False):
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.quiet = quiet

    def log(self, message: str) -> None:
        if not self.quiet:
            if self.interactive:
                console.print(message, highlight=False)
            else:
                print(f"[ragbench] {message}", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        if self.interactive:
            console.print(f"[yellow]warning:[/] {message}", highlight=False)
        else:
            print(f"[ragbench] warning: {message}", file=sys.stderr, flush=True)

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
        print(f"[ragbench] {description}: 0/{total} {unit}", file=sys.stderr, flush=True)

        def advance_plain(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.perf_counter()
            if now - last >= 5 or done >= total:
                last = now
                rate = done / max(now - start, 1e-9)
                eta = (total - done) / rate if rate > 0 else 0
                print(f"[ragbench] {description}: {done}/{total} {unit} ({rate:,.1f} {unit}/s, ETA {eta:.0f}s)",
                      file=sys.stderr, flush=True)

        yield _Advance(advance_plain)


class _Advance:
    def __init__(self, fn):
        self._fn = fn

    def __call__(self, n: int = 1) -> None:
        self._fn(n)
