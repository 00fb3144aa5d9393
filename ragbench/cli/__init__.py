"""Command-line interface: parse, call, print. Bad input exits 2 with one line per problem.

One module per group of commands; each registers on the `ragbench` group (common.py) when imported here.
"""

from ragbench.cli import cache, experiment, explore, reports  # noqa: F401 - registers their commands
from ragbench.cli.common import main
from ragbench.cli.run import run

__all__ = ["main", "run"]
