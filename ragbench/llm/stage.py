"""What every stage that asks an LLM shares: the `llm:` option, the backend built once, its
identity in the lock file, and the request count in the run log (rerankers, readers)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from ragbench.llm.config import LLMConfig, TransformersLLMConfig
from ragbench.llm.factory import make_llm
from ragbench.stage import StageEnv, StageOptions


class LLMOptions(StageOptions):
    llm: LLMConfig = Field(default_factory=TransformersLLMConfig,
                           description="the LLM backend and model (see ragbench.llm.config)")

    @field_validator("llm", mode="before")
    @classmethod
    def _default_backend(cls, v: Any) -> Any:
        """`llm: {model: x}` means the transformers backend, the one that needs no setup."""
        return {"backend": "transformers", **v} if isinstance(v, dict) and "backend" not in v else v


class UsesLLM:
    """Mixin for a Stage whose options are LLMOptions: the backend is built lazily, once per stage."""

    options: Any
    env: StageEnv

    @property
    def llm(self) -> Any:
        if getattr(self, "_llm", None) is None:
            self._llm = make_llm(self.options.llm, self.env.cache)
        return self._llm

    def identity(self) -> dict[str, Any]:
        return {"llm": self.llm.identity()}

    def finish(self) -> None:
        self.env.reporter.log(f"{self.env.stage_id}: {self.llm.stats.summary()}")
