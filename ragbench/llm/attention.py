"""Attention read out of a Hugging Face causal LM held in this process (the ATTENTION capability, for ICR).

ICR needs s(j) = the sum over layers and heads of the mean over the query tokens t of a_{t,j}.
No full attention matrix is ever held: the prefix (the documents) is encoded once into a KV
cache with sdpa, which returns no weights; each suffix (the query part) then runs eagerly on
that cache, and forward hooks on every `*.self_attn` fold each layer's (heads, |Q|, keys)
weights into one running vector and drop them as they appear. The cache is cropped back to the
prefix between suffixes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np

from ragbench.errors import RagbenchError


def _self_attention_modules(model: Any) -> list[Any]:
    mods = [m for name, m in model.named_modules() if name.endswith("self_attn")]
    if not mods:
        raise RagbenchError.at("llm.model", f"{type(model).__name__} has no '*.self_attn' modules; "
                               "ICR needs a decoder-only transformer")
    return mods


@contextmanager
def _implementation(model: Any, name: str) -> Iterator[None]:
    """Run with another attention implementation (where the model supports it), then restore."""
    old = model.config._attn_implementation
    with suppress(ValueError, ImportError):  # not supported: stay as loaded
        model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(old)


@contextmanager
def _accumulate(model: Any, acc: Any) -> Iterator[None]:
    """While active, add each layer's head-summed, query-averaged attention to `acc`.

    Eager attention returns (output, weights (1, heads, |Q|, keys)). The hook reduces the
    weights at once and returns None in their place, so at most one layer's |Q| rows are
    alive at any time, and nothing is collected into the model's output.
    """
    def hook(module: Any, args: Any, output: Any) -> Any:
        weights = output[1]
        if weights is None:
            raise RuntimeError("attention weights missing: ICR needs attn_implementation 'eager'")
        acc[: weights.shape[-1]] += weights[0].float().sum(0).mean(0)
        return (output[0], None, *output[2:])

    handles = [m.register_forward_hook(hook) for m in _self_attention_modules(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def attention_mass(model: Any, prefix: list[int], suffixes: Sequence[list[int]]) -> list[np.ndarray]:
    """For each suffix run after `prefix`: s(j) = sum of layers, heads and mean of suffix tokens.

    The prefix is encoded once, into a KV cache. It uses sdpa because no weights are needed
    there, and eager would build a heads x P x P matrix per layer. Each suffix then runs
    eagerly on that cache. The cache is cropped back to the prefix between suffixes. Each
    result has one value per position of prefix + suffix.
    """
    import torch
    from transformers import DynamicCache

    device = model.device
    out = []
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        with _implementation(model, "sdpa"):
            model(input_ids=torch.tensor([prefix], device=device), past_key_values=cache, use_cache=True,
                  logits_to_keep=1)
        for k, suffix in enumerate(suffixes):
            if k:
                cache.crop(-len(suffixes[k - 1]))
            acc = torch.zeros(len(prefix) + len(suffix), dtype=torch.float32, device=device)
            with _implementation(model, "eager"), _accumulate(model, acc):
                model(input_ids=torch.tensor([suffix], device=device), past_key_values=cache, use_cache=True,
                      logits_to_keep=1)
            out.append(acc.double().cpu().numpy())
    return out
