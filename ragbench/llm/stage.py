"""What every stage that asks an LLM shares: the `llm:` option, the backend built once, its
identity in the lock file, the request count in the run log (rerankers, readers), its requests
reported to the stage's progress, and how many of its batches may be in flight at once."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from ragbench.llm.config import LLMConfig, OpenAIServerConfig, TransformersLLMConfig
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
            llm = make_llm(self.options.llm, self.env.cache)
            llm.listener = self.env.reporter.requests  # each finished request moves the stage's progress
            self._llm = llm
        return self._llm

    def batches_in_flight(self, batch_size: int) -> int:
        """How many batches the pipeline processes at once, so their requests meet in the backend's one queue.

        A server pool answers `concurrency` requests at once: enough batches to keep that many
        queued, and one more so the last requests of one batch (or of a listwise round) overlap
        the next's. A model in this process answers one call at a time: one batch.
        """
        config = self.options.llm
        if not isinstance(config, OpenAIServerConfig) or config.concurrency <= 1:
            return 1
        return -(-config.concurrency // batch_size) + 1

    def identity(self) -> dict[str, Any]:
        return {"llm": self.llm.identity()}

    def finish(self) -> None:
        self.env.reporter.log(f"{self.env.stage_id}: {self.llm.stats.summary()}")
