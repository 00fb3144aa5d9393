"""Task loading: task cards, local BEIR-style folders, and Hugging Face tables (offline).

Real data comes from /work/shared/data (skipped where absent); every other fixture is
built in tmp_path at test time. The Hugging Face loader is exercised through local
parquet/TSV files and `save_to_disk` folders in the Hub schemas of BEIR, LitSearch and
FRAMES, with the real task cards whose `path`s are pointed at them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragbench import catalog
from ragbench.errors import Problem, RagbenchError
from ragbench.progress import Reporter
from ragbench.tasks import EMBEDDED_DIR, load_task
from ragbench.tasks.card import TaskCard, load_task_card
from ragbench.tasks.hf import split_glued_links, wikipedia_id

# as in conftest.py: $RAGBENCH_DATA, else the shared/data folder beside the repository
SHARED = Path(os.environ.get("RAGBENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared benchmark data not present")


# ----------------------------------------------------------------------------- helpers
class Recorder(Reporter):
    """A Reporter that keeps warnings and log lines instead of printing them."""

    def __init__(self) -> None:
        super().__init__(interactive=False, quiet=True)
        self.warnings: list[str] = []
        self.logs: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def log(self, message: str) -> None:
        self.logs.append(message)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Hub access, no RAGBENCH_DATA from the caller, and a private `datasets` cache."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("RAGBENCH_DATA", raising=False)
    # `datasets` read the environment when it was imported (ragbench.config imports it)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    if hasattr(datasets.config, "HF_DATASETS_OFFLINE"):
        monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        assert next(rows) == ["query-id", "corpus-id", "score"]
        for qid, did, score in rows:
            qrels.setdefault(qid, {})[did] = int(score)
    return qrels


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_folder(root: Path, corpus: list[dict] | None = None, queries: list[dict] | None = None,
                qrels: list[tuple[str, str, int]] | None = None, corpus_name: str = "corpus.jsonl") -> Path:
    """A BEIR-style task folder; defaults: 3 docs, 2 queries, each query judged."""
    corpus = corpus if corpus is not None else [
        {"id": "d1", "title": "Alpha", "text": "alpha text"},
        {"id": "d2", "title": "Beta", "text": "beta text"},
        {"id": "d3", "title": "", "text": "gamma text"},
    ]
    queries = queries if queries is not None else [{"id": "q1", "text": "first?"}, {"id": "q2", "text": "second?"}]
    qrels = qrels if qrels is not None else [("q1", "d1", 1), ("q1", "d2", 2), ("q2", "d3", 1)]
    root.mkdir(parents=True, exist_ok=True)
    if corpus_name:
        write_lines(root / corpus_name, [json.dumps(d) for d in corpus])
    write_lines(root / "queries.jsonl", [json.dumps(q) for q in queries])
    write_lines(root / "qrels.tsv", ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t{s}" for q, d, s in qrels)])
    return root


def only_problem(err: pytest.ExceptionInfo[RagbenchError]) -> Problem:
    assert len(err.value.problems) == 1, err.value.problems
    assert "\n" not in str(err.value)
    return err.value.problems[0]


TINY = TaskCard(name="tiny")


def card_with_paths(tmp_path: Path, task: str, paths: dict[str, str]) -> TaskCard:
    """The real tasks/<task>.yaml with only its hf.<table>.path values replaced."""
    data = yaml.safe_load((catalog.folder("task") / f"{task}.yaml").read_text(encoding="utf-8"))
    for table, path in paths.items():
        assert "path" in data["hf"][table]
        data["hf"][table]["path"] = path
    out = tmp_path / f"{task}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    card, where = load_task_card(out)
    assert where == out
    return card


def write_table(rows: list[dict[str, Any]], dest: Path, fmt: str, split: str | None = None) -> Path:
    """rows as a parquet/TSV file, or a save_to_disk folder (a DatasetDict when split is given)."""
    import datasets
    import pandas as pd

    if fmt == "parquet":
        path = dest.with_suffix(".parquet")
        pd.DataFrame(rows).to_parquet(path, index=False)
    elif fmt == "tsv":
        path = dest.with_suffix(".tsv")
        pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    else:
        path = dest
        ds = datasets.Dataset.from_list(rows)
        (datasets.DatasetDict({split: ds}) if split else ds).save_to_disk(str(path))
    return path


# ----------------------------------------------------------------------------- 1. cards, SciFact, popqa-sample
CARDS = catalog.files("task")


def test_all_cards_found() -> None:
    assert {p.stem for p in CARDS} >= {"scifact", "popqa", "popqa-sample", "litsearch", "frames"}


@pytest.mark.parametrize("path", CARDS, ids=[p.stem for p in CARDS])
def test_every_card_parses(path: Path) -> None:
    card, where = load_task_card(path)
    assert where == path
    assert card.name == path.stem
    assert card.default_split in card.splits
    assert card.metrics
    assert card.embedded or card.hf is not None, "a card needs some data source besides --data"
    by_name, _ = load_task_card(path.stem)  # bare names resolve to the shipped folder
    assert by_name == card


def test_unknown_card_name_lists_known() -> None:
    with pytest.raises(RagbenchError) as err:
        load_task_card("no-such-task")
    assert "scifact" in only_problem(err).message


@pytest.fixture(scope="module")
def scifact_files() -> tuple[list[dict], dict[str, dict[str, int]]]:
    if not SHARED.is_dir():
        pytest.skip("shared benchmark data not present")
    return read_jsonl(SHARED / "scifact/queries.jsonl"), read_qrels(SHARED / "scifact/qrels.tsv")


@pytest.fixture(scope="module")
def scifact_test() -> tuple[Any, Recorder]:
    if not SHARED.is_dir():
        pytest.skip("shared benchmark data not present")
    card, _ = load_task_card("scifact")
    rec = Recorder()
    return load_task(card, data_dir=SHARED / "scifact", reporter=rec), rec


@needs_shared
def test_scifact_default_split_is_dev_claims(scifact_test, scifact_files) -> None:
    task, rec = scifact_test
    rows, file_qrels = scifact_files
    dev = [r for r in rows if r["source_split"] == "dev"]
    assert task.name == "scifact" and task.split == "test"
    assert len(task.queries) == len(dev) == 201
    assert [q.id for q in task.queries] == [r["id"] for r in dev]  # file order
    assert [q.text for q in task.queries] == [r["text"] for r in dev]
    assert all(q.extra["source_split"] == "dev" for q in task.queries)
    assert task.queries[0].extra["cited_doc_ids"] == dev[0]["cited_doc_ids"]
    assert task.qrels == {r["id"]: file_qrels[r["id"]] for r in dev}
    assert task.source == str(SHARED / "scifact")
    assert rec.warnings == []  # every judged doc is in the corpus, every query judged


@needs_shared
def test_scifact_corpus(scifact_test, scifact_files) -> None:
    task, _ = scifact_test
    corpus = task.corpus
    assert corpus is not None and len(corpus) == 5183
    first = read_jsonl(SHARED / "scifact/corpus.jsonl.gz")[0]
    doc = corpus[str(first["id"])]
    assert doc.title == first["title"] and doc.text == first["text"]
    assert doc.extra["sentences"] == first["sentences"]
    assert all(d in corpus for rels in task.qrels.values() for d in rels)
    assert corpus.source.endswith("corpus.jsonl.gz") and len(corpus.fingerprint) == 64


@needs_shared
def test_scifact_train_split(scifact_files) -> None:
    rows, file_qrels = scifact_files
    card, _ = load_task_card("scifact")
    task = load_task(card, "train", data_dir=SHARED / "scifact", need_corpus=False, reporter=Recorder())
    train = [r for r in rows if r["source_split"] == "train"]
    assert len(task.queries) == len(train) == 606
    assert [q.id for q in task.queries] == [r["id"] for r in train]
    assert task.qrels == {r["id"]: file_qrels[r["id"]] for r in train}
    assert task.corpus is None
    assert not {q.id for q in task.queries} & {r["id"] for r in rows if r["source_split"] == "dev"}


@needs_shared
def test_scifact_limit_takes_first_in_file_order(scifact_files, scifact_test) -> None:
    rows, file_qrels = scifact_files
    card, _ = load_task_card("scifact")
    task = load_task(card, data_dir=SHARED / "scifact", limit=7, need_corpus=False, reporter=Recorder())
    dev_ids = [r["id"] for r in rows if r["source_split"] == "dev"]
    assert [q.id for q in task.queries] == dev_ids[:7]
    assert task.qrels == {i: file_qrels[i] for i in dev_ids[:7]}
    again = load_task(card, data_dir=SHARED / "scifact", limit=7, need_corpus=False, reporter=Recorder())
    assert again.fingerprint == task.fingerprint
    other = load_task(card, data_dir=SHARED / "scifact", limit=8, need_corpus=False, reporter=Recorder())
    assert other.fingerprint != task.fingerprint
    assert scifact_test[0].fingerprint != task.fingerprint


@needs_shared
def test_scifact_from_ragbench_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGBENCH_DATA", str(SHARED))
    card, _ = load_task_card("scifact")
    task = load_task(card, need_corpus=False, reporter=Recorder())
    assert task.source == str(SHARED / "scifact")
    assert len(task.queries) == 201


def test_unknown_split() -> None:
    card, _ = load_task_card("scifact")
    with pytest.raises(RagbenchError) as err:
        load_task(card, "validation", need_corpus=False)
    problem = only_problem(err)
    assert "unknown split 'validation'" in problem.message and "test, train" in problem.message


def test_popqa_sample_embedded() -> None:
    card, _ = load_task_card("popqa-sample")
    rec = Recorder()
    task = load_task(card, reporter=rec)
    assert task.source == str(EMBEDDED_DIR / "popqa_sample")
    assert len(task.queries) == 300
    assert task.corpus is not None and len(task.corpus) == 1475
    assert set(task.qrels) == {q.id for q in task.queries}
    assert all(d in task.corpus for rels in task.qrels.values() for d in rels)
    assert all(isinstance(q.extra["answers"], list) and q.extra["answers"] for q in task.queries)
    assert rec.warnings == []


# ----------------------------------------------------------------------------- resolution order
def test_ragbench_data_beats_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path / "env" / "popqa-sample")
    monkeypatch.setenv("RAGBENCH_DATA", str(tmp_path / "env"))
    card, _ = load_task_card("popqa-sample")
    task = load_task(card, reporter=Recorder())
    assert task.source == str(tmp_path / "env" / "popqa-sample")
    assert [q.id for q in task.queries] == ["q1", "q2"]


def test_data_dir_beats_ragbench_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path / "env" / "popqa-sample")
    mine = make_folder(tmp_path / "mine", queries=[{"id": "q2", "text": "only one"}])
    monkeypatch.setenv("RAGBENCH_DATA", str(tmp_path / "env"))
    card, _ = load_task_card("popqa-sample")
    task = load_task(card, data_dir=mine, reporter=Recorder())
    assert task.source == str(mine)
    assert [(q.id, q.text) for q in task.queries] == [("q2", "only one")]


def test_ragbench_data_without_task_falls_back_to_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path / "env" / "some-other-task")
    monkeypatch.setenv("RAGBENCH_DATA", str(tmp_path / "env"))
    card, _ = load_task_card("popqa-sample")
    task = load_task(card, need_corpus=False, reporter=Recorder())
    assert task.source == str(EMBEDDED_DIR / "popqa_sample")
    assert len(task.queries) == 300


def test_local_folder_beats_hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    card = TaskCard.model_validate({"name": "hubby", "hf": {"queries": {"path": str(tmp_path / "absent.parquet")}}})
    with pytest.raises(RagbenchError) as err:  # the hf spec is what is tried without a folder ...
        load_task(card, need_corpus=False)
    assert "absent.parquet" in only_problem(err).file
    make_folder(tmp_path / "env" / "hubby")  # ... and a folder under RAGBENCH_DATA wins over it
    monkeypatch.setenv("RAGBENCH_DATA", str(tmp_path / "env"))
    task = load_task(card, reporter=Recorder())
    assert task.source == str(tmp_path / "env" / "hubby") and len(task.queries) == 2


def test_no_data_anywhere() -> None:
    with pytest.raises(RagbenchError) as err:
        load_task(TINY)
    problem = only_problem(err)
    assert "no data found" in problem.message and "--data" in problem.message and "RAGBENCH_DATA" in problem.message


def test_data_dir_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=tmp_path / "nope")
    problem = only_problem(err)
    assert problem.file == str(tmp_path / "nope") and "--data" in problem.message


# --------------------------------------------------------- 2. LitSearch without a corpus; FRAMES with its gold articles
@needs_shared
@pytest.mark.parametrize(("split", "specificity", "count"),
                         [("full", None, 450), ("specific", 1, 338), ("broad", 0, 112)])
def test_litsearch_local_splits(split: str, specificity: int | None, count: int) -> None:
    rows = read_jsonl(SHARED / "litsearch/queries.jsonl")
    file_qrels = read_qrels(SHARED / "litsearch/qrels.tsv")
    card, _ = load_task_card("litsearch")
    task = load_task(card, None if split == "full" else split, data_dir=SHARED / "litsearch", need_corpus=False,
                     reporter=Recorder())
    want = [r for r in rows if specificity is None or r["specificity"] == specificity]
    assert task.split == split and task.corpus is None
    assert len(task.queries) == len(want) == count
    assert [q.id for q in task.queries] == [r["id"] for r in want]
    assert task.qrels == {r["id"]: file_qrels[r["id"]] for r in want}
    assert all(sorted(task.qrels[r["id"]]) == sorted(r["corpusids"]) for r in want)


@needs_shared
def test_frames_local_questions_only() -> None:
    rows = read_jsonl(SHARED / "frames/queries.jsonl")
    card, _ = load_task_card("frames")
    task = load_task(card, data_dir=SHARED / "frames", need_corpus=False, reporter=Recorder())
    assert len(task.queries) == len(rows) == 621
    assert task.corpus is None  # a closed-book run never reads the 21 MB of articles
    assert task.qrels == read_qrels(SHARED / "frames/qrels.tsv")
    assert all(d.startswith("enwiki:") for rels in task.qrels.values() for d in rels)
    assert task.queries[0].extra["answer"] == rows[0]["answer"]


@needs_shared
def test_frames_local_corpus_holds_every_gold_article() -> None:
    """FRAMES' README: 2,460 crawled gold articles; every qrels id is one of them (dropped otherwise)."""
    card, _ = load_task_card("frames")
    rec = Recorder()
    task = load_task(card, data_dir=SHARED / "frames", reporter=rec)
    assert task.corpus is not None and len(task.corpus) == 2460
    judged = {d for rels in task.qrels.values() for d in rels}
    assert judged <= set(task.corpus)
    assert sum(len(r) for r in task.qrels.values()) == 1957 and len(task.qrels) == 621
    assert rec.warnings == []
    doc = task.corpus["enwiki:Joplin_tornado"]  # a redirect target (2011_Joplin_tornado)
    assert doc.title and len(doc.text.split()) > 100


