"""SPLADE: learned sparse retrieval with a sentence-transformers `SparseEncoder`.

Source and deviations: docs/methods.md, "SPLADE".

The corpus is encoded with `encode_document` (in parts, cached and resumable, here or on
Ray, see sparse_encoding.py), queries with `encode_query`; a document's score is the dot
product of the two vocabulary-sized vectors. The default model is the bundled splade-tiny (BERT, 2 layers,
vocabulary 30,522); any SPLADE model on the Hub or in a local folder works the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from pydantic import Field

from ragbench.errors import RagbenchError
from ragbench.models import resolve, resolve_device, shared
from ragbench.retrievers.sparse_index import Encoded, SparseOptions, SparseRetriever, to_csr


class SpladeOptions(SparseOptions):
    model: str = Field("splade-tiny", description="SPLADE model: a bundled name, a local folder or a Hub id")
    max_length: int | None = Field(
        None, ge=1, description="tokens per text (default: the model's, 512 for splade-tiny)")


def load_splade(o: SpladeOptions) -> Any:
    """The SparseEncoder for (weights, device, max_length), loaded once per process: stages of later runs, and
    the corpus encoder in a Ray actor, reuse it."""
    resolved = resolve(o.model)
    device = resolve_device(o.device)

    def load() -> Any:
        from sentence_transformers import SparseEncoder

        try:
            encoder = SparseEncoder(resolved.path, device=device)
        except OSError as e:
            msg = f"could not load SPLADE model '{o.model}' from {resolved.path}: {e}"
            raise RagbenchError.at("model", msg) from None
        if o.max_length is not None:
            encoder.max_seq_length = o.max_length
        return encoder

    return shared(("sparse_encoder", resolved.path, device, o.max_length), load)


class Splade(SparseRetriever):
    Options = SpladeOptions
    version = "1"
    options: SpladeOptions

    def load_encoder(self) -> None:
        if getattr(self, "encoder", None) is not None:
            return
        self.resolved = resolve(self.options.model)
        self.encoder = load_splade(self.options)
        # the output dimension (the MLM vocabulary); SpladePooling does not report it itself
        self.vocab_size = int(self._encode(["a"], query=True).shape[1])

    @classmethod
    def document_encoder(cls, options: Any) -> Callable[[list[str]], Encoded]:
        encoder = load_splade(options)

        def encode(texts: list[str]) -> Encoded:
            t = encoder.encode_document(texts, batch_size=options.batch_size, convert_to_sparse_tensor=True,
                                        show_progress_bar=False)
            return to_csr(t, int(t.shape[1])), None

        return encode

    def _encode(self, texts: list[str], query: bool) -> Any:
        encode = self.encoder.encode_query if query else self.encoder.encode_document
        return encode(texts, batch_size=self.options.batch_size, convert_to_sparse_tensor=True, show_progress_bar=False)

    def encoder_key(self) -> Any:
        ident = self.resolved.identity()
        return [ident.get("weights_sha256") or ident["path"], self.encoder.max_seq_length,
                version("sentence-transformers")]

    def vocab(self) -> list[str]:
        tok = self.encoder.tokenizer
        tokens = tok.convert_ids_to_tokens(list(range(self.vocab_size)))
        return [t if t is not None else f"__tok{i}__" for i, t in enumerate(tokens)]

    def encode_queries(self, texts: list[str]) -> Encoded:
        self.load_encoder()
        return to_csr(self._encode(texts, query=True), self.vocab_size), None

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        self.load_encoder()
        ident.update({"model": self.resolved.identity(), "max_length": self.encoder.max_seq_length,
                      "sentence-transformers": version("sentence-transformers")})
        return ident
