"""The code's shape, checked: no import cycle among ragbench's modules, formulas (metrics/) that never reach
into run folders or reports, no module over 400 lines, a thin `ragbench run`, and no dispatch on a name for
what a stage produces (stages declare output types)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import ragbench
from ragbench import cli

PACKAGE = Path(ragbench.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "data" not in p.relative_to(PACKAGE).parts)


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The ragbench modules a module imports anywhere (functions included), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    names = {_name(p) for p in MODULES}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ragbench")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ragbench"):
            out |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                    for a in node.names}
    return {m for m in out if m in names}


GRAPH = {_name(p): _imports(p) for p in MODULES}


def _cycle() -> list[str] | None:
    """A cycle among the modules (ignoring a package's __init__ re-exporting its own submodules), or None."""
    def edges(m: str) -> set[str]:
        return {d for d in GRAPH[m] if not (d.startswith(m + ".") or m.startswith(d + "."))}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in edges(m):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in GRAPH:
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle() -> None:
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_formulas_never_import_run_folders_or_reports() -> None:
    banned = ("ragbench.record", "ragbench.report", "ragbench.runner", "ragbench.plan", "ragbench.cli")
    for module, deps in GRAPH.items():
        if module.startswith("ragbench.metrics"):
            assert not [d for d in deps if d.startswith(banned)], module


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long


def test_run_command_is_thin() -> None:
    lines = inspect.getsource(cli.run.callback).splitlines()  # the function itself, its click decorators aside
    assert len(lines) <= 40


def test_no_dispatch_on_a_name_for_what_a_stage_produces() -> None:
    """`produces` and `consumes` are output types; nothing compares them (or a stage's kind) to a string."""
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                text = ast.unparse(node)
                sides = [node.left, *node.comparators]
                named = any(isinstance(s, ast.Attribute) and (s.attr in ("produces", "consumes") or s.attr == "kind"
                            and isinstance(s.value, ast.Attribute) and s.value.attr == "contract") for s in sides)
                literal = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
                assert not (named and literal), f"{path.relative_to(PACKAGE)}: {text}"
