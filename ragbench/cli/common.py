"""What every command shares: the `ragbench` group, the consoles, one-line errors, the executor options."""

from __future__ import annotations

import functools
import os
import sys

import click
from rich.console import Console

from ragbench.errors import RagbenchError

# Piped or captured output (CI logs, files) gets room for wide tables instead of rich's 80 columns.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)


def friendly(fn):
    """Turn RagbenchError into exit code 2 and one line per problem; --debug shows tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RagbenchError as e:
            if os.environ.get("RAGBENCH_DEBUG"):
                raise
            for p in e.problems:
                err.print(f"[red]error:[/] {p}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            err.print("interrupted: finished batches are cached; run the same command again to resume")
            sys.exit(130)

    return wrapper


@click.group()
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.option("--catalog", "catalog_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of your own pipelines and task cards (pipelines/ and tasks/ inside, or the YAML files), "
                   "searched before $RAGBENCH_PATH and the shipped ones. Repeatable.")
@click.version_option(package_name="ragbench")
def main(debug: bool, catalog_dirs: tuple[str, ...]) -> None:
    """Evaluate retrieval-augmented generation pipelines."""
    from ragbench import catalog

    if debug:
        os.environ["RAGBENCH_DEBUG"] = "1"
    catalog.add_user_folders(catalog_dirs)


def executor_options(fn):
    """--executor, --workers, --ray-address: where heavy work runs, an execution setting (never in a cache key)."""
    options = [
        click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
                     help="Where heavy work runs: local (this process) or ray (corpus encoding on an actor pool); "
                          "default: the pipeline's executor block, else local. Never changes results or cache keys."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Ray workers per parallel step (default: the cluster's CPUs). Implies --executor ray."),
        click.option("--ray-address", default=None, metavar="ADDR",
                     help="Ray cluster to join (auto, or ray://host:10001); default: start a local one. "
                          "Implies --executor ray."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
