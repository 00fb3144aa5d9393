"""Where pipelines and task cards are found by name: the shipped catalogue and the user's own folders."""

from __future__ import annotations

from pathlib import Path

from ragbench.errors import RagbenchError

REPO_ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"pipeline": REPO_ROOT / "pipelines", "task": REPO_ROOT / "tasks"}


def folder(kind: str) -> Path:
    return FOLDERS[kind]


def files(kind: str) -> list[Path]:
    """Every YAML file of a kind ("pipeline" or "task") in the catalogue, by name."""
    return sorted(folder(kind).glob("*.yaml"))


def find(name_or_path: str | Path, kind: str) -> Path:
    """A path as given, or a bare name looked up in the catalogue."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    candidate = folder(kind) / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(x.stem for x in files(kind))
    raise RagbenchError.at(str(name_or_path), f"no such {kind}; give a YAML path or one of: {', '.join(known)}")
