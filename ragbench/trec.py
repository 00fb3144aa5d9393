"""TREC run files: `qid Q0 docid rank score tag`, the format every IR tool reads."""

from __future__ import annotations

import json
from collections.abc import Iterable

from ragbench.types import Ranking


def format_run(rankings: Iterable[Ranking], tag: str = "ragbench") -> str:
    lines = [f"{r.qid} Q0 {doc} {rank} {score!r} {tag}"  # repr: scores round-trip exactly
             for r in rankings for rank, (doc, score) in enumerate(zip(r.docids, r.scores, strict=True), start=1)]
    return "\n".join(lines) + ("\n" if lines else "")


def dump_rankings(rankings: Iterable[Ranking]) -> str:
    """The cache's form: one JSON line per query (parsed far faster than TREC text)."""
    return "".join(json.dumps([r.qid, r.docids, r.scores]) + "\n" for r in rankings)


def load_rankings(text: str) -> dict[str, Ranking]:
    out = {}
    for line in text.splitlines():
        qid, docids, scores = json.loads(line)
        out[qid] = Ranking(qid, docids, scores)
    return out


def parse_run(text: str, source: str = "run") -> dict[str, Ranking]:
    """Rankings in file order. Raises ValueError naming the line on a malformed one."""
    out: dict[str, Ranking] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise ValueError(f"{source}:{n}: expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}")
        qid, _, doc, _, score, _ = parts
        r = out.setdefault(qid, Ranking(qid, [], []))
        r.docids.append(doc)
        r.scores.append(float(score))
    return out