@needs_shared
@pytest.mark.parametrize(("task_name", "mentions"), [
    ("litsearch", ["princeton-nlp/LitSearch", "corpus_clean"]),
    ("frames", ["enwiki:<Title_with_underscores>"]),
])
def test_missing_corpus_says_how_to_provide_one(task_name: str, mentions: list[str], tmp_path: Path) -> None:
    card, _ = load_task_card(task_name)
    folder = SHARED / task_name
    if (folder / "corpus.jsonl.gz").exists():  # FRAMES ships its articles: a copy without them
        folder = tmp_path / task_name
        folder.mkdir()
        for name in ("queries.jsonl", "qrels.tsv"):
            (folder / name).write_bytes((SHARED / task_name / name).read_bytes())
    with pytest.raises(RagbenchError) as err:
        load_task(card, data_dir=folder, need_corpus=True)
    problem = only_problem(err)
    text = str(err.value)
    assert problem.file.startswith(str(folder))
    assert str(folder) in text
    assert f"task '{task_name}' has no corpus" in text
    assert "corpus.jsonl" in text and "--data" in text
    for m in mentions:
        assert m in text


# ----------------------------------------------------------------------------- 3. bad input, warnings
@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_corpus_line_not_json(tmp_path: Path, name: str) -> None:
    folder = make_folder(tmp_path / "t", corpus_name="")
    good = json.dumps({"id": "d1", "text": "x"})
    write_lines(folder / name, [good, "", '{"id": "d2", "text": "y"', json.dumps({"id": "d3", "text": "z"})])
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder)
    problem = only_problem(err)
    assert problem.file == str(folder / name)
    assert problem.line == 3
    assert "not valid JSON" in problem.message
    assert str(err.value).startswith(f"{folder / name}:3: ")


