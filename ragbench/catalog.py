"""Where pipelines and task cards are found by name, so `ragbench run bm25 --task scifact` works anywhere.

Lookup order, first match wins: the user's folders (RAGBENCH_PATH, os.pathsep-separated, which
`ragbench --catalog DIR` extends), then the source checkout's top-level `pipelines/` and `tasks/` when running
from one, then the copy installed inside the package. setup.py maps those same top-level folders onto
`ragbench/catalog_data/`, so the files users read and copy are the only source.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import yaml

from ragbench.errors import RagbenchError

ENV = "RAGBENCH_PATH"
SUBFOLDER = {"pipeline": "pipelines", "task": "tasks"}
PACKAGE = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE.parent


def user_folders() -> list[Path]:
    """The folders on RAGBENCH_PATH, in order."""
    return [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p]


def add_user_folders(dirs: Iterable[str | Path]) -> None:
    """Put DIRS ahead of RAGBENCH_PATH for this process and those it starts (`ragbench --catalog`)."""
    given = [str(Path(d).resolve()) for d in dirs]
    if given:
        os.environ[ENV] = os.pathsep.join(given + [str(p) for p in user_folders()])


def _shipped(kind: str) -> list[Path]:
    """The checkout's folder (a source tree has pyproject.toml beside the package), then the installed copy."""
    checkout = [REPO_ROOT / SUBFOLDER[kind]] if (REPO_ROOT / "pyproject.toml").is_file() else []
    return [f for f in [*checkout, PACKAGE / "catalog_data" / SUBFOLDER[kind]] if f.is_dir()]


def folder(kind: str) -> Path:
    """The shipped catalogue's folder of a kind ("pipeline" or "task"): the checkout's, else the package's."""
    shipped = _shipped(kind)
    return shipped[0] if shipped else PACKAGE / "catalog_data" / SUBFOLDER[kind]


def folders(kind: str) -> list[tuple[Path, bool]]:
    """Folders searched for a kind, in lookup order, each with whether it holds only that kind.

    A user folder contributes its `pipelines/` or `tasks/` subfolder when it has one; otherwise its own YAML
    files, where a file with a top-level `stages` key is a pipeline and any other one a task card.
    """
    found: list[tuple[Path, bool]] = []
    for root in user_folders():
        sub = root / SUBFOLDER[kind]
        found.append((sub, True) if sub.is_dir() else (root, False))
    found += [(f, True) for f in _shipped(kind)]
    unique: dict[Path, tuple[Path, bool]] = {}
    for f, only in found:
        if f.is_dir():
            unique.setdefault(f.resolve(), (f, only))  # the checkout on RAGBENCH_PATH too: searched once
    return list(unique.values())


def _holds(path: Path, kind: str) -> bool:
    """Whether a file in a mixed folder is of a kind; an unreadable one counts as both, so loading reports why."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return True
    return (isinstance(data, dict) and "stages" in data) == (kind == "pipeline")


def files(kind: str) -> list[Path]:
    """One YAML file per name of a kind, by name; a name in an earlier folder shadows later ones."""
    by_name: dict[str, Path] = {}
    for where, only in folders(kind):
        for path in sorted(where.glob("*.yaml")):
            if path.stem not in by_name and (only or _holds(path, kind)):
                by_name[path.stem] = path
    return [by_name[name] for name in sorted(by_name)]


def find(name_or_path: str | Path, kind: str) -> Path:
    """A path as given, or a bare name looked up in the catalogue folders in order."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    for where, only in folders(kind):
        candidate = where / f"{name_or_path}.yaml"
        if candidate.is_file() and (only or _holds(candidate, kind)):
            return candidate
    known = sorted(x.stem for x in files(kind))
    raise RagbenchError.at(str(name_or_path), f"no such {kind}; give a YAML path or one of: {', '.join(known)}")
