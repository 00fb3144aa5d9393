"""SPLADE: learned sparse retrieval with a sentence-transformers `SparseEncoder`.

Source and deviations: docs/methods.md, "SPLADE".

The corpus is encoded with `encode_document` (in batches, cached and resumable, see
sparse_index.py), queries with `encode_query`; a document's score is the dot product of the
two vocabulary-sized vectors. The default model is the bundled splade-tiny (BERT, 2 layers,
vocabulary 30,522); any SPLADE model on the Hub or in a local folder works the same way.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from pydantic import Field

from ragbench.errors import RagbenchError
from ragbench.models import resolve
from ragbench.retrievers.sparse_index import Encoded, SparseOptions, SparseRetriever, to_csr


class SpladeOptions(SparseOptions):
    model: str = Field("splade-tiny", description="SPLADE model: a bundled name, a local folder or a Hub id")
    max_length: int | None = Field(None, ge=1, description="tokens per text (default: the model's, 512 for splade-tiny)")


_ENCODERS: dict[tuple[str, str, int | None], Any] = {}


class Splade(SparseRetriever):
    Options = SpladeOptions
    version = "1"
    options: SpladeOptions

    def load_encoder(self) -> None:
        if getattr(self, "encoder", None) is not None:
            return
        o = self.options
        self.resolved = resolve(o.model)
        memo = (self.resolved.path, o.device, o.max_length)
        if memo not in _ENCODERS:
            from sentence_transformers import SparseEncoder

            try:
                encoder = SparseEncoder(self.resolved.path, device=o.device)
            except OSError as e:
                raise RagbenchError.at("model", f"could not load SPLADE model '{o.model}' from {self.resolved.path}: {e}") from None
            if o.max_length is not None:
                encoder.max_seq_length = o.max_length
            _ENCODERS[memo] = encoder
        self.encoder = _ENCODERS[memo]
        # the output dimension (the MLM vocabulary); SpladePooling does not report it itself
        self.vocab_size = int(self.encoder.encode_query(["a"], convert_to_sparse_tensor=True, show_progress_bar=False).shape[1])

    def encoder_key(self) -> Any:
        ident = self.resolved.identity()
        return [ident.get("weights_sha256") or ident["path"], self.encoder.max_seq_length, version("sentence-transformers")]

    def vocab(self) -> list[str]:
        tok = self.encoder.tokenizer
        tokens = tok.convert_ids_to_tokens(list(range(self.vocab_size)))
        return [t if t is not None else f"__tok{i}__" for i, t in enumerate(tokens)]

    def encode_documents(self, texts: list[str]) -> Encoded:
        emb = self.encoder.encode_document(texts, batch_size=self.options.batch_size, convert_to_sparse_tensor=True, show_progress_bar=False)
        return to_csr(emb, self.vocab_size), None

    def encode_queries(self, texts: list[str]) -> Encoded:
        self.load_encoder()
        emb = self.encoder.encode_query(texts, batch_size=self.options.batch_size, convert_to_sparse_tensor=True, show_progress_bar=False)
        return to_csr(emb, self.vocab_size), None

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        self.load_encoder()
        ident.update({"model": self.resolved.identity(), "max_length": self.encoder.max_seq_length,
                      "sentence-transformers": version("sentence-transformers")})
        return ident
