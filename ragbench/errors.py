"""User-facing errors: one line that says where (file, line, field) and what was expected.

The CLI prints `str(error)` and exits with code 2; a traceback appears only with --debug.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Problem:
    file: str
    message: str
    line: int | None = None
    path: str = ""  # dotted YAML / field path, e.g. stages[0].k1

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        return f"{where}: {self.path + ': ' if self.path else ''}{self.message}"


class RagbenchError(Exception):
    """Bad input or usage. Carries one or more problems, each printed on its own line."""

    def __init__(self, problems: Problem | list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem(file="ragbench", message=problems)]
        self.problems = problems if isinstance(problems, list) else [problems]
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def at(cls, file: str, message: str, line: int | None = None, path: str = "") -> RagbenchError:
        return cls(Problem(file=str(file), message=message, line=line, path=path))
