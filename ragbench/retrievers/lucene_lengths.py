"""bm25s scoring with the document lengths Lucene stores, so that bm25s ranks as the lucene engine does.

Lucene keeps one byte per document for its length (`SmallFloat.intToByte4`, used by `BM25Similarity.computeNorm`):
lengths below 24 exactly, longer ones as 24 plus their excess cut to its 4 leading bits. Its BM25 scores a term
idf * tf / (tf + k1 * (1 - b + b * length / avgdl)) with that decoded length, avgdl = total tokens / docCount, and
docCount and the idf's N counting only documents with at least one token. docs/methods.md, "BM25", has the source.
bm25s documents `build_index_from_ids` as the place to build its index another way; this class does that.
"""

from __future__ import annotations

import itertools
from typing import Any

import bm25s
import numpy as np
from scipy import sparse

#: SmallFloat.intToByte4 stores lengths below this exactly
EXACT_BELOW = 24
#: ... and the excess above it with this many significant bits
SIGNIFICANT_BITS = 4


def lucene_lengths(lengths: np.ndarray) -> np.ndarray:
    """Document lengths as Lucene decodes them from their one-byte norm."""
    lengths = np.asarray(lengths, dtype=np.int64)
    excess = np.maximum(lengths - EXACT_BELOW, 0)
    shift = np.maximum(np.frexp(excess)[1] - SIGNIFICANT_BITS, 0)  # frexp's exponent: the bit length (exact < 2**53)
    return np.where(lengths < EXACT_BELOW, lengths, EXACT_BELOW + ((excess >> shift) << shift))


class LuceneLengthsBM25(bm25s.BM25):
    """bm25s's index for method 'lucene', each document's length taken as Lucene stores it."""

    def build_index_from_ids(self, unique_token_ids: list[int], corpus_token_ids: list[list[int]],
                             show_progress: bool = True, leave_progress: bool = False) -> dict[str, Any]:
        if self.method != "lucene":
            raise ValueError(f"Lucene's lengths apply to method 'lucene', not '{self.method}'")
        self.nonoccurrence_array = None  # what bm25s's own build sets for methods other than bm25l and bm25+
        lengths = np.fromiter(map(len, corpus_token_ids), dtype=np.int64, count=len(corpus_token_ids))
        terms = np.fromiter(itertools.chain.from_iterable(corpus_token_ids), dtype=np.int32, count=int(lengths.sum()))
        docs = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
        tf = sparse.csc_matrix((np.ones(len(terms), dtype=np.float32), (docs, terms)),
                               shape=(len(lengths), len(unique_token_ids)))
        del terms, docs
        tf.sum_duplicates()  # column t: the documents holding term t, with its frequency in each
        n = max(1, int(np.count_nonzero(lengths)))  # Lucene's docCount: documents with a token
        avgdl = lengths.sum() / n
        df = np.diff(tf.indptr)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        norm = self.k1 * (1 - self.b + self.b * lucene_lengths(lengths) / avgdl)
        freq = tf.data.astype(np.float64)
        data = np.repeat(idf, df) * freq / (freq + norm[tf.indices])
        return {"data": data.astype(self.dtype), "indices": tf.indices.astype(self.int_dtype),
                "indptr": tf.indptr, "num_docs": len(lengths)}
