"""The one place that loads a causal LM or a tokenizer (retrievers, rerankers, readers, judges, corpora).

Models come through `ragbench.models.resolve`: a bundled copy, a local folder, or a Hub id.
A GGUF checkpoint (the bundled SmolLM2) is de-quantised by transformers once, saved as a
plain Hugging Face folder under `<cache root>/models/`, keyed by the GGUF's sha256, and every
later load reads that folder (about 0.2 s instead of 15 s). The same folder is what an
external server such as vLLM loads (`converted_model_dir`).

Loads are shared per process (`ragbench.models.shared`): two stages that name the same model
share one copy.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from ragbench.cache import Cache, build_folder, make_key
from ragbench.errors import RagbenchError
from ragbench.models import ResolvedModel, forget_loaded, resolve, shared, weights_hash

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
#: Bump when the conversion would write a different folder for the same GGUF.
CONVERSION_VERSION = "1"
CONVERSION_INFO = "ragbench-conversion.json"


class LoadedLM(NamedTuple):
    model: Any  # transformers PreTrainedModel, in eval mode
    tokenizer: Any  # transformers tokenizer, with a pad token
    identity: dict[str, Any]


#: how many GGUF conversions this process ran (tests check that a second load converts nothing)
conversions = 0


def models_root(cache_root: str | Path | None = None) -> Path:
    """Where converted models live: `<cache root>/models` ($RAGBENCH_CACHE respected)."""
    return Cache(cache_root).models_dir


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
    key = ("llm", resolved.path, resolved.gguf_file, str(Cache(cache_root).root) if resolved.gguf_file else None,
           device, str(torch_dtype), attn_implementation)
    return shared(key, lambda: _load(name, resolved, device, torch_dtype, attn_implementation, cache_root))


def _load(name: str, resolved: ResolvedModel, device: str, torch_dtype: Any, attn_implementation: str | None,
          cache_root: str | Path | None) -> LoadedLM:
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
    return LoadedLM(model, tokenizer, identity)


def clear_memo() -> None:
    """Forget loaded models (tests; freeing memory between experiments)."""
    forget_loaded("llm")


def load_tokenizer(name: str, cache_root: str | Path | None = None, where: str = "tokenizer") -> tuple[Any, str]:
    """(tokenizer, sha256 of its definition) by bundled name, folder or Hub id, once per process.

    A GGUF's tokenizer comes from its converted folder. The hash identifies the tokenizer in
    cache keys (token-counted corpora); `where` is the option named in the error.
    """
    resolved = resolve(name)
    folder = str(converted_model_dir(name, cache_root)) if resolved.gguf_file else resolved.path

    def load() -> tuple[Any, str]:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as e:
            reason = " ".join(str(e).split())  # one line, as every error
            raise RagbenchError.at(where, f"cannot load tokenizer '{name}' from {folder}: {reason}") from None
        if getattr(tok, "is_fast", False):
            tok.backend_tokenizer.no_truncation()
            tok.backend_tokenizer.no_padding()
            definition = tok.backend_tokenizer.to_str()
        else:
            definition = json.dumps(sorted(tok.get_vocab().items()))
        return tok, hashlib.sha256(definition.encode()).hexdigest()

    return shared(("tokenizer", folder), load)
