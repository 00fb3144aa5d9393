"""How a document becomes prompt text: which fields are shown, where the title goes, the word cap, whitespace.

Each method lays a passage out the way its authors (or an earlier ragbench) did, and a rendered
prompt is part of an LLM request's cache key, so every layout is kept exactly as it is and named here:

- `titled` (readers): "Title: {title}\\n{body}", or the body alone when the title is empty; every
  field stripped, the non-title fields joined by spaces.
- `titled_raw` (the faithfulness judge's context): the same with nothing stripped.
- `title_line` (ICR, the authors' scripts): "{title}\\n{body}" stripped as a whole, the body cut to
  `max_words` pieces of `split(' ')` (newlines and runs of spaces kept); the body alone, stripped,
  when `fields` has no title.
- `rank_llm` (listwise, FIRST: `_convert_doc_to_prompt_content`): "Title: {title} Content: {body}",
  the body's fields stripped and joined by ': ', the whole repaired by ftfy and cut to `max_words`
  whitespace words, title and labels counted.
- `plain` (cross-encoder, `passage_format: plain`): the fields, title included, stripped, empty
  ones dropped, joined by ': ', cut to `max_words` whitespace words.
- `words` (relevance judge, has_answer): the fields joined by spaces as a retriever indexes them
  (`Document.contents`), cut to `max_words` whitespace words when a cap is given.

`max_words` None means no cap. A layout's title is shown only when `fields` names "title"; the
other fields are the document's text ("text") or its extra fields, in `fields` order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from ragbench.types import Document

PassageLayout = Literal["titled", "titled_raw", "title_line", "rank_llm", "plain", "words"]
TITLE_TEXT = ("title", "text")


def field_text(doc: Document, name: str) -> str:
    """One field as text: the title, the text, or an extra field ("" when the document lacks it)."""
    if name == "title":
        return doc.title or ""
    if name == "text":
        return doc.text or ""
    return str(doc.extra.get(name, ""))


def cut_words(text: str, n: int | None) -> str:
    """The first n whitespace-separated words, joined by single spaces (RankGPT, rank_llm); n None: unchanged."""
    return text if n is None else " ".join(text.split()[:n])


def cut_spaces(text: str, n: int | None) -> str:
    """The ICR authors' cut: the first n pieces of text.split(' '), newlines and runs of spaces kept as they are."""
    return text if n is None else " ".join(text.split(" ")[:n])


def title_line(title: str, body: str, max_words: int | None, with_title: bool = True) -> str:
    """ICR's passage: (title + "\\n" + cut body).strip(), or the cut body stripped where titles are not shown (fiqa)."""
    cut = cut_spaces(body, max_words)
    return f"{title}\n{cut}".strip() if with_title else cut.strip()


def rank_llm_passage(title: str, content: str, max_words: int | None) -> str:
    """A passage as rank_llm lays it out (`_convert_doc_to_prompt_content`).

    `Title: {title} Content: {content}` when the title is non-empty, else the content alone;
    mojibake repaired with ftfy (rank_llm's `fix_text`); then whitespace collapsed and the
    first `max_words` words kept, the title and both labels counting as words.
    """
    from ftfy import fix_text

    text = f"Title: {title} Content: {content}" if title else content
    return cut_words(fix_text(text.strip()), max_words)


def _body(doc: Document, fields: Sequence[str]) -> list[str]:
    return [field_text(doc, f) for f in fields if f != "title"]


def _titled(doc: Document, fields: Sequence[str], max_words: int | None, strip: bool = True) -> str:
    title = field_text(doc, "title") if "title" in fields else ""
    parts = _body(doc, fields)
    if strip:
        title, parts = title.strip(), [p.strip() for p in parts]
    body = cut_words(" ".join(parts), max_words)
    return f"Title: {title}\n{body}" if title else body


def _titled_raw(doc: Document, fields: Sequence[str], max_words: int | None) -> str:
    return _titled(doc, fields, max_words, strip=False)


def _title_line(doc: Document, fields: Sequence[str], max_words: int | None) -> str:
    return title_line(field_text(doc, "title"), " ".join(_body(doc, fields)), max_words, with_title="title" in fields)


def _rank_llm(doc: Document, fields: Sequence[str], max_words: int | None) -> str:
    title = field_text(doc, "title") if "title" in fields else ""  # not stripped: rank_llm tests the raw title
    content = ": ".join(p.strip() for p in _body(doc, fields) if p.strip())
    return rank_llm_passage(title, content, max_words)


def _plain(doc: Document, fields: Sequence[str], max_words: int | None) -> str:
    text = ": ".join(p.strip() for p in (field_text(doc, f) for f in fields) if p.strip())
    return cut_words(text, max_words)


def _words(doc: Document, fields: Sequence[str], max_words: int | None) -> str:
    return cut_words(doc.contents(tuple(fields)), max_words)


_LAYOUTS: dict[str, Callable[[Document, Sequence[str], int | None], str]] = {
    "titled": _titled, "titled_raw": _titled_raw, "title_line": _title_line,
    "rank_llm": _rank_llm, "plain": _plain, "words": _words,
}


def render(doc: Document | None, layout: PassageLayout, fields: Sequence[str] = TITLE_TEXT,
           max_words: int | None = None) -> str:
    """The document as prompt text in a named layout ("" for a document the corpus does not have)."""
    return "" if doc is None else _LAYOUTS[layout](doc, fields, max_words)
