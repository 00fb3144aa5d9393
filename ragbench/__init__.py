"""ragbench: evaluate retrieval-augmented generation pipelines with numbers you can trust.

`ragbench.run(...)` and `ragbench.experiment(...)` are the Python API (api.py), loaded on first use so that
`import ragbench` stays light.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "experiment", "run"]


def __getattr__(name: str) -> Any:
    if name in ("run", "experiment", "Run"):
        from ragbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'ragbench' has no attribute {name!r}")
