"""YAML loading that remembers the line of every key, so errors can say FILE:LINE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ragbench.errors import RagbenchError

Loc = tuple[str | int, ...]


class LocatedYaml:
    """Parsed YAML data plus a map from a path (keys and list indices) to its 1-based line."""

    def __init__(self, data: Any, lines: dict[Loc, int], file: str):
        self.data = data
        self.lines = lines
        self.file = file

    def line(self, loc: Loc) -> int | None:
        """Line of the deepest prefix of `loc` that exists (a missing key points at its parent)."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = (*loc, key_node.value)
            lines[sub] = key_node.start_mark.line + 1
            _walk(value_node, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*loc, i), lines)


def load_yaml(path: str | Path) -> LocatedYaml:
    path = Path(path)
    if not path.is_file():
        raise RagbenchError.at(str(path), "file not found")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RagbenchError.at(str(path), f"invalid YAML: {problem}", line=line) from None
    lines: dict[Loc, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return LocatedYaml(data if data is not None else {}, lines, str(path))


def format_loc(loc: Loc) -> str:
    """('stages', 0, 'k1') -> 'stages[0].k1'"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
