"""`ragbench validate`: every problem reported as FILE:LINE: yaml.path: message, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ragbench.cli import main
from ragbench.config import load_pipeline, validate_file

REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_pipelines_and_cards_are_valid() -> None:
    files = sorted((REPO / "pipelines").glob("*.yaml")) + sorted((REPO / "tasks").glob("*.yaml"))
    assert files
    result = CliRunner().invoke(main, ["validate", *map(str, files)])
    assert result.exit_code == 0, result.output


def test_every_problem_is_located(tmp_path: Path) -> None:
    p = _write(tmp_path, """\
name: broken
stages:
  - type: bm25
    engine: bm25s
    k1: fast
    colour: blue
  - type: bm26
  - type: bm25
    id: second
    engine: lucene
    variant: robertson
metrics: [nDCG@10, Recall@x]
""")
    lines = [str(x) for x in validate_file(p)]
    text = "\n".join(lines)
    assert f"{p}:5: stages[0].k1: Input should be a valid number" in text
    assert f"{p}:6: stages[0].colour: unknown field for type 'bm25'" in text
    assert f"{p}:7: stages[1].type: unknown type 'bm26' (did you mean 'bm25'?)" in text
    assert f"{p}:8: stages[2]: Value error, variant 'robertson' is not available on engine 'lucene'" in text
    assert f"{p}:12: metrics[1]: unknown metric 'Recall@x'" in text
    assert len(lines) == 5

    result = CliRunner().invoke(main, ["validate", str(p)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == lines


def test_missing_field_wrong_type_and_top_k_order(tmp_path: Path) -> None:
    p = _write(tmp_path, """\
description: no name
stages:
  - type: bm25
""")
    assert [str(x) for x in validate_file(p)] == [f"{p}:1: name: required field is missing"]

    p = _write(tmp_path, """\
name: shallow
stages:
  - type: bm25
    top_k: 10
metrics: [nDCG@10, R@100]
""")
    assert [str(x) for x in validate_file(p)] == [
        f"{p}:5: metrics[1]: R@100 needs rankings of depth 100 but the last stage returns top_k=10"]

    p = _write(tmp_path, "name: x\nstages:\n  - type: bm25\n    input: nowhere\n")
    assert "stages[0].input: input 'nowhere' is not an earlier stage" in str(validate_file(p)[0])

    p = _write(tmp_path, "name: x\nstages: [\n")
    problems = validate_file(p)
    assert len(problems) == 1 and "invalid YAML" in str(problems[0]) and str(problems[0]).startswith(f"{p}:")


def test_task_card_problems(tmp_path: Path) -> None:
    p = _write(tmp_path, """\
name: mine
splits:
  test: {where: {x: 1}, bogus: 2}
default_split: dev
metrics: [nDCG@10]
""", "card.yaml")
    text = "\n".join(map(str, validate_file(p)))
    assert f"{p}:3: splits.test.bogus: unknown field" in text


def test_defaults_are_resolved_and_hash_is_stable() -> None:
    a = load_pipeline(REPO / "pipelines/bm25.yaml")
    b = load_pipeline("bm25")
    assert a.config_hash() == b.config_hash()
    stage = a.as_dict()["stages"][0]
    assert stage["engine"] == "bm25s" and stage["k1"] == 0.9 and stage["analyzer"]["stemmer"] == "porter"


def test_unknown_pipeline_name_lists_known_ones() -> None:
    result = CliRunner().invoke(main, ["validate", "no-such-pipeline"])
    assert result.exit_code == 2
    assert "no-such-pipeline" in result.output


@pytest.mark.parametrize("engine,stemmer", [("lucene", "english"), ("bm25s", "krovetz")])
def test_engine_specific_analyzer_choices_are_checked(tmp_path: Path, engine: str, stemmer: str) -> None:
    p = _write(tmp_path,
               f"name: x\nstages:\n  - type: bm25\n    engine: {engine}\n    analyzer: {{stemmer: {stemmer}}}\n")
    assert len(validate_file(p)) == 1


def test_list_shows_components_options_and_tasks() -> None:
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    engine_row = next(line for line in result.output.splitlines() if line.lstrip().startswith("engine"))
    assert "type: bm25" in result.output and "bm25s |" in engine_row and "rank_bm25" in result.output
    for task in ("scifact", "popqa", "popqa-sample", "litsearch", "frames"):
        assert task in result.output


def test_llm_block_defaults_to_transformers_and_rejects_other_backends_fields(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: ok\nstages:\n  - {type: bm25, top_k: 20}\n"
                  "  - type: first\n    llm: {model: SmolLM2-135M-Instruct}\nmetrics: [nDCG@10]\n")
    assert validate_file(ok) == []
    assert load_pipeline(ok).final.options.llm.backend == "transformers"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nstages:\n  - {type: bm25, top_k: 20}\n"
                   "  - type: icr\n    llm: {backend: openai_server, base_url: http://x/v1}\n"
                   "  - type: listwise\n    llm: {backend: transformers, base_url: http://x/v1}\nmetrics: [nDCG@10]\n")
    problems = [str(p) for p in validate_file(bad)]
    assert any(":5: stages[1].llm: " in p and "only backend 'transformers'" in p for p in problems), problems
    assert any(":7: stages[2].llm.base_url: unknown field for backend 'transformers'" in p for p in problems), problems


def test_set_overrides_stage_fields_and_reports_bad_ones(tmp_path: Path) -> None:
    from ragbench.errors import RagbenchError

    llm = "{backend: openai_server, base_url: http://127.0.0.1:9/v1, model: m}"
    p = load_pipeline("popqa-rag",
                      ["reader.top_k=3", f"reader.llm={llm}", "bm25.analyzer.stemmer=none", "name=renamed"])
    bm25, reader = p.stages
    assert reader.options.top_k == 3 and reader.options.llm.backend == "openai_server"
    assert reader.options.llm.base_url == ["http://127.0.0.1:9/v1"]
    assert bm25.options.analyzer.stemmer == "none" and bm25.options.k1 == 0.9 and p.name == "renamed"
    assert load_pipeline("popqa-rag").stages[1].options.top_k == 5  # the file is untouched
    with pytest.raises(RagbenchError, match="'rerank' is not a stage of .*popqa-rag.yaml \\(stages: bm25, reader\\)"):
        load_pipeline("popqa-rag", ["rerank.top_k=3"])
    with pytest.raises(RagbenchError, match="expected STAGE.key=VALUE"):
        load_pipeline("popqa-rag", ["reader.top_k"])
    with pytest.raises(RagbenchError, match=r"popqa-rag.yaml:\d+: stages\[1\].top_k: Input should be a valid integer"):
        load_pipeline("popqa-rag", ["reader.top_k=many"])
