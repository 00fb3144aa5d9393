"""`type: cross_encoder`: a sentence-transformers CrossEncoder scores each (query, passage) pair.

Source and deviations: docs/methods.md, "Cross-encoder".

For users' trained rerankers from the Hub (cross-encoder/ms-marco-MiniLM-L6-v2,
BAAI/bge-reranker-base, ...) or a local folder. No trained cross-encoder ships inside a PyPI
package, so offline (this project's CI) the stage is tested with a model built locally from
the bundled MiniLM encoder and a randomly initialised head: that checks the plumbing, not
the quality. Scores are the model's outputs after its own activation (sigmoid for one label)
unless `activation` says otherwise; ties keep the first-stage order.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, Literal

from pydantic import Field

from ragbench.errors import RagbenchError
from ragbench.models import resolve, resolve_device, shared
from ragbench.rerankers.base import Reranker, RerankerOptions
from ragbench.stage import EXECUTION
from ragbench.types import Query, Ranking


class CrossEncoderOptions(RerankerOptions):
    model: str = Field(description="a CrossEncoder: Hub id (e.g. cross-encoder/ms-marco-MiniLM-L6-v2) or local folder")
    batch_size: int = Field(32, ge=1, json_schema_extra=EXECUTION, description="pairs per forward pass")
    max_length: int | None = Field(None, ge=8, description="tokens per (query, passage) pair; default the model's")
    device: str = Field("cpu", json_schema_extra=EXECUTION, description="cpu, cuda, cuda:1, mps, or auto")
    activation: Literal["model", "none", "sigmoid"] = Field(
        "model",
        description="model = the model's own (sigmoid for one label); none = raw logits; the order is the same")


class CrossEncoderReranker(Reranker):
    Options = CrossEncoderOptions
    options: CrossEncoderOptions

    def prepare(self, task: Any) -> None:
        super().prepare(task)
        self.model  # noqa: B018 - load now, not inside the first batch

    @property
    def model(self) -> Any:
        """The CrossEncoder, loaded once per (weights, device, max_length) per process."""
        o = self.options
        resolved = self.resolved = resolve(o.model)
        device = resolve_device(o.device)

        def load() -> Any:
            from sentence_transformers import CrossEncoder

            try:
                return CrossEncoder(resolved.path, device=device, max_length=o.max_length)
            except (OSError, ValueError) as e:
                msg = f"cannot load cross-encoder '{o.model}' ({resolved.source}: {resolved.path}): {e}"
                raise RagbenchError.at("model", msg) from None

        return shared(("cross_encoder", resolved.path, device, o.max_length), load)

    def process(self, queries: list[Query], inputs: list[dict[str, Ranking]]) -> dict[str, Ranking]:
        # one predict call for the whole batch: pairs of every query, scored together
        import torch

        cands = {q.id: (inputs[0].get(q.id) or Ranking(q.id, [], [])).top(self.options.top_k) for q in queries}
        pairs = [(q.text, self.passage(d)) for q in queries for d in cands[q.id].docids]
        act = {"model": None, "none": torch.nn.Identity(), "sigmoid": torch.nn.Sigmoid()}[self.options.activation]
        scores = self.model.predict(pairs, batch_size=self.options.batch_size, activation_fn=act,
                                    convert_to_numpy=True, show_progress_bar=False) if pairs else []
        out, i = {}, 0
        for q in queries:
            ids = cands[q.id].docids
            s = [float(x) for x in scores[i:i + len(ids)]]
            i += len(ids)
            order = sorted(range(len(ids)), key=lambda j: (-s[j], j))  # ties keep first-stage order
            out[q.id] = Ranking(q.id, [ids[j] for j in order], [s[j] for j in order])
        return out

    def identity(self) -> dict[str, Any]:
        return {"model": resolve(self.options.model).identity(),
                "sentence-transformers": version("sentence-transformers"),
                "device": resolve_device(self.options.device)}