def test_corpus_line_not_an_object(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "t", corpus_name="")
    write_lines(folder / "corpus.jsonl", [json.dumps({"id": "d1", "text": "x"}), json.dumps(["d2", "y"])])
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder)
    problem = only_problem(err)
    assert (problem.file, problem.line) == (str(folder / "corpus.jsonl"), 2)


def test_missing_queries_file(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "t")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder)
    problem = only_problem(err)
    assert problem.file == str(folder / "queries.jsonl")
    assert "file not found" in problem.message


def test_missing_qrels_file(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "t")
    (folder / "qrels.tsv").unlink()
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder)
    problem = only_problem(err)
    assert problem.file == str(folder / "qrels.tsv") and "file not found" in problem.message


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_query_text(tmp_path: Path, text: str | None) -> None:
    queries = [{"id": "q1", "text": "fine"}, {"id": "q2", **({} if text is None else {"text": text})}]
    folder = make_folder(tmp_path / "t", queries=queries)
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder)
    problem = only_problem(err)
    assert (problem.file, problem.line, problem.path) == (str(folder / "queries.jsonl"), 2, "text")
    assert "'q2'" in problem.message


def test_query_without_id(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "t", queries=[{"id": "q1", "text": "a"}, {"text": "b"}])
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder)
    problem = only_problem(err)
    assert (problem.line, problem.path) == (2, "id")


