"""Causal language models shared by stages: backends are built by `factory.make_llm`; loading (and GGUF
conversion) lives in `loading`."""

from ragbench.llm.loading import DEFAULT_MODEL, LoadedLM, converted_model_dir, load_causal_lm

__all__ = ["DEFAULT_MODEL", "LoadedLM", "converted_model_dir", "load_causal_lm"]
