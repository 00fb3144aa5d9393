"""`backend: transformers`: any Hugging Face causal LM, in this process, on CPU or GPU.

The reference backend: it sees the full next-token distribution (FIRST reads the logits at
every identifier) and, alone among the backends, has the ATTENTION capability (ICR).
Prompts are rendered with the tokenizer's chat template and tokenised without extra special
tokens, as vLLM's chat endpoint does, so both backends see the same token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ragbench.errors import RagbenchError
from ragbench.llm.base import (
    ATTENTION,
    LLM,
    Chat,
    Done,
    Generation,
    Request,
    best_label_logprobs,
    label_token_ids,
    trim_at_stop,
)
from ragbench.llm.chat import render_chat
from ragbench.llm.loading import LoadedLM, load_causal_lm

if TYPE_CHECKING:
    from ragbench.cache import Cache
    from ragbench.llm.config import TransformersLLMConfig


class TransformersLLM(LLM):
    backend = "transformers"
    capabilities = frozenset({ATTENTION})
    serial = True  # one model in this process: concurrent calls take turns (stage batches run one at a time anyway)

    def __init__(self, config: TransformersLLMConfig, cache: Cache | None = None):
        super().__init__(cache, config.cache)
        self.config = config
        self._loaded: LoadedLM | None = None

    # -- loading ------------------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedLM:
        if self._loaded is None:
            c = self.config
            try:
                self._loaded = load_causal_lm(c.model, device=c.device, dtype=c.dtype,
                                              attn_implementation=c.attn_implementation,
                                              cache_root=self.cache.root if self.cache else None)
            except ImportError as e:
                from ragbench.llm.factory import missing_dependency

                raise missing_dependency(self.backend, e) from None
        return self._loaded

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def model_config(self) -> Any:
        """The model's Hugging Face config (architecture facts such as `model_type`)."""
        return self.model.config

    @property
    def model_name(self) -> str:
        return self.config.model

    def identity(self) -> dict[str, Any]:
        import transformers

        ident = dict(self.loaded.identity)
        return {"backend": self.backend, "model": self.config.model, "transformers": transformers.__version__,
                "model_key": ident.get("weights_sha256", ident.get("path")),
                **{k: v for k, v in ident.items() if k != "name"}}

    def cache_identity(self) -> Any:
        ident = self.loaded.identity
        # dtype and device change numerics, so they are part of what makes answers interchangeable
        return [self.backend, ident.get("weights_sha256", ident.get("path")), ident.get("dtype"), ident.get("device")]

    @property
    def context_length(self) -> int:
        if self.config.max_model_len:
            return self.config.max_model_len
        cfg = self.model.config
        return int(getattr(cfg, "max_position_embeddings", None) or self.tokenizer.model_max_length)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def render(self, chat: Chat, prefix: str = "") -> str:
        # tokenised without special tokens: a plain prompt carries the BOS `tokenizer(prompt)` would add
        return render_chat(self.tokenizer, chat, prefix, bos=True, model=self.config.model)

    def encode(self, chat: Chat, prefix: str = "") -> list[int]:
        """Token ids of the rendered prompt (what ICR and FIRST feed the model)."""
        return self.tokenizer(self.render(chat, prefix), add_special_tokens=False).input_ids

    # -- requests -------------------------------------------------------------------------------
    def _batches(self, requests: list[Request]) -> list[list[int]]:
        """Indices grouped into batches of similar length (less padding), in a stable order."""
        lengths = [len(self.encode(r.chat, r.prefix)) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: lengths[i])
        bs = self.config.batch_size
        return [order[i:i + bs] for i in range(0, len(order), bs)]

    def _padded(self, ids: list[list[int]]) -> tuple[Any, Any]:
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):  # left padding: the next token follows the last column
            input_ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
        return input_ids.to(self.model.device), mask.to(self.model.device)

    def _check_length(self, n_prompt: int, max_new: int) -> None:
        if n_prompt + max_new > self.context_length:
            raise RagbenchError.at("llm", f"prompt of {n_prompt} tokens + {max_new} new tokens exceeds the context "
                                   f"length {self.context_length} of '{self.config.model}'")

    def _chat(self, requests: list[Request], done: Done) -> None:
        import torch

        # requests with different sampling parameters cannot share a generate() call
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.sampling, []).append(i)
        for sampling, idx in groups.items():
            if sampling.json_schema is not None:
                raise RagbenchError.at("llm.backend", "constrained JSON decoding needs a vLLM backend "
                                       "(vllm or openai_server); the transformers backend has none")
            sub = [requests[i] for i in idx]
            for batch in self._batches(sub):
                ids = [self.encode(sub[j].chat, sub[j].prefix) for j in batch]
                for seq in ids:
                    self._check_length(len(seq), sampling.max_tokens)
                input_ids, mask = self._padded(ids)
                kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens,
                                          "pad_token_id": self.tokenizer.pad_token_id}
                if sampling.temperature > 0:
                    kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
                    if sampling.seed is not None:
                        torch.manual_seed(sampling.seed)
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                if sampling.stop:
                    kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
                with torch.inference_mode():
                    out = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
                eos = self._eos_ids()
                for row, j in enumerate(batch):
                    new = out[row, input_ids.shape[1]:].tolist()
                    ended = next((k for k, t in enumerate(new) if t in eos), None)
                    tokens = new[:ended] if ended is not None else new
                    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                    text, stopped = trim_at_stop(text, sampling.stop)
                    finish = "stop" if ended is not None or stopped else "length"
                    done(idx[j], Generation(text, finish, len(ids[row]), len(tokens)))

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
        return set(ids) | ({self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())

    def candidate_ids(self, candidates: tuple[str, ...], prefix: str = "[") -> list[list[int]]:
        """Per candidate, the token ids whose text right after `prefix` is the candidate (see `label_token_ids`)."""
        return label_token_ids(self.tokenizer, candidates, self.config.model, after=prefix or "\n")

    def _logprobs(self, requests: list[Request], done: Done) -> None:
        import torch

        for batch in self._batches(requests):
            ids = [self.encode(requests[j].chat, requests[j].prefix) for j in batch]
            for seq in ids:
                self._check_length(len(seq), 1)
            input_ids, mask = self._padded(ids)
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask, logits_to_keep=1).logits[:, -1, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, j in enumerate(batch):
                r = requests[j]
                tids = self.candidate_ids(r.candidates, r.prefix)
                wanted = sorted({t for group in tids for t in group})
                row_lp = dict(zip(wanted, logprobs[row, wanted].tolist(), strict=True))
                done(j, best_label_logprobs(r.candidates, tids, row_lp))

    # -- capabilities -----------------------------------------------------------------------------
    def attention_mass(self, prefix: list[int], suffixes: Sequence[list[int]]) -> list[Any]:
        """ICR's attention sums, read from the model held here (see `ragbench.llm.attention`)."""
        from ragbench.llm.attention import attention_mass

        return attention_mass(self.model, prefix, suffixes)
