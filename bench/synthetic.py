"""Synthetic corpora for bench/retrieval.py: text for BM25, SPLADE-like vectors for learned sparse retrieval.

Text: documents of 40-160 tokens drawn from a Zipf(1.07) vocabulary of 30,000 synthetic words (consonant-vowel
syllables ending in "k", which Porter stemming and the stopword list leave alone, so every engine sees the same
30,000 terms). Each query takes 2-6 distinct terms of a random document, never one of the 50 most frequent terms
(so no query term is in more than half the documents, where rank_bm25 and bm25s treat idf differently).

Vectors: documents hold 60-180 terms of a 30,522-term vocabulary (BERT's WordPiece size, as SPLADE), drawn from a
Zipf(1.1) distribution, with log-normal weights (SPLADE's are positive and heavy-tailed); a query takes 8-24
terms of a random document plus 4-12 expansion terms, with its own weights.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import sparse

from ragbench.types import Corpus, Document, Query, TaskData

TEXT_VOCAB = 30_000
ZIPF_S = 1.07
DOC_LEN = (40, 160)
QUERY_LEN = (2, 6)
EXCLUDED_TOP_TERMS = 50
SPARSE_VOCAB = 30_522
DOC_TERMS = (60, 180)
QUERY_TERMS = (8, 24)
EXPANSION = (4, 12)


def make_vocab(rng: np.random.Generator, n: int) -> list[str]:
    consonants, vowels = "bdfghjlmnprstvwz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]
    words: set[str] = set()
    while len(words) < n:
        k = int(rng.integers(2, 4))
        words.add("".join(syllables[i] for i in rng.integers(0, len(syllables), k)) + "k")
    return sorted(words)


def text_task(n_docs: int, n_queries: int, seed: int) -> tuple[TaskData, int]:
    rng = np.random.default_rng(seed)
    words = np.array(make_vocab(rng, TEXT_VOCAB))
    rng.shuffle(words)  # word i has Zipf rank i + 1
    p = np.arange(1, TEXT_VOCAB + 1, dtype=np.float64) ** -ZIPF_S
    p /= p.sum()
    lengths = rng.integers(DOC_LEN[0], DOC_LEN[1] + 1, n_docs)
    token_ids = rng.choice(TEXT_VOCAB, size=int(lengths.sum()), p=p)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    docs = {}
    for i in range(n_docs):
        did = f"d{i:06d}"
        docs[did] = Document(did, " ".join(words[token_ids[bounds[i]:bounds[i + 1]]].tolist()))

    frequent = set(np.argsort(-np.bincount(token_ids, minlength=TEXT_VOCAB))[:EXCLUDED_TOP_TERMS].tolist())
    queries = []
    while len(queries) < n_queries:
        d = int(rng.integers(n_docs))
        candidates = sorted(set(token_ids[bounds[d]:bounds[d + 1]].tolist()) - frequent)
        n = min(int(rng.integers(QUERY_LEN[0], QUERY_LEN[1] + 1)), len(candidates))
        if n < QUERY_LEN[0]:
            continue
        terms = rng.choice(candidates, size=n, replace=False)
        queries.append(Query(f"q{len(queries):05d}", " ".join(words[terms].tolist())))

    params = f"synthetic:{n_docs}:{n_queries}:{seed}:{TEXT_VOCAB}:{ZIPF_S}:{DOC_LEN}:{QUERY_LEN}"
    fingerprint = hashlib.sha256(params.encode()).hexdigest()
    corpus = Corpus(docs, fingerprint, source=params)
    task = TaskData("synthetic-zipf", "test", queries, {}, corpus, params, fingerprint)
    return task, int(lengths.sum())


def _rows(rng: np.random.Generator, n: int, lengths: tuple[int, int], p: np.ndarray) -> sparse.csr_matrix:
    sizes = rng.integers(*lengths, size=n)
    cols = rng.choice(SPARSE_VOCAB, size=int(sizes.sum()), p=p)
    rows = np.repeat(np.arange(n), sizes)
    vals = rng.lognormal(0.0, 0.6, size=len(cols)).astype(np.float32)
    m = sparse.csr_matrix((vals, (rows, cols)), shape=(n, SPARSE_VOCAB), dtype=np.float32)
    m.sum_duplicates()
    return m


def sparse_vectors(n_docs: int, n_queries: int, seed: int) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, SPARSE_VOCAB + 1) ** 1.1
    p /= p.sum()
    docs = _rows(rng, n_docs, DOC_TERMS, p)
    picked = docs[rng.integers(0, n_docs, size=n_queries)].tocsr()
    keep = []
    for i in range(n_queries):  # a random subset of a document's terms, re-weighted
        lo, hi = picked.indptr[i], picked.indptr[i + 1]
        k = min(hi - lo, int(rng.integers(*QUERY_TERMS)))
        keep.append(rng.choice(picked.indices[lo:hi], size=k, replace=False))
    rows = np.repeat(np.arange(n_queries), [len(k) for k in keep])
    base = sparse.csr_matrix((rng.lognormal(0.0, 0.6, len(rows)).astype(np.float32), (rows, np.concatenate(keep))),
                             shape=(n_queries, SPARSE_VOCAB))
    return docs, (base + _rows(rng, n_queries, EXPANSION, p)).tocsr()
