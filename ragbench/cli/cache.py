"""`ragbench cache`: inspect or clear the stage cache."""

from __future__ import annotations

import click

from ragbench.cli.common import friendly, main


@main.group()
def cache() -> None:
    """Inspect or clear the stage cache."""


@cache.command("clear")
@click.option("--cache-dir", type=click.Path(), default=None)
@friendly
def cache_clear(cache_dir) -> None:
    from ragbench.cache import Cache

    c = Cache(cache_dir)
    files, size = c.size()
    c.clear()
    click.echo(f"removed {files} files ({size / 1e6:.1f} MB) from {c.root}")


@cache.command("info")
@click.option("--cache-dir", type=click.Path(), default=None)
def cache_info(cache_dir) -> None:
    from ragbench.cache import Cache

    c = Cache(cache_dir)
    files, size = c.size()
    click.echo(f"{c.root}: {files} files, {size / 1e6:.1f} MB")
