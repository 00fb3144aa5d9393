"""A chat as the model reads it: the one rendering every backend uses (and vLLM's flags for it).

Request cache keys are made from the chat, not the rendered text, but the three backends must
see the same tokens for the same request: so the chat template, the assistant prefix and a
plain prompt's BOS are handled here once, not once per backend.
"""

from __future__ import annotations

from typing import Any

from ragbench.errors import RagbenchError
from ragbench.llm.base import Chat, plain_text


def template_messages(chat: Chat, prefix: str = "") -> Chat:
    """The messages the template gets for `chat` followed by the start of the reply, `prefix`:
    the prefix becomes the assistant's last message, which the template leaves open."""
    return [*chat, {"role": "assistant", "content": prefix}] if prefix else chat


def template_flags(prefix: str = "") -> dict[str, bool]:
    """Without a prefix the template opens the assistant's turn (the generation prompt); with one it
    continues the last message. transformers' `apply_chat_template`, vLLM's engine and vLLM's server
    take the same two flags."""
    return {"add_generation_prompt": not prefix, "continue_final_message": bool(prefix)}


def render_chat(tokenizer: Any, chat: Chat, prefix: str = "", *, bos: bool = False, model: str = "") -> str:
    """The prompt text for `chat` + `prefix` under the tokenizer's chat template.

    A plain prompt is its text as it is. `bos`: the caller tokenises without special tokens, so
    a plain prompt carries the BOS the tokenizer would add to it (as `tokenizer(prompt)` reads
    it); vLLM adds that BOS itself. A chat template brings its own special tokens.
    """
    text = plain_text(chat)
    if text is not None:
        return (added_bos(tokenizer) if bos else "") + text + prefix
    if getattr(tokenizer, "chat_template", "") is None:
        raise RagbenchError.at("llm.model", f"'{model}' has no chat template; use an instruction-tuned model")
    return tokenizer.apply_chat_template(template_messages(chat, prefix), tokenize=False, **template_flags(prefix))


def added_bos(tokenizer: Any) -> str:
    """The BOS text a tokenizer puts before a plain text ("" when it adds none), found once per tokenizer."""
    bos = getattr(tokenizer, "_ragbench_added_bos", None)
    if bos is None:
        ids = tokenizer("a").input_ids
        adds = tokenizer.bos_token is not None and ids and ids[0] == tokenizer.bos_token_id
        bos = tokenizer.bos_token if adds else ""
        tokenizer._ragbench_added_bos = bos
    return bos