def test_duplicate_query_id(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "t", queries=[{"id": "q1", "text": "a"}, {"id": "q1", "text": "b"}])
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder)
    problem = only_problem(err)
    assert (problem.line, problem.path) == (2, "id") and "duplicate query id 'q1'" in problem.message


def test_qrels_score_not_integer(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "t")
    write_lines(folder / "qrels.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td3\trelevant"])
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder)
    problem = only_problem(err)
    assert (problem.file, problem.line, problem.path) == (str(folder / "qrels.tsv"), 3, "score")
    assert "'relevant'" in problem.message


def test_qrels_wrong_column_count(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "t")
    write_lines(folder / "qrels.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td3"])
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder)
    problem = only_problem(err)
    assert (problem.line, "2 columns" in problem.message) == (3, True)


def test_duplicate_doc_id(tmp_path: Path) -> None:
    corpus = [{"id": "d1", "text": "a"}, {"_id": "d2", "text": "b"}, {"id": "d3", "text": "c"},
              {"id": "d2", "text": "again"}]
    folder = make_folder(tmp_path / "t", corpus=corpus)
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder)
    problem = only_problem(err)
    assert (problem.file, problem.line, problem.path) == (str(folder / "corpus.jsonl"), 4, "id")
    assert "duplicate document id 'd2'" in problem.message


def test_doc_without_text(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "t", corpus=[{"id": "d1", "text": "a"}, {"id": "d2", "title": "t"}])
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder)
    problem = only_problem(err)
    assert (problem.line, problem.path) == (2, "text")


def test_good_folder_loads_everything(tmp_path: Path) -> None:
    corpus = [{"_id": 1, "title": "One", "text": "uno", "lang": "es"}, {"id": "2", "text": "dos"}]
    folder = make_folder(tmp_path / "t", corpus=corpus, queries=[{"_id": 7, "text": "seven", "meta": 1}],
                         qrels=[("7", "1", 2), ("7", "2", 0)], corpus_name="corpus.jsonl.gz")
    rec = Recorder()
    task = load_task(TINY, data_dir=folder, reporter=rec)
    assert [(q.id, q.text, q.extra) for q in task.queries] == [("7", "seven", {"meta": 1})]
    assert task.qrels == {"7": {"1": 2, "2": 0}}
    assert task.corpus is not None and list(task.corpus) == ["1", "2"]
    assert (task.corpus["1"].title, task.corpus["1"].text, task.corpus["1"].extra) == ("One", "uno", {"lang": "es"})
    assert task.corpus["2"].title == ""
    assert rec.warnings == []


def test_trec_qrels_and_per_split_qrels_files(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "t", queries=[{"id": "q1", "text": "a"}, {"id": "q2", "text": "b"}])
    write_lines(folder / "qrels" / "dev.tsv", ["q2 0 d2 1"])  # TREC format, no header
    card = TaskCard.model_validate({"name": "tiny", "splits": {"test": {}, "dev": {}}})
    test = load_task(card, "test", data_dir=folder, reporter=Recorder())
    assert test.qrels == {"q1": {"d1": 1, "d2": 2}, "q2": {"d3": 1}}  # qrels.tsv
    rec = Recorder()
    dev = load_task(card, "dev", data_dir=folder, reporter=rec)  # qrels/dev.tsv wins
    assert [q.id for q in dev.queries] == ["q2"] and dev.qrels == {"q2": {"d2": 1}}
    assert any("1 of 2 queries have no qrels" in w for w in rec.warnings)


def test_where_without_fields_takes_split_from_qrels(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "t")
    card = TaskCard.model_validate({"name": "tiny", "splits": {"test": {"where": {"source_split": "dev"}}}})
    rec = Recorder()
    task = load_task(card, data_dir=folder, reporter=rec)
    assert [q.id for q in task.queries] == ["q1", "q2"]
    assert any("no field(s) source_split" in m for m in rec.logs)


def test_queries_without_qrels_are_skipped_with_warning(tmp_path: Path) -> None:
    queries = [{"id": "q1", "text": "a"}, {"id": "q2", "text": "b"}, {"id": "q3", "text": "c"}]
    folder = make_folder(tmp_path / "t", queries=queries, qrels=[("q1", "d1", 1), ("q3", "d2", 1)])
    rec = Recorder()
    task = load_task(TINY, data_dir=folder, reporter=rec)
    assert [q.id for q in task.queries] == ["q1", "q3"]
    assert set(task.qrels) == {"q1", "q3"}
    assert len(rec.warnings) == 1
    assert "1 of 3 queries have no qrels" in rec.warnings[0] and "skipped" in rec.warnings[0]
    assert str(folder / "qrels.tsv") in rec.warnings[0]


def test_qrels_docs_missing_from_corpus_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path / "t", qrels=[("q1", "d1", 1), ("q1", "ghost", 1), ("q2", "d3", 1)])
    task = load_task(TINY, data_dir=folder, reporter=Reporter(interactive=False))
    assert task.qrels["q1"] == {"d1": 1, "ghost": 1}  # kept: a missing doc counts as not retrieved
    err = capsys.readouterr().err
    assert "[ragbench] warning:" in err
    assert "1 of 3 judged documents are not in the corpus" in err
    assert str(folder / "corpus.jsonl") in err


