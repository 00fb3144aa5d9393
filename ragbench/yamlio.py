"""YAML loading that remembers the line of every key, so errors can say FILE:LINE, and pydantic's
validation errors mapped onto those lines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, PlainSerializer, SecretStr, ValidationError

from ragbench.errors import Problem, RagbenchError

Loc = tuple[str | int, ...]


#: how a secret is written anywhere outside the process (cache keys and metadata, lock files, logs)
REDACTED = "***"
#: An option that is a secret (an API key): usable in-process with `.get_secret_value()`, serialised as ***, so
#: it never reaches a cache key, the cache's metadata or a run folder (and a changed key reuses every result).
Secret = Annotated[SecretStr, PlainSerializer(lambda _: REDACTED, return_type=str)]
_SECRET_IN_TEXT = re.compile(r"""((?:api_key|api-key|apikey)["']?\s*[:=]\s*)("[^"]*"|'[^']*'|[^\s,}'"]+)""",
                             re.IGNORECASE)


def redact(text: str) -> str:
    """A command line or message with the values of `api_key: ...` / `api_key=...` replaced by ***."""
    def hide(m: re.Match[str]) -> str:
        quote = m.group(2)[0] if m.group(2)[0] in "'\"" else ""
        return f"{m.group(1)}{quote}{REDACTED}{quote}"

    return _SECRET_IN_TEXT.sub(hide, text)


class Strict(BaseModel):
    """A YAML schema: unknown fields are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _yaml_loc(data: Any, loc: Loc) -> tuple[Loc, str]:
    """pydantic's error location as a path in the YAML, and the tagged-union choice it went through.

    A discriminated union (`llm: {backend: transformers}`) puts the tag in the location
    (llm.transformers.base_url), though it is no key in the file: it is dropped and returned
    as "backend 'transformers'".
    """
    out: list[str | int] = []
    node, tag = data, ""
    for j, part in enumerate(loc):
        if (isinstance(node, dict) and part in node
                or isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
        elif isinstance(node, dict) and j < len(loc) - 1 and part in node.values():
            tag = next(f"{k} '{part}'" for k, v in node.items() if v == part)
            continue
        else:
            node = None
        out.append(part)
    return tuple(out), tag


def pydantic_problems(doc: LocatedYaml, err: ValidationError, prefix: Loc = ()) -> list[Problem]:
    out = []
    for e in err.errors():
        loc, tag = _yaml_loc(doc.data, (*prefix, *e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown field for {tag}" if tag else "unknown field"
        elif e["type"] == "union_tag_invalid":
            loc = (*loc, e["ctx"]["discriminator"].strip("'"))
            msg = (f"unknown {e['ctx']['discriminator'].strip(chr(39))} {e['ctx']['tag']!r} "
                   f"(expected one of: {e['ctx']['expected_tags']})")
        elif e["type"] == "union_tag_not_found":
            msg = f"{e['ctx']['discriminator']} is required"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict | list):
            msg = f"{msg} (got {e['input']!r})"
        out.append(Problem(doc.file, msg, doc.line(loc), format_loc(loc)))
    return out


M = TypeVar("M", bound=BaseModel)


def validate_mapping(doc: LocatedYaml, model: type[M], expected: str) -> tuple[M | None, list[Problem]]:
    """A YAML document validated as `model`: (the model, []) or (None, every problem, located).
    `expected` says what the document must be when it is no mapping at all."""
    if not isinstance(doc.data, dict):
        return None, [Problem(doc.file, expected, 1)]
    try:
        return model.model_validate(doc.data), []
    except ValidationError as e:
        return None, pydantic_problems(doc, e)
