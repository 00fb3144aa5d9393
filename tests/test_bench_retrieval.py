"""bench/retrieval.py end to end on a small synthetic set: every engine's row, and the ratio line last."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a process per engine (JVMs among them), ~1 min: `make test-all`
def test_bench_prints_each_engine_and_the_bars_line(tmp_path: Path) -> None:
    pytest.importorskip("seismic", reason="pyseismic-lsr is not installed (make test installs it)")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "retrieval.py"), "--data", "synthetic:3000",
                           "--queries", "60"], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    rows = {tuple(line.split()[:2]): line for line in lines if line.startswith(("bm25 ", "sparse "))}
    assert set(rows) >= {("bm25", e) for e in ("bm25s", "rank_bm25", "lucene")} | \
        {("sparse", e) for e in ("scipy", "lucene", "seismic")}
    assert not any("failed" in row for row in rows.values()), rows
    # each BM25 row measured the stage against the engine's raw call; bm25s is its own reference
    assert re.search(r"\s1\.000\s*$", rows["bm25", "bm25s"])
    last = re.fullmatch(r"default/fastest bm25: (\d+\.\d\d); seismic/exact: (\d+\.\d); seismic recall@10: (\d\.\d\d)",
                        lines[-1])
    assert last, lines[-1]
    assert 0 < float(last[1]) <= 1 and float(last[3]) >= 0.9
    # bm25s with Lucene's rules and lengths returns the default's top 10 up to ties, query for query
    same = next(line for line in lines if "the same as bm25s's up to ties" in line)
    n, total = map(int, re.search(r"on (\d+) of (\d+) queries", same).groups())
    assert n == total == 60, same