def test_no_query_has_qrels(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "t", qrels=[("other", "d1", 1)])
    with pytest.raises(RagbenchError) as err:
        load_task(TINY, data_dir=folder, reporter=Recorder())
    problem = only_problem(err)
    assert problem.file == str(folder / "qrels.tsv") and "no query of task 'tiny' has qrels" in problem.message


# ----------------------------------------------------------------------------- 4. HF loader, BEIR Hub schema
BEIR_CORPUS = [
    {"_id": "101", "title": "Doc one", "text": "text one"},
    {"_id": "102", "title": "Doc two", "text": "text two"},
    {"_id": "103", "title": "", "text": "text three"},
    {"_id": "104", "title": "Doc four", "text": "text four"},
]
BEIR_QUERIES = [{"_id": str(i), "text": f"claim {i}"} for i in range(1, 6)]  # "5" is judged nowhere
BEIR_QRELS = {  # the Hub's BeIR/*-qrels have integer ids
    "test": [{"query-id": 1, "corpus-id": 101, "score": 1}, {"query-id": 1, "corpus-id": 102, "score": 2},
             {"query-id": 2, "corpus-id": 103, "score": 1}],
    "train": [{"query-id": 3, "corpus-id": 104, "score": 1}, {"query-id": 4, "corpus-id": 101, "score": 1}],
}
BEIR_WANT = {
    "test": {"1": {"101": 1, "102": 2}, "2": {"103": 1}},
    "train": {"3": {"104": 1}, "4": {"101": 1}},
}


def beir_tables(root: Path, fmt: str) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":  # files have no splits: the qrels file is the test split's
        return {"corpus": str(write_table(BEIR_CORPUS, root / "corpus", fmt)),
                "queries": str(write_table(BEIR_QUERIES, root / "queries", fmt)),
                "qrels": str(write_table(BEIR_QRELS["test"], root / "qrels-test", fmt))}
    import datasets

    qrels = datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in BEIR_QRELS.items()})
    qrels.save_to_disk(str(root / "qrels"))
    return {"corpus": str(write_table(BEIR_CORPUS, root / "corpus", fmt, split="corpus")),
            "queries": str(write_table(BEIR_QUERIES, root / "queries", fmt, split="queries")),
            "qrels": str(root / "qrels")}


@pytest.mark.parametrize("fmt", ["parquet", "disk"])
def test_hf_beir_schema_through_scifact_card(tmp_path: Path, fmt: str) -> None:
    paths = beir_tables(tmp_path / "hub", fmt)
    card = card_with_paths(tmp_path, "scifact", paths)
    assert card.hf is not None and card.hf.qrels is not None and card.hf.qrels.split == "{split}"
    rec = Recorder()
    task = load_task(card, reporter=rec)
    assert task.split == "test"
    assert [(q.id, q.text) for q in task.queries] == [("1", "claim 1"), ("2", "claim 2")]
    assert task.qrels == BEIR_WANT["test"]
    assert task.source == f"hf:{paths['queries']}"
    assert task.corpus is not None and list(task.corpus) == ["101", "102", "103", "104"]
    assert (task.corpus["102"].title, task.corpus["102"].text) == ("Doc two", "text two")
    assert task.corpus["103"].title == "" and task.corpus["101"].extra == {}
    assert task.corpus.source == f"hf:{paths['corpus']}"
    assert any("no field(s) source_split" in m for m in rec.logs)  # Hub queries: split from qrels
    assert any("3 of 5 queries have no qrels" in w for w in rec.warnings)
    if fmt == "disk":  # {split} picks the qrels split of the DatasetDict
        train = load_task(card, "train", need_corpus=False, reporter=Recorder())
        assert [q.id for q in train.queries] == ["3", "4"]
        assert train.qrels == BEIR_WANT["train"] and train.corpus is None
        assert train.fingerprint != task.fingerprint


