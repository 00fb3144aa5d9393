"""`backend: vllm`: the vLLM engine in this process (`vllm.LLM`), for GPU boxes without a server.

vLLM pins its own torch and transformers, so it usually lives in its own environment, where
ragbench's heavier dependencies are absent: this module imports vllm lazily and nothing from
ragbench beyond the LLM interface, chat rendering and model loading. Scripts that build this backend need an
`if __name__ == "__main__":` guard, because the engine core is a spawned process.

The engine sees the full distribution, so `next_token_logprobs` asks for the candidates' own
token ids (`logprob_token_ids`: every token whose text after the prefix is a candidate, see
`label_token_ids`) and returns every candidate, as the transformers backend does.
The engine answers a whole batch at once; requests go to it in chunks, so a crash loses at
most one chunk of finished work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragbench.llm.base import (
    LLM,
    Chat,
    Done,
    Generation,
    Request,
    best_label_logprobs,
    label_token_ids,
    plain_text,
)
from ragbench.llm.chat import render_chat, template_flags, template_messages
from ragbench.llm.loading import converted_model_dir

if TYPE_CHECKING:
    from ragbench.cache import Cache
    from ragbench.llm.config import VLLMConfig

#: requests per engine call: large enough to keep the engine's batches full
CHUNK = 256
#: vLLM's cap on `logprob_token_ids` (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS)
MAX_LOGPROB_TOKEN_IDS = 128


class VLLMEngine(LLM):
    backend = "vllm"
    serial = True  # one model in this process: concurrent calls take turns (stage batches run one at a time anyway)

    def __init__(self, config: VLLMConfig, cache: Cache | None = None):
        super().__init__(cache, config.cache)
        self.config = config
        self._engine: Any = None
        self._folder: Path | None = None
        self._weights: str | None = None

    @property
    def folder(self) -> Path:
        """The plain Hugging Face folder vLLM loads (a GGUF is converted once, then reused)."""
        if self._folder is None:
            self._folder = converted_model_dir(self.config.model, self.cache.root if self.cache else None)
        return self._folder

    @property
    def engine(self) -> Any:
        if self._engine is None:
            try:
                from vllm import LLM as Engine
            except ImportError as e:
                from ragbench.llm.factory import missing_dependency

                raise missing_dependency(self.backend, e) from None
            c = self.config
            kwargs: dict[str, Any] = {"tensor_parallel_size": c.tensor_parallel_size,
                                      "gpu_memory_utilization": c.gpu_memory_utilization, "dtype": c.dtype,
                                      "max_logprobs": c.max_logprobs, "enforce_eager": c.enforce_eager, "seed": c.seed}
            if c.max_model_len:
                kwargs["max_model_len"] = c.max_model_len
            self._engine = Engine(model=str(self.folder), **kwargs)
        return self._engine

    @property
    def tokenizer(self) -> Any:
        return self.engine.get_tokenizer()

    @property
    def model_name(self) -> str:
        return self.config.model

    @property
    def weights_sha256(self) -> str:
        if self._weights is None:
            from ragbench.models import weights_hash

            self._weights = weights_hash(self.folder)
        return self._weights

    def identity(self) -> dict[str, Any]:
        import vllm

        mc = self.engine.llm_engine.model_config
        return {"backend": self.backend, "model": self.config.model, "path": str(self.folder), "vllm": vllm.__version__,
                "model_key": self.weights_sha256, "dtype": str(mc.dtype).removeprefix("torch."),
                "max_model_len": mc.max_model_len}

    def cache_identity(self) -> Any:
        # from the config, not the engine: a run answered wholly from the cache never starts vLLM
        return [self.backend, self.weights_sha256, self.config.dtype]

    @property
    def context_length(self) -> int:
        return int(self.engine.llm_engine.model_config.max_model_len)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def render(self, chat: Chat, prefix: str = "") -> str:
        # a plain prompt goes as text: the engine's tokenizer adds its BOS itself
        return render_chat(self.tokenizer, chat, prefix, model=self.config.model)

    # -- requests ---------------------------------------------------------------------------------
    def _generate(self, requests: list[Request], params: list[Any], done: Done, finish: Any) -> None:
        """Run the engine over the requests in chunks (one call per prefix kind), `done` per output."""
        plain = [i for i, r in enumerate(requests) if plain_text(r.chat) is not None]
        for start in range(0, len(plain), CHUNK):  # plain prompts: text completion, no chat template
            chunk = plain[start:start + CHUNK]
            outs = self.engine.generate([self.render(requests[i].chat, requests[i].prefix) for i in chunk],
                                        [params[i] for i in chunk], use_tqdm=False)
            for i, out in zip(chunk, outs, strict=True):
                done(i, finish(requests[i], out))
        for with_prefix in (False, True):
            idx = [i for i, r in enumerate(requests) if bool(r.prefix) == with_prefix and plain_text(r.chat) is None]
            for start in range(0, len(idx), CHUNK):
                chunk = idx[start:start + CHUNK]
                convs = [template_messages(requests[i].chat, requests[i].prefix) for i in chunk]
                flags = template_flags(requests[chunk[0]].prefix)  # the same for the whole chunk
                outs = self.engine.chat(convs, [params[i] for i in chunk], use_tqdm=False, **flags)
                for i, out in zip(chunk, outs, strict=True):
                    done(i, finish(requests[i], out))

    def _chat(self, requests: list[Request], done: Done) -> None:
        from vllm import SamplingParams

        def params(r: Request) -> Any:
            s = r.sampling
            extra: dict[str, Any] = {}
            if s.json_schema is not None:  # constrained decoding (vLLM structured outputs)
                from vllm.sampling_params import StructuredOutputsParams

                extra["structured_outputs"] = StructuredOutputsParams(json=json.loads(s.json_schema))
            return SamplingParams(max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
                                  seed=s.seed if self.config.request_seed else None, stop=list(s.stop) or None, **extra)

        def finish(r: Request, out: Any) -> Generation:
            o = out.outputs[0]
            reason = "length" if o.finish_reason == "length" else "stop"
            return Generation(o.text, reason, len(out.prompt_token_ids or []), len(o.token_ids))

        self._generate(requests, [params(r) for r in requests], done, finish)

    def candidate_ids(self, candidates: tuple[str, ...], prefix: str = "[") -> list[list[int]]:
        """Per candidate, the token ids whose text right after `prefix` is the candidate (see `label_token_ids`)."""
        return label_token_ids(self.tokenizer, candidates, self.config.model, after=prefix or "\n")

    def _logprobs(self, requests: list[Request], done: Done) -> None:
        from vllm import SamplingParams

        ids = {(r.candidates, r.prefix): self.candidate_ids(r.candidates, r.prefix) for r in requests}

        def params(r: Request) -> Any:
            tids = sorted({t for group in ids[r.candidates, r.prefix] for t in group})
            if len(tids) <= MAX_LOGPROB_TOKEN_IDS:  # exactly these ids, however unlikely, not the top-n
                return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=tids)
            return SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.config.max_logprobs)

        def finish(r: Request, out: Any) -> dict[str, float]:
            return first_token_logprobs(out, r.candidates, ids[r.candidates, r.prefix])

        self._generate(requests, [params(r) for r in requests], done, finish)


def first_token_logprobs(out: Any, candidates: tuple[str, ...], ids: list[list[int]]) -> dict[str, float]:
    """{candidate: log-probability} from a vLLM RequestOutput's first generated token.

    Matched by token id, never by vLLM's `decoded_token` (whose spacing differs across vLLM
    versions); a candidate with several ids gets the likeliest (rank_llm's rule).
    """
    first = out.outputs[0].logprobs[0]  # {token id: Logprob} for the first generated token
    return best_label_logprobs(candidates, ids, {t: lp.logprob for t, lp in first.items()})
