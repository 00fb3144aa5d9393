"""Every registered stage type through the stage contract, in the manner of scikit-learn's
`parametrize_with_checks`: parametrised over the registry, so a new stage is checked with no new test.

Each type is run for real on a tiny task (2 PopQA questions, 12 paragraphs) inside the smallest pipeline
its contract allows (its inputs are BM25 rankings, or a reader's answers): LLM stages on a 2-layer Llama
with SmolLM2's tokenizer and random weights (conftest `tiny_llm_dir`), the other stages on the bundled
models. `FAST` only shrinks work (depths, token counts, grids); a type without an entry runs with its defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ragbench import registry
from ragbench.cache import Cache
from ragbench.config import parse_pipeline
from ragbench.outputs import Answers, DerivedCorpus, Output, Rankings
from ragbench.pipeline import run_pipeline
from ragbench.progress import Reporter
from ragbench.stage import Contract, CorpusStage
from ragbench.tasks import load_task
from ragbench.tasks.card import load_task_card
from ragbench.types import Corpus, TaskData
from ragbench.yamlio import LocatedYaml

LLM = {"backend": "transformers", "model": "{llm}"}
#: options that only make a type's run small; never needed for correctness
FAST: dict[str, dict[str, Any]] = {
    "bm25": {"top_k": 8},
    "dense": {"top_k": 8},
    "splade": {"top_k": 8},
    "llm_sparse": {"top_k": 8, "model": "{llm}"},
    "fusion": {"top_k": 8},
    "maxp": {"top_k": 4},
    "multi_step": {"steps": 1, "queries_per_step": 2, "docs_per_query": 2, "question_docs": 2, "max_new_tokens": 24,
                   "top_k": 8, "llm": LLM},
    "listwise": {"top_k": 4, "window": 4, "stride": 2, "max_new_tokens": 24, "llm": LLM},
    "first": {"top_k": 4, "window": 4, "stride": 2, "llm": LLM},
    "icr": {"top_k": 4, "llm": LLM},
    "cross_encoder": {"top_k": 4, "max_words": 50},
    "reader": {"top_k": 2, "max_new_tokens": 8, "llm": LLM},
    "judge": {"max_new_tokens": 8, "llm": LLM},
    "relevance_judge": {"depth": 2, "max_new_tokens": 4, "llm": LLM},
    "hard_negatives": {"m": [0, 1], "k": [1, 2], "random": False, "reorder": [False], "max_new_tokens": 8, "llm": LLM},
    "long_units": {"max_tokens": 256, "tokenizer": "{llm}"},
}
#: required options with no default (cross_encoder: no trained model ships offline, conftest builds one)
REQUIRED = {"cross_encoder": {"model": "{cross_encoder}"}}


def _tiny_task() -> TaskData:
    task = load_task(load_task_card("popqa-sample")[0], limit=2)
    assert task.corpus is not None
    gold = [d for q in task.queries for d in task.qrels.get(q.id, {})]
    keep = list(dict.fromkeys(gold + task.corpus.id_at(range(12 - len(gold)))))
    corpus = Corpus.from_documents([task.corpus[d] for d in keep], f"{task.corpus.fingerprint}:first{len(keep)}",
                                   task.corpus.source)
    return TaskData(task.name, task.split, task.queries, task.qrels, corpus, task.source, f"{task.fingerprint}:tiny",
                    task.answers_field, task.pool, task.pool_fingerprint)


def _stage(type_name: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_name, **FAST.get(type_name, {}), **extra}


def _pipeline_for(type_name: str, models: dict[str, str] | None = None) -> dict[str, Any]:
    """The smallest pipeline that feeds this type what its contract says it reads; `models` fills the
    {llm} and {cross_encoder} placeholders."""
    contract: Contract = registry.get(type_name).contract
    low, high = contract.inputs
    n = max(low, 1) if high else 0
    stages: list[dict[str, Any]] = []
    under_test: dict[str, Any] = {}
    if contract.regroups:  # units made of the documents its input ranks
        stages = [_stage("long_units", id="units"), _stage("bm25")]
        under_test = {"corpus": "units"}
    elif contract.consumes is not None and issubclass(Rankings, contract.consumes):
        stages = [_stage("bm25", id=f"bm25_{i}", k1=0.9 + 0.1 * i) for i in range(n)]
    elif contract.consumes is not None and issubclass(Answers, contract.consumes):
        stages = [_stage("bm25"), _stage("reader")]
    inputs = {"inputs": [s.get("id", s["type"]) for s in stages[-n:]]} if n else {}
    data = {"name": f"contract-{type_name}",
            "stages": [*stages, _stage(type_name, id="under_test", **inputs, **under_test,
                                       **REQUIRED.get(type_name, {}))]}
    text = json.dumps(data)
    for name, path in (models or {"llm": "a-model", "cross_encoder": "a-model"}).items():
        text = text.replace("{" + name + "}", path)
    return json.loads(text)


TYPES = registry.names()


@pytest.mark.parametrize("type_name", TYPES)
def test_declaration(type_name: str) -> None:
    """Options reject unknown fields; the version is set; the contract names output types and input counts."""
    cls = registry.get(type_name)
    with pytest.raises(ValidationError) as err:
        cls.Options.model_validate({"no_such_option": 1})
    assert any(e["type"] == "extra_forbidden" for e in err.value.errors())
    assert isinstance(cls.version, str) and cls.version
    contract = cls.contract
    assert isinstance(contract, Contract) and contract.kind
    assert issubclass(contract.produces, Output) and contract.produces is not Output
    low, high = contract.inputs
    assert 0 <= low <= high
    assert (contract.consumes is None) == (high == 0), "a stage reads inputs exactly when it declares what it reads"
    assert issubclass(cls, CorpusStage) == issubclass(contract.produces, DerivedCorpus)


@pytest.mark.parametrize("type_name", TYPES)
def test_runs_to_its_declared_output_and_reruns_from_cache(type_name: str, tmp_path: Path, tiny_llm_dir: Path,
                                                          request: pytest.FixtureRequest) -> None:
    """The type's output matches its declaration, identity and resolved options are serialisable, and a
    rerun on the same cache computes nothing and returns equal output."""
    models = {"llm": str(tiny_llm_dir)}
    if type_name == "cross_encoder":
        models["cross_encoder"] = str(request.getfixturevalue("local_cross_encoder"))
    data = _pipeline_for(type_name, models)
    pipeline, problems = parse_pipeline(LocatedYaml(data, {}, f"{type_name}.yaml"))
    assert not problems, [str(p) for p in problems]
    assert pipeline is not None
    task = _tiny_task()
    first = run_pipeline(pipeline, task, Cache(tmp_path / "cache"), Reporter(quiet=True), batch_size=1)
    under_test = first.final
    cls = registry.get(type_name)
    assert isinstance(under_test.output, cls.contract.produces)
    yaml.safe_dump(json.loads(json.dumps(under_test.identity)))  # what config.lock.yaml holds
    json.dumps(pipeline.as_dict())
    again = run_pipeline(pipeline, task, Cache(tmp_path / "cache"), Reporter(quiet=True), batch_size=1)
    assert all(s.cached for s in again.stages)
    if isinstance(under_test.output, DerivedCorpus):
        assert again.final.output.view.corpus.fingerprint == under_test.output.view.corpus.fingerprint
        assert again.final.output.view.qrels == under_test.output.view.qrels
    else:
        computed, rerun = under_test.output.computed, again.final.output.computed
        records = [computed[q.id] for q in task.queries if q.id in computed]
        assert records, f"{type_name} produced nothing for the tiny task"
        produced = cls.contract.produces
        assert produced.dump(records) == produced.dump([rerun[r.qid] for r in records])


def test_every_registry_entry_has_a_recipe_that_validates() -> None:
    """Each type's smallest pipeline is valid (so the run check above really covers every entry)."""
    for type_name in TYPES:
        _, problems = parse_pipeline(LocatedYaml(_pipeline_for(type_name), {}, "x.yaml"))
        assert not problems, (type_name, [str(p) for p in problems])