def test_hf_corpus_store_keeps_the_fingerprint_rule_and_is_reused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub corpus is streamed into the Arrow store once; its fingerprint is the sha256 of each row's
    [id, title, text] as before, and a repeated id is one located line."""
    from ragbench.cache import Cache
    from ragbench.tasks import hf

    card = card_with_paths(tmp_path, "scifact", beir_tables(tmp_path / "hub", "parquet"))
    cache = Cache(tmp_path / "cache")
    task = load_task(card, reporter=Recorder(), cache=cache)
    digest = hashlib.sha256()
    for r in BEIR_CORPUS:
        digest.update(json.dumps([r["_id"], r["title"], r["text"]]).encode())
    assert task.corpus is not None and task.corpus.fingerprint == digest.hexdigest()

    def fail(*args: object) -> None:
        raise AssertionError("converted the table again instead of reading the cache")

    with monkeypatch.context() as patch:  # undoes this patch alone, not the `offline` fixture's
        patch.setattr(hf, "_convert", fail)
        again = load_task(card, reporter=Recorder(), cache=cache)
    assert again.corpus is not None and again.corpus.store.folder == task.corpus.store.folder
    assert again.fingerprint == task.fingerprint

    dup = card_with_paths(tmp_path / "dup", "scifact", {
        **beir_tables(tmp_path / "dup" / "hub", "parquet"),
        "corpus": str(write_table([*BEIR_CORPUS, {"_id": "102", "title": "", "text": "again"}],
                                  tmp_path / "dup" / "corpus2", "parquet"))})
    with pytest.raises(RagbenchError) as err:
        load_task(dup, reporter=Recorder(), cache=cache)
    problem = only_problem(err)
    assert "corpus2" in problem.file and "duplicate document id '102' (row 4)" in problem.message


def test_a_local_table_rewritten_under_the_same_mtime_is_read_again(tmp_path: Path) -> None:
    """`datasets` alone would serve the first table again: it keys a local file by path and mtime."""
    from ragbench.tasks.card import HFSource
    from ragbench.tasks.hf import load_table

    src = HFSource(path=str(write_table(BEIR_CORPUS, tmp_path / "corpus", "parquet")), split="train")
    first = Path(src.path).stat()
    assert len(load_table(src, "test")) == len(BEIR_CORPUS)
    write_table([*BEIR_CORPUS, {"_id": "105", "title": "", "text": "new"}], tmp_path / "corpus", "parquet")
    os.utime(src.path, ns=(first.st_atime_ns, first.st_mtime_ns))
    assert len(load_table(src, "test")) == len(BEIR_CORPUS) + 1


def test_hf_split_of_card_split_and_templating(tmp_path: Path) -> None:
    paths = beir_tables(tmp_path / "hub", "disk")
    card = TaskCard.model_validate({
        "name": "beirish",
        "hf": {
            "corpus": {"path": paths["corpus"], "split": "corpus", "fields": {"id": "_id"}},
            "queries": {"path": paths["queries"], "split": "queries", "fields": {"id": "_id"}},
            "qrels": {"path": paths["qrels"], "split": "{split}",
                      "fields": {"query_id": "query-id", "doc_id": "corpus-id", "score": "score"}},
        },
        "splits": {"dev": {"hf_split": "test"}, "train": {}, "validation": {}},
        "default_split": "dev",
    })
    dev = load_task(card, reporter=Recorder())  # card split 'dev' reads the Hub split 'test'
    assert dev.split == "dev" and dev.qrels == BEIR_WANT["test"]
    train = load_task(card, "train", need_corpus=False, reporter=Recorder())  # no hf_split: same name
    assert train.qrels == BEIR_WANT["train"]
    with pytest.raises(RagbenchError) as err:  # a split the DatasetDict does not have
        load_task(card, "validation", need_corpus=False, reporter=Recorder())
    problem = only_problem(err)
    assert paths["qrels"] in problem.file and "validation" in problem.file
    assert "no split 'validation'" in problem.message and "test" in problem.message


def test_hf_qrels_without_score_column_default_to_one(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    root.mkdir()
    queries = write_table([{"qid": "a", "question": "what?"}], root / "q", "parquet")
    qrels = write_table([{"qid": "a", "doc": "x"}, {"qid": "a", "doc": "y"}], root / "r", "parquet")
    card = TaskCard.model_validate({"name": "noscore", "hf": {
        "queries": {"path": str(queries), "fields": {"id": "qid", "text": "question"}},
        "qrels": {"path": str(qrels), "fields": {"query_id": "qid", "doc_id": "doc"}},
    }})
    task = load_task(card, need_corpus=False, reporter=Recorder())
    assert task.qrels == {"a": {"x": 1, "y": 1}}
    with pytest.raises(RagbenchError) as err:  # and asking for a corpus the card has none of
        load_task(card, reporter=Recorder())
    assert "task 'noscore' has no corpus" in only_problem(err).message


def test_hf_unmapped_column_names_the_field(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    root.mkdir()
    queries = write_table([{"_id": "1", "question": "what?"}], root / "q", "parquet")
    card = TaskCard.model_validate(
        {"name": "badmap", "hf": {"queries": {"path": str(queries), "fields": {"id": "_id"}}}})
    with pytest.raises(RagbenchError) as err:
        load_task(card, need_corpus=False)
    problem = only_problem(err)
    assert problem.path == "fields.text"
    assert "column 'text' not found" in problem.message and "question" in problem.message


def test_hf_empty_query_text(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    root.mkdir()
    rows = [{"_id": "1", "text": "ok", "rel": "d"}, {"_id": "2", "text": " ", "rel": "d"}]
    queries = write_table(rows, root / "q", "parquet")
    fields = {"id": "_id", "relevant": "rel"}
    card = TaskCard.model_validate({"name": "blank", "hf": {"queries": {"path": str(queries), "fields": fields}}})
    with pytest.raises(RagbenchError) as err:
        load_task(card, need_corpus=False)
    problem = only_problem(err)
    assert problem.file == str(queries) and "'2' (row 1)" in problem.message and problem.path.startswith("fields.text")


# ----------------------------------------------------------------------------- 5. LitSearch Hub schema
LIT_QUERIES = [
    {"query_set": "inline_acl", "query": "Which paper introduced method X?", "specificity": 1, "quality": 2,
     "corpusids": [2001]},
    {"query_set": "manual_acl", "query": "Papers about broad topic Y", "specificity": 0, "quality": 1,
     "corpusids": [2002, 2003]},
    {"query_set": "manual_iclr", "query": "The paper that proposed Z", "specificity": 1, "quality": 2,
     "corpusids": [2004]},
    # not in corpus
    {"query_set": "inline_nonacl", "query": "Work on W", "specificity": 0, "quality": 1, "corpusids": [9999]},
]
LIT_CORPUS = [
    {"corpusid": 2000 + i, "title": f"Paper {i}", "abstract": f"Abstract of paper {i}.",
     "citations": [2000 + j for j in range(1, 6) if j != i], "full_paper": f"Full text {i}"}
    for i in range(1, 6)
]


@pytest.mark.parametrize(("fmt", "id_type"), [("parquet", int), ("disk", str), ("parquet", str), ("disk", int)])
def test_litsearch_hub_schema(tmp_path: Path, fmt: str, id_type: type) -> None:
    root = tmp_path / "hub"
    root.mkdir()
    rows = [{**r, "corpusids": [id_type(c) for c in r["corpusids"]]} for r in LIT_QUERIES]
    paths = {"queries": str(write_table(rows, root / "query", fmt, split="full")),
             "corpus": str(write_table(LIT_CORPUS, root / "corpus_clean", fmt, split="full"))}
    card = card_with_paths(tmp_path, "litsearch", paths)
    assert card.hf is not None and card.hf.queries.name == "query" and card.hf.queries.path == paths["queries"]

    rec = Recorder()
    full = load_task(card, reporter=rec)
    assert full.split == "full"
    assert [q.id for q in full.queries] == ["0", "1", "2", "3"]  # __index__ = row number
    assert [q.text for q in full.queries] == [r["query"] for r in LIT_QUERIES]
    assert full.queries[1].extra == {"query_set": "manual_acl", "specificity": 0, "quality": 1}
    assert full.qrels == {"0": {"2001": 1}, "1": {"2002": 1, "2003": 1}, "2": {"2004": 1}, "3": {"9999": 1}}
    corpus = full.corpus
    assert corpus is not None and list(corpus) == ["2001", "2002", "2003", "2004", "2005"]
    assert corpus["2003"].title == "Paper 3" and corpus["2003"].text == "Abstract of paper 3."
    assert corpus["2003"].contents() == "Paper 3 Abstract of paper 3."
    assert corpus["2003"].extra["full_paper"] == "Full text 3"
    assert list(corpus["2003"].extra["citations"]) == [2001, 2002, 2004, 2005]
    assert len(rec.warnings) == 1 and "1 of 5 judged documents are not in the corpus" in rec.warnings[0]

    specific = load_task(card, "specific", need_corpus=False, reporter=Recorder())
    assert [q.id for q in specific.queries] == ["0", "2"]
    assert specific.qrels == {"0": {"2001": 1}, "2": {"2004": 1}}
    broad = load_task(card, "broad", need_corpus=False, reporter=Recorder())
    assert [q.id for q in broad.queries] == ["1", "3"]
    assert broad.qrels == {"1": {"2002": 1, "2003": 1}, "3": {"9999": 1}}
    assert len({full.fingerprint, specific.fingerprint, broad.fingerprint}) == 3

    limited = load_task(card, "broad", limit=1, need_corpus=False, reporter=Recorder())
    assert [q.id for q in limited.queries] == ["1"]


# ----------------------------------------------------------------------------- 6. FRAMES Hub schema
def _frames_row(i: int, prompt: str, answer: str, links: list[str], reasoning: str) -> dict[str, Any]:
    row: dict[str, Any] = {"Unnamed: 0": i, "Prompt": prompt, "Answer": answer}
    for k in range(1, 5):
        row[f"wikipedia_link_{k}"] = links[k - 1] if k <= len(links) else None
    row["reasoning_types"] = reasoning
    row["wiki_links"] = str(links)  # a Python list literal, as on the Hub
    return row


FRAMES_ROWS = [
    _frames_row(0, "Whose niece was the first lady for James Buchanan?", "Harriet Lane", [
        "https://en.wikipedia.org/wiki/James_Buchanan",
        "https://en.m.wikipedia.org/wiki/Harriet_Lane",
        "https://en.wikipedia.org/wiki/James_Buchanan#Presidency_(1857%E2%80%931861)",  # same page again
    ], "Multiple constraints"),
    _frames_row(1, "Which cafe and which groundhog?", "Café de Flore", [
        "https://en.wikipedia.org/wiki/Caf%C3%A9_de_Flore",
        "https://en.wikipedia.org/wiki/United_States_Capitol#History",
        "https://en.wikipedia.org/w/index.php?title=Punxsutawney_Phil&oldid=1234",
        "https://en.wikipedia.org/wiki/iPhone",
    ], "Temporal reasoning | Numerical reasoning"),
    _frames_row(2, "Who introduced VAR, and where?", "FIFA", [
        "https://simple.wikipedia.org/wiki/Video_assistant_referee",
        "https://en.wikipedia.org/wiki/association_football",
        "https://w.wiki/ASFv",
        "https://en.wikipedia.org/w/index.php?search=Polytrichum+piliferum&title=Special:Search&profile=advanced&fulltext=1&ns0=1",
        "https://de.wikipedia.org/wiki/Fleckvieh",
    ], "Multiple constraints"),
]
FRAMES_WANT = {
    "0": {"enwiki:James_Buchanan": 1, "enwiki:Harriet_Lane": 1},
    "1": {"enwiki:Café_de_Flore": 1, "enwiki:United_States_Capitol": 1, "enwiki:Punxsutawney_Phil": 1,
          "enwiki:IPhone": 1},
    "2": {"enwiki:Association_football": 1},
}


@pytest.mark.parametrize("fmt", ["parquet", "tsv", "disk"])
def test_frames_hub_schema(tmp_path: Path, fmt: str) -> None:
    root = tmp_path / "hub"
    root.mkdir()
    path = write_table(FRAMES_ROWS, root / "test", fmt, split="test")
    card = card_with_paths(tmp_path, "frames", {"queries": str(path)})
    assert card.hf is not None and card.hf.relevant_format == "wikipedia_urls"
    rec = Recorder()
    task = load_task(card, need_corpus=False, reporter=rec)
    assert [q.id for q in task.queries] == ["0", "1", "2"]
    assert [q.text for q in task.queries] == [r["Prompt"] for r in FRAMES_ROWS]
    assert task.qrels == FRAMES_WANT
    assert list(task.qrels["1"]) == list(FRAMES_WANT["1"])  # link order kept
    extra = task.queries[1].extra
    assert extra["Answer"] == "Café de Flore" and extra["reasoning_types"] == "Temporal reasoning | Numerical reasoning"
    assert "Prompt" not in extra and "wiki_links" not in extra
    assert rec.warnings == []
    with pytest.raises(RagbenchError) as err:  # the card has no Hub corpus
        load_task(card, reporter=Recorder())
    problem = only_problem(err)
    assert problem.file == "task frames"
    assert "task 'frames' has no corpus" in problem.message and "--data" in problem.message
    assert "enwiki:<Title_with_underscores>" in problem.message


@pytest.mark.parametrize(("url", "want"), [
    ("https://en.wikipedia.org/wiki/James_Buchanan", "enwiki:James_Buchanan"),
    ("http://en.wikipedia.org/wiki/James_Buchanan", "enwiki:James_Buchanan"),
    ("  https://en.wikipedia.org/wiki/James_Buchanan\n", "enwiki:James_Buchanan"),
    ("https://en.m.wikipedia.org/wiki/Harriet_Lane", "enwiki:Harriet_Lane"),
    ("https://en.wikipedia.org/wiki/Caf%C3%A9_de_Flore", "enwiki:Café_de_Flore"),
    ("https://en.wikipedia.org/wiki/Zhang%20Yimou", "enwiki:Zhang_Yimou"),
    ("https://en.wikipedia.org/wiki/100%25_(song)", "enwiki:100%_(song)"),
    ("https://en.wikipedia.org/wiki/AT%26T", "enwiki:AT&T"),
    ("https://en.wikipedia.org/wiki/United_States_Capitol#History", "enwiki:United_States_Capitol"),
    ("https://en.wikipedia.org/wiki/Cattle#Etymology%20and%20names", "enwiki:Cattle"),
    ("https://en.wikipedia.org/wiki/iPhone", "enwiki:IPhone"),
    ("https://en.wikipedia.org/wiki/ångström", "enwiki:Ångström"),
    ("https://en.wikipedia.org/w/index.php?title=Punxsutawney_Phil", "enwiki:Punxsutawney_Phil"),
    ("https://en.wikipedia.org/w/index.php?title=Harriet+Lane&oldid=1", "enwiki:Harriet_Lane"),
    ("https://en.wikipedia.org/w/index.php?title=Caf%C3%A9&action=edit", "enwiki:Café"),
    ("https://en.wikipedia.org/w/index.php?title=100%25_(song)", "enwiki:100%_(song)"),
    ("https://simple.wikipedia.org/wiki/Video_assistant_referee", None),
    ("https://de.wikipedia.org/wiki/Fleckvieh", None),
    ("https://w.wiki/ASFv", None),
    ("https://en.wikipedia.org/w/index.php?search=Polytrichum+piliferum&title=Special:Search&ns0=1", None),
    ("https://en.wikipedia.org/wiki/Special:Search?search=moss", None),
    ("https://en.wikipedia.org/w/index.php?oldid=1", None),
    ("https://en.wikipedia.org/wiki/", None),
    ("https://en.wikipedia.org/", None),
    ("https://example.org/wiki/James_Buchanan", None),
    ("https://notwikipedia.org/wiki/James_Buchanan", None),
    ("not a url", None),
])
def test_wikipedia_id(url: str, want: str | None) -> None:
    assert wikipedia_id(url) == want


@needs_shared
def test_wikipedia_id_reproduces_shared_frames_qrels() -> None:
    """The rule documented in frames/README.md, applied to every shared question: each link
    normalised by `wikipedia_id`, glued links ("url1, url2") split, each id mapped through
    redirects.tsv, and kept when the corpus has the page."""
    redirects = dict(line.split("\t") for line in (SHARED / "frames/redirects.tsv").read_text().splitlines()[1:])
    with gzip.open(SHARED / "frames/corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        pages = {json.loads(line)["id"] for line in f}
    unmapped, dropped = [], 0
    for row in read_jsonl(SHARED / "frames/queries.jsonl"):
        ids: list[str] = []
        for url in (u for link in row["wiki_links"] for u in split_glued_links(link)):
            wid = wikipedia_id(url)
            if wid is None:
                unmapped.append(url)
                continue
            wid = redirects.get(wid, wid)
            if wid not in pages:
                dropped += 1
            elif wid not in ids:
                ids.append(wid)
        assert ids == row["relevant_ids"], row["id"]
    hosts = sorted(u.split("/")[2] for u in unmapped)
    assert hosts == ["en.wikipedia.org", "simple.wikipedia.org", "w.wiki"]  # the search URL, as the README says
    assert dropped >= 45  # README: 45 gold ids over 11 questions have no crawled page (some repeat within a question)


@pytest.mark.parametrize(("link", "want"), [
    ("https://en.wikipedia.org/wiki/A", ["https://en.wikipedia.org/wiki/A"]),
    ("https://en.wikipedia.org/wiki/A, https://en.wikipedia.org/wiki/B,", ["https://en.wikipedia.org/wiki/A", "https://en.wikipedia.org/wiki/B"]),
    ("https://en.wikipedia.org/wiki/Crosby,_Stills,_Nash_%26_Young", ["https://en.wikipedia.org/wiki/Crosby,_Stills,_Nash_%26_Young"]),
    ("https://en.wikipedia.org/wiki/X,https://en.m.wikipedia.org/wiki/Y", ["https://en.wikipedia.org/wiki/X", "https://en.m.wikipedia.org/wiki/Y"]),
])
def test_split_glued_links(link: str, want: list[str]) -> None:
    assert split_glued_links(link) == want


def test_hub_frames_glued_links_become_several_qrels(tmp_path: Path) -> None:
    rows = [_frames_row(0, "Which stadiums?", "Two", ["https://en.wikipedia.org/wiki/Tim_Salmon, https://en.wikipedia.org/wiki/Troy_Glaus"],
                        "Multiple constraints")]
    root = tmp_path / "hub"
    root.mkdir()
    queries = write_table(rows, root / "test", "parquet", split="test")
    card = card_with_paths(tmp_path, "frames", {"queries": str(queries)})
    task = load_task(card, need_corpus=False, reporter=Recorder())
    assert task.qrels == {"0": {"enwiki:Tim_Salmon": 1, "enwiki:Troy_Glaus": 1}}