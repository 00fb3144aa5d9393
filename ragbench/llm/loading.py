"""The one place that loads a causal LM and its tokenizer (retrievers, rerankers, readers, judges).

Models come through `ragbench.models.resolve`: a bundled copy, a local folder, or a Hub id.
A GGUF checkpoint (the bundled SmolLM2) is de-quantised by transformers once, saved as a
plain Hugging Face folder under `<cache root>/models/`, keyed by the GGUF's sha256, and every
later load reads that folder (about 0.2 s instead of 15 s). The same folder is what an
external server such as vLLM loads (`converted_model_dir`).

Loads are memoised per process: two stages that name the same model share one copy.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any, NamedTuple

from ragbench.cache import Cache, build_folder, make_key
from ragbench.errors import RagbenchError
from ragbench.models import ResolvedModel, resolve, weights_hash

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
#: Bump when the conversion would write a different folder for the same GGUF.
CONVERSION_VERSION = "1"
CONVERSION_INFO = "ragbench-conversion.json"


class LoadedLM(NamedTuple):
    model: Any  # transformers PreTrainedModel, in eval mode
    tokenizer: Any  # transformers tokenizer, with a pad token
    identity: dict[str, Any]


_MEMO: dict[tuple[Any, ...], LoadedLM] = {}
_LOCK = threading.Lock()
#: how many GGUF conversions this process ran (tests check that a second load converts nothing)
conversions = 0


def models_root(cache_root: str | Path | None = None) -> Path:
    """Where converted models live: `<cache root>/models` ($RAGBENCH_CACHE respected)."""
    return Cache(cache_root).root / "models"


def converted_model_dir(name: str = DEFAULT_MODEL, cache_root: str | Path | None = None) -> Path:
    """A plain Hugging Face folder (config, safetensors, tokenizer) for `name`.

    GGUF checkpoints are converted on first use; local folders are returned as they are; Hub
    ids are fetched into (or, offline, found in) the Hugging Face cache.
    """
    resolved = resolve(name)
    if resolved.gguf_file is not None:
        return _convert_gguf(resolved, models_root(cache_root))
    if resolved.source == "hub":
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(resolved.path))
    return Path(resolved.path)


def _conversion_dir(resolved: ResolvedModel, root: Path) -> tuple[Path, str]:
    assert resolved.gguf_file is not None
    sha = weights_hash(Path(resolved.path), resolved.gguf_file)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(resolved.gguf_file).stem)
    return root / f"{slug}-{make_key('gguf-to-hf', sha, CONVERSION_VERSION)[:16]}", sha


def _convert_gguf(resolved: ResolvedModel, root: Path) -> Path:
    final, sha = _conversion_dir(resolved, root)

    def build(tmp: Path) -> None:
        global conversions
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        conversions += 1
        src, gguf = resolved.path, resolved.gguf_file
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
        quantised = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
        # save_pretrained refuses a model with the GGUF quantizer attached: rebuild a plain one
        config = quantised.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantised.state_dict())
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"source": resolved.identity(), "gguf_sha256": sha, "conversion_version": CONVERSION_VERSION}
        (tmp / CONVERSION_INFO).write_text(json.dumps(info, indent=2))

    return build_folder(final, build)


def _torch_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None:
        return torch.float32 if device == "cpu" else "auto"
    if isinstance(dtype, str) and dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise RagbenchError(f"unknown dtype '{dtype}' (e.g. float32, bfloat16, float16, auto)")
        return getattr(torch, dtype)
    return dtype


def load_causal_lm(name: str = DEFAULT_MODEL, device: str = "cpu", dtype: Any = None,
                   attn_implementation: str | None = None, cache_root: str | Path | None = None) -> LoadedLM:
    """(model, tokenizer, identity) for `name`, loaded once per process.

    `dtype`: a torch dtype or its name; default float32 on the CPU, the checkpoint's own elsewhere.
    `attn_implementation`: e.g. "eager" when attention weights are needed (ICR); default transformers'.
    `identity` is the resolved model's (source, path, weights sha256) for config.lock.yaml.
    """
    resolved = resolve(name)
    torch_dtype = _torch_dtype(dtype, device)
    memo_key = (resolved.path, resolved.gguf_file, str(Cache(cache_root).root) if resolved.gguf_file else None,
                device, str(torch_dtype), attn_implementation)
    with _LOCK:
        if memo_key in _MEMO:
            return _MEMO[memo_key]
        from transformers import AutoModelForCausalLM, AutoTokenizer

        identity: dict[str, Any] = dict(resolved.identity())
        if resolved.gguf_file is not None:
            folder: str = str(_convert_gguf(resolved, models_root(cache_root)))
            identity["converted_dir"] = folder
        else:
            folder = resolved.path
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        except OSError as e:
            raise RagbenchError.at("model", f"could not load causal LM '{name}' from {folder}: {e}") from None
        model = model.to(device).eval()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        identity.update({"dtype": str(model.dtype).removeprefix("torch."), "device": device})
        if attn_implementation:
            identity["attn_implementation"] = attn_implementation
        loaded = LoadedLM(model, tokenizer, identity)
        _MEMO[memo_key] = loaded
        return loaded


def clear_memo() -> None:
    """Forget loaded models (tests; freeing memory between experiments)."""
    with _LOCK:
        _MEMO.clear()
