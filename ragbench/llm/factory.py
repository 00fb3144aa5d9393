"""The factory that turns an `llm:` block into a backend, and what each backend needs installed.

One table row per backend (the module and class, and what to install when importing them
fails), in the manner of AnswerDotAI/rerankers' factory: a new backend is one file plus one
row. Backend modules are imported only when a stage builds one, so a config that names vLLM
validates where vLLM is not installed, and the error for a missing library says what to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragbench.errors import RagbenchError
from ragbench.llm.config import OpenAIServerConfig, TransformersLLMConfig, VLLMConfig

if TYPE_CHECKING:
    from ragbench.cache import Cache
    from ragbench.llm.base import LLM


@dataclass(frozen=True)
class Backend:
    module: str
    cls: str
    install: str  # what to do when the backend's libraries are missing


BACKENDS: dict[str, Backend] = {
    "transformers": Backend("ragbench.llm.transformers_backend", "TransformersLLM", "pip install torch transformers"),
    "vllm": Backend("ragbench.llm.vllm_backend", "VLLMEngine",
                    "pip install vllm (best in its own environment: make vllm), or use backend openai_server"),
    "openai_server": Backend("ragbench.llm.openai_server", "OpenAIServerLLM", "pip install httpx"),
}


def missing_dependency(backend: str, error: ImportError) -> RagbenchError:
    """The one-line error for a backend whose library is not installed."""
    what = f"the {error.name} package" if error.name else "a package that is not installed"
    return RagbenchError.at("llm.backend", f"backend '{backend}' needs {what} ({error}); {BACKENDS[backend].install}")


def backend_class(backend: str) -> type[LLM]:
    """The class of a backend by its `backend:` name (its module imported now)."""
    entry = BACKENDS.get(backend)
    if entry is None:
        raise RagbenchError.at("llm.backend", f"unknown backend '{backend}' (one of {', '.join(BACKENDS)})")
    try:
        module = importlib.import_module(entry.module)
    except ImportError as e:
        raise missing_dependency(backend, e) from None
    return getattr(module, entry.cls)


def make_llm(config: TransformersLLMConfig | VLLMConfig | OpenAIServerConfig, cache: Cache | None = None) -> LLM:
    """Build the backend a config names; heavy libraries are imported only by the backend itself."""
    return backend_class(config.backend)(config, cache)
