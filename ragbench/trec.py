"""TREC run files: `qid Q0 docid rank score tag`, the format every IR tool reads."""

from __future__ import annotations

from collections.abc import Iterable

from ragbench.types import Ranking


def format_run(rankings: Iterable[Ranking], tag: str = "ragbench") -> str:
    lines = []
    for r in rankings:
        for rank, (doc, score) in enumerate(zip(r.docids, r.scores, strict=True), start=1):
            lines.append(f"{r.qid} Q0 {doc} {rank} {score!r} {tag}")  # repr: scores round-trip exactly
    return "\n".join(lines) + ("\n" if lines else "")


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
