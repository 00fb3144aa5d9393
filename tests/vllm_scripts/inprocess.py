"""Run ragbench's in-process vLLM backend over given chats; run with the vLLM venv's python.

    PYTHONPATH=<repo> .venv-vllm/bin/python tests/vllm_scripts/inprocess.py IN.json OUT.json

IN.json: {"model": folder, "chats": [...], "max_tokens": n, "candidates": [...], "prefix": "["}.
OUT.json: {"texts", "logprobs", "prompt_tokens", "context_length", "identity", "seconds"}.
The test compares it with the transformers backend, which cannot share this interpreter (vLLM
pins an older transformers). The main guard matters: vLLM spawns its engine core process.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(src: str, dst: str) -> None:
    from ragbench.llm.base import Sampling
    from ragbench.llm.config import VLLMConfig
    from ragbench.llm.factory import make_llm

    job = json.loads(Path(src).read_text(encoding="utf-8"))
    # CPU-friendly: float32 (as the transformers backend), small context, no graph capture
    llm = make_llm(VLLMConfig(model=job["model"], dtype="float32", max_model_len=2048, enforce_eager=True, cache=False))
    t1 = time.perf_counter()
    context = llm.context_length  # starts the engine
    t2 = time.perf_counter()
    gens = llm.chat(job["chats"], Sampling(max_tokens=job["max_tokens"]))
    t3 = time.perf_counter()
    lps = llm.next_token_logprobs(job["chats"], job["candidates"], prefix=job["prefix"])
    t4 = time.perf_counter()
    out = {"texts": [g.text for g in gens], "finish": [g.finish_reason for g in gens],
           "prompt_tokens": [g.prompt_tokens for g in gens], "logprobs": lps, "context_length": context,
           "count_tokens": llm.count_tokens("Hello world"), "identity": llm.identity(),
           "seconds": {"engine": round(t2 - t1, 1), "chat": round(t3 - t2, 2), "logprobs": round(t4 - t3, 2)}}
    Path(dst).write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
