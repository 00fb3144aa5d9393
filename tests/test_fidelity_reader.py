"""Fidelity of the reader to its authors' code: how a reply becomes the answer (PopQA, LongRAG)
and PopQA's own few-shot prompt (Mallen et al.). Expected values are worked by hand from the
authors' rules; each test's docstring names the rule and the file it comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragbench.cache import Cache
from ragbench.errors import RagbenchError
from ragbench.llm.base import plain_prompt
from ragbench.progress import Reporter
from ragbench.readers.answer_rules import clean_answer, longrag_answer, popqa_answer
from ragbench.readers.fewshot import DemoSampler, PopQAPromptOptions, popqa_prompt
from ragbench.readers.reader import Reader
from ragbench.stage import StageEnv
from ragbench.types import Corpus, Document, Query, Ranking, TaskData


@pytest.mark.parametrize(("reply", "answer"), [
    ("Answer: Paris\nFinal answer: Lyon", "Paris"),        # the first marker wins (the old rule took Lyon)
    ("The answer: Paris. Answer: Lyon", "Paris. Answer: Lyon"),  # the rest of the line after the first one
    ("ANSWER:\nParis\nmore", "Paris"),                     # the one whitespace may be a newline
    ("Answer:  Paris", " Paris"),                          # exactly one whitespace consumed, nothing stripped
    ("answer:Paris", "answer:Paris"),                      # no whitespace after it: no match, reply kept whole
    ("Shortanswer: Paris", "Shortanswer: Paris"),          # not at a word start: no match
    ("  Paris, France\nsecond line\n", "  Paris, France\nsecond line\n"),  # no marker: the reply unchanged
])
def test_longrag_takes_the_line_after_the_first_answer_marker(reply: str, answer: str) -> None:
    """LongRAG's post_process (TIGER-AI-Lab/LongRAG, utils/gpt_inference.py, same in gemini_ and
    claude_inference.py): re.search(r"(?i)(?<=\\banswer:\\s).*", text) -> the match, else the text."""
    assert longrag_answer(reply) == answer


@pytest.mark.parametrize(("reply", "answer"), [
    (" politician\nQ: What is X's occupation? A: singer", " politician"),
    ("\nParis", ""),                     # an empty first line is an empty prediction (the old rule took Paris)
    ("\n\nParis\nLyon", "Paris"),        # one leading blank line is dropped
    ("\n\n\nParis", ""),                 # only one: what is left starts with a newline
    ("Paris", "Paris"),
    ("", ""),
])
def test_popqa_takes_the_first_line(reply: str, answer: str) -> None:
    """Mallen et al.'s cut (AlexTMallen/adaptive-retrieval, run_model.py, call_model / call_request):
    drop a leading "\\n\\n" if the generation starts with it, then split("\\n")[0]; no strip."""
    assert popqa_answer(reply) == answer


def test_the_old_rule_differs_where_the_authors_do() -> None:
    """The lenient rule (ragbench's earlier default) takes the last marker and the first non-empty line:
    the cases above are where it and the authors' rules part."""
    assert clean_answer("Answer: Paris\nFinal answer: Lyon") == "Lyon"
    assert clean_answer("\nParis") == "Paris"


def _reader(tmp_path: Path, **options) -> Reader:
    return Reader(Reader.Options.model_validate(options), StageEnv(Cache(tmp_path), Reporter(quiet=True), "reader"))


def test_default_rule_follows_the_method(tmp_path: Path) -> None:
    """One step: PopQA's rule (run_model.py); LongRAG's two steps: LongRAG's rule (utils/gpt_inference.py)."""
    assert _reader(tmp_path).rule == "popqa"
    assert _reader(tmp_path, steps=2).rule == "longrag"
    assert _reader(tmp_path, steps=2, answer_rule="lenient").rule == "lenient"
    with pytest.raises(ValueError, match="steps: 1"):
        Reader.Options.model_validate({"steps": 2, "popqa": {}})


def _pool(relations: int, per_relation: int) -> list[Query]:
    return [Query(f"r{r}q{i}", f"Question {i} of relation {r}?", {"prop": f"rel{r}", "obj": f"obj{r}.{i}"})
            for r in range(relations) for i in range(per_relation)]


@pytest.mark.parametrize(("relations", "per_relation"), [(16, 3), (2, 20), (4, 6)])
def test_fifteen_demos_from_other_relations(relations: int, per_relation: int) -> None:
    """run_model.py (templated mode): for a test question, examples_per_template = 15 // 15 = 1 question
    from each of the 15 relations other than its own, then shuffled. With R other relations ragbench
    spreads the 15 as evenly as it can (16 relations: one each, the authors' draw)."""
    pool = _pool(relations, per_relation)
    sampler = DemoSampler(pool, PopQAPromptOptions(shots=15, seed=633))
    for q in pool[::per_relation]:
        demos = sampler.draw(q)
        assert len(demos) == 15 and len({d.id for d in demos}) == 15
        assert all(d.extra["prop"] != q.extra["prop"] and d.id != q.id and d.text != q.text for d in demos)
        counts = sorted(sum(d.extra["prop"] == f"rel{r}" for d in demos)
                        for r in range(relations) if f"rel{r}" != q.extra["prop"])
        assert max(counts) - min(counts) <= 1
        again = DemoSampler(list(pool), PopQAPromptOptions(shots=15, seed=633))
        assert [d.id for d in again.draw(q)] == [d.id for d in demos]  # deterministic for a seed
    if relations == 16:
        assert all(c == 1 for c in counts)
    other_seed = DemoSampler(pool, PopQAPromptOptions(shots=15, seed=634))
    assert any([d.id for d in other_seed.draw(q)] != [d.id for d in sampler.draw(q)] for q in pool[::per_relation])


def test_demos_of_a_question_do_not_depend_on_the_pool_order_or_batch() -> None:
    """ragbench's own sampler is seeded per (seed, question id) and reads each relation in task order:
    the same question gets the same demos whichever batch it is in."""
    pool = _pool(3, 10)
    a = DemoSampler(pool, PopQAPromptOptions(shots=15, seed=7))
    b = DemoSampler(pool, PopQAPromptOptions(shots=15, seed=7))
    assert [d.id for d in a.draw(pool[4])] == [d.id for d in b.draw(pool[4])]
    assert [d.id for d in a.draw(pool[4])] != [d.id for d in a.draw(pool[5])]


def test_any_other_question_mode_and_too_small_pools() -> None:
    """run_model.py's non-templated mode: knowledge[knowledge.question != row.question].sample(n=15)."""
    pool = _pool(1, 16)
    with pytest.raises(RagbenchError, match="no relation other than"):
        DemoSampler(pool, PopQAPromptOptions()).draw(pool[0])
    demos = DemoSampler(pool, PopQAPromptOptions(other_relations=False)).draw(pool[0])
    assert len(demos) == 15 and pool[0].id not in {d.id for d in demos}
    with pytest.raises(RagbenchError, match="fewer than the 15"):
        DemoSampler(_pool(2, 10), PopQAPromptOptions()).draw(_pool(2, 10)[0])


def test_popqa_prompt_layout() -> None:
    """run_model.py: few_shot_examples_text = "\\n\\n".join(demos) + "\\n\\n", each demo "Q: {question} A: {obj}";
    vanilla: examples + "Q: {q} A:"; BM25: examples + paragraph + "\\n\\n" + "Q: {q} A:"; no demos: no blank line."""
    demos = [("Who is A?", "x"), ("In what city was B born?", "Paris")]
    assert popqa_prompt("What is C's occupation?", demos, None) == (
        "Q: Who is A? A: x\n\nQ: In what city was B born? A: Paris\n\nQ: What is C's occupation? A:")
    assert popqa_prompt("What is C's occupation?", demos[:1], "C was a Welsh poet.") == (
        "Q: Who is A? A: x\n\nC was a Welsh poet.\n\nQ: What is C's occupation? A:")
    assert popqa_prompt("What is C's occupation?", [], None) == "Q: What is C's occupation? A:"


def _tiny_task() -> TaskData:
    queries = [Query("1", "What is Ann Lee's occupation?",
                     {"prop": "occupation", "obj": "painter", "answers": ["painter"]}),
               Query("2", "In what city was Bo Chan born?",
                     {"prop": "place of birth", "obj": "Lyon", "answers": ["Lyon"]})]
    docs = {"d1": Document("d1", "Ann Lee is a painter from Ohio.", "Ann Lee"),
            "d2": Document("d2", "Bo Chan was born in Lyon.", "Bo Chan")}
    return TaskData("tiny", "test", queries, {"1": {"d1": 1}, "2": {"d2": 1}}, Corpus(docs, "tiny-corpus"),
                    "test", "tiny")


def test_closed_book_and_retrieval_prompts_for_a_tiny_task(tmp_path: Path) -> None:
    """run_model.py's vanilla and BM25 prompts as the reader builds them (no model needed): one demo from
    the other relation (here its only question), the top-1 paragraph's text (fields: [text]) before the question."""
    task = _tiny_task()
    closed = _reader(tmp_path, closed_book=True, popqa={"shots": 1, "seed": 633})
    closed.prepare_prompts(task)
    q1, q2 = task.queries
    assert closed.first_chat(q1, [], retrieved=False) == plain_prompt(  # text for the model to continue, no chat turn
        "Q: In what city was Bo Chan born? A: Lyon\n\nQ: What is Ann Lee's occupation? A:")
    as_chat = _reader(tmp_path, closed_book=True, popqa={"shots": 1, "seed": 633, "chat": True})
    as_chat.prepare_prompts(task)
    assert as_chat.first_chat(q1, [], retrieved=False) == [
        {"role": "user", "content": "Q: In what city was Bo Chan born? A: Lyon\n\nQ: What is Ann Lee's occupation? A:"}]
    rag = _reader(tmp_path, top_k=1, fields=["text"], popqa={"shots": 1, "seed": 633})
    rag.prepare_prompts(task)
    assert rag.first_chat(q2, [("d1", rag.passage("d1"))], retrieved=True)[0]["content"] == (
        "Q: What is Ann Lee's occupation? A: painter\n\nAnn Lee is a painter from Ohio.\n\n"
        "Q: In what city was Bo Chan born? A:")
    fifteen = _reader(tmp_path, closed_book=True, popqa={"seed": 633})
    fifteen.prepare_prompts(TaskData("t", "test", _pool(2, 20), {}, None, "test", "t"))
    content = fifteen.first_chat(_pool(2, 20)[0], [], retrieved=False)[0]["content"]
    blocks = content.split("\n\n")
    assert len(blocks) == 16 and blocks[-1] == "Q: Question 0 of relation 0? A:"
    assert all(b.startswith("Q: ") and " of relation 1? A: obj1." in b for b in blocks[:-1])


@pytest.mark.slow
def test_the_reader_answers_the_popqa_prompt_with_smollm2(tmp_path: Path, smollm2_dir: Path) -> None:
    """The reader with `popqa:` sends the authors' prompt (one demo per other relation, here the only other
    question; the top-1 paragraph's text before the question) and cuts the reply with PopQA's rule."""
    task = _tiny_task()
    popqa, llm = {"shots": 1, "seed": 633}, {"model": str(smollm2_dir)}  # the bundled SmolLM2, already converted
    closed = _reader(tmp_path, closed_book=True, popqa=popqa, max_new_tokens=15, llm=llm)
    closed.prepare(task)
    out = closed.process(task.queries, [])
    assert out["1"].prompts[0][0]["content"] == ("Q: In what city was Bo Chan born? A: Lyon\n\n"
                                                 "Q: What is Ann Lee's occupation? A:")
    assert out["2"].prompts[0][0]["content"] == ("Q: What is Ann Lee's occupation? A: painter\n\n"
                                                 "Q: In what city was Bo Chan born? A:")
    assert all(a.text == popqa_answer(a.outputs[0]) and not a.retrieved for a in out.values())

    rag = _reader(tmp_path, top_k=1, fields=["text"], popqa=popqa, max_new_tokens=15, llm=llm)
    rag.prepare(task)
    rankings = {"1": Ranking("1", ["d1", "d2"], [2.0, 1.0]), "2": Ranking("2", ["d1", "d2"], [2.0, 1.0])}
    out = rag.process(task.queries, [rankings])
    assert out["2"].prompts[0][0]["content"] == ("Q: What is Ann Lee's occupation? A: painter\n\n"
                                                 "Ann Lee is a painter from Ohio.\n\n"
                                                 "Q: In what city was Bo Chan born? A:")
    assert out["2"].context_ids == ["d1"] and out["2"].text == popqa_answer(out["2"].outputs[0])


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "popqa" / "queries.jsonl").exists(), reason="shared PopQA data not present")
def test_demos_come_from_the_whole_split_whatever_the_limit(tmp_path: Path) -> None:
    """run_model.py draws demonstrations from the whole dataset. A `--limit 5` run must ask question 0
    exactly what the full run asks (else its cached batches would differ by which run filled the cache),
    and the stage's cache key follows the split's questions, not the limit."""
    import dataclasses

    from ragbench.config import load_pipeline
    from ragbench.pipeline import stage_key
    from ragbench.tasks import load_task
    from ragbench.tasks.card import load_task_card

    card, _ = load_task_card("popqa")
    full = load_task(card, data_dir=SHARED / "popqa", need_corpus=False)
    limited = load_task(card, data_dir=SHARED / "popqa", limit=5, need_corpus=False)
    assert len(limited.queries) == 5 and len(limited.pool) == len(full.pool) == len(full.queries)
    readers = []
    for task in (full, limited):
        reader = _reader(tmp_path, closed_book=True, popqa={"seed": 633})
        reader.prepare_prompts(task)
        readers.append(reader.first_chat(task.queries[0], [], retrieved=False))
    assert readers[0] == readers[1]  # the first 334 questions are all 'occupation': demos come from beyond --limit

    (spec,) = load_pipeline(Path("pipelines/popqa-paper-closed-book.yaml")).stages
    (zero_shot,) = load_pipeline(Path("pipelines/popqa-closed-book.yaml")).stages
    edited = dataclasses.replace(full, pool=full.pool[:-1], pool_fingerprint="another pool")
    assert stage_key(spec, [], limited) == stage_key(spec, [], full) != stage_key(spec, [], edited)
    assert stage_key(zero_shot, [], full) == stage_key(zero_shot, [], edited)  # zero-shot: no demos, no pool in the key
