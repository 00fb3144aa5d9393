"""Statement-level judging (docs/methods.md, Statement-level faithfulness and correctness (Ispas et al.)): the
parser P counts labels with the paper's regexes, and scores are the stated ratios. Hand-written replies, so every
expected value is worked by hand."""

from __future__ import annotations

import json

import pytest

from ragbench.judges.statements import (
    count_labels,
    json_schema,
    parse_statements,
    score,
    verdict_regex,
)

REPLY = """1. The context names her a physicist. VERDICT: PASSED
2. Born in Warsaw, not Paris. VERDICT: FAILED
3. Nothing about prizes. VERDICT: (after some thought) FAILED
4. verdict: passed"""


def test_statements_are_bullet_lines_in_order_without_repeats() -> None:
    reply = "Statements:\n- A was born in B.\n* A is a painter.\n2. A is a painter.\nsome prose\n3) C."
    assert parse_statements(reply) == ["A was born in B.", "A is a painter.", "C."]
    assert parse_statements("no bullets at all") == []


def test_r1_needs_the_label_right_after_the_colon_r2_allows_text_between() -> None:
    assert count_labels(REPLY, "faithfulness", "r1") == {"PASSED": 1, "FAILED": 1}
    # line 3 counts; lower case never does
    assert count_labels(REPLY, "faithfulness", "r2") == {"PASSED": 1, "FAILED": 2}
    assert verdict_regex("TP", "r1").search("VERDICT: TPX") is None  # word boundary
    assert count_labels("I think it is supported.", "faithfulness", "r2") is None  # no verdict: unparseable, not 0


def test_scores_are_the_papers_ratios() -> None:
    assert score({"PASSED": 3, "FAILED": 1}, "faithfulness") == 0.75
    counts = {"TP": 2, "FP": 1, "FN": 2}
    assert score(counts, "correctness") == 0.5  # recall: 2 / (2 + 2)
    assert score(counts, "correctness", "f1") == pytest.approx(2 / (2 + 1.5))
    assert score({"TP": 0, "FP": 3, "FN": 0}, "correctness") == 0.0  # verdicts, all FP: every gold statement is an FN
    assert score({"TP": 0, "FP": 0, "FN": 0}, "correctness") is None  # no verdict at all: unparseable


def test_correctness_counts_tp_fp_fn() -> None:
    reply = ("A1. supported. VERDICT: TP\nA2. not in the truth. VERDICT: FP\n"
             "G2. Alan is a computer scientist. VERDICT: FN")
    assert count_labels(reply, "correctness", "r1") == {"TP": 1, "FP": 1, "FN": 1}


def test_json_parser_reads_one_label_per_statement() -> None:
    schema = json.loads(json_schema("correctness", 2, 3))
    assert schema["properties"]["answer"]["minItems"] == 2 and schema["properties"]["gold"]["maxItems"] == 3
    reply = json.dumps({"answer": ["TP", "FP"], "gold": ["COVERED", "FN", "FN"]})
    assert count_labels(reply, "correctness", "json") == {"TP": 1, "FP": 1, "FN": 2}
    verdicts = '{"verdicts": ["PASSED", "PASSED", "FAILED"]}'
    assert count_labels(verdicts, "faithfulness", "json") == {"PASSED": 2, "FAILED": 1}
    assert count_labels("not json", "faithfulness", "json") is None


def test_json_parser_needs_a_vllm_backend() -> None:
    from pydantic import ValidationError

    from ragbench.judges.judge import JudgeOptions

    with pytest.raises(ValidationError, match="needs a vLLM backend"):
        JudgeOptions(method="faithfulness", parser="json")
    server = {"backend": "openai_server", "model": "m", "base_url": "http://x/v1"}
    assert JudgeOptions(method="faithfulness", parser="json", llm=server).parser == "json"


STATEMENT_JUDGES = """\
name: statements
stages:
  - {type: bm25, engine: bm25s, top_k: 10}
  - {type: reader, top_k: 2, max_new_tokens: 16, llm: %(llm)s}
  - {id: faith, type: judge, inputs: [reader], method: faithfulness, samples: 2, max_new_tokens: 96, llm: %(llm)s}
  - {id: correct, type: judge, inputs: [reader], method: correctness, parser: r1, max_new_tokens: 96, llm: %(llm)s}
metrics: [popqa_acc, faithfulness, correctness]
"""


@pytest.mark.slow  # a reader and two judges generating through the server, ~90 s on 2 cores: `make test-all`
def test_statement_judges_end_to_end_through_a_server(vllm_server, tmp_path) -> None:
    """SmolLM2 on the vLLM server splits and labels 2 PopQA answers; every stored score is the
    deterministic count of its stored reply, and unparseable samples are counted, not zero."""
    from click.testing import CliRunner

    from ragbench.cli import main

    llm = (f"{{backend: openai_server, model: smollm2, base_url: {vllm_server.base_url}, "
           "tokenizer: SmolLM2-135M-Instruct, request_seed: false}")
    p = tmp_path / "s.yaml"
    p.write_text(STATEMENT_JUDGES % {"llm": llm})
    result = CliRunner().invoke(main, ["run", str(p), "--task", "popqa-sample", "--limit", "2",
                                       "--out", str(tmp_path / "run")],
                                env={"RAGBENCH_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "judgements.jsonl").read_text().splitlines()]
    assert sorted(r["stage"] for r in rows) == ["correct"] * 2 + ["faith"] * 2
    for r in rows:
        method, parser = ("faithfulness", "r2") if r["stage"] == "faith" else ("correctness", "r1")
        assert len(r["samples"]) == len(r["details"]) == (2 if method == "faithfulness" else 1)
        for value, detail in zip(r["samples"], r["details"], strict=True):
            if detail.get("empty") and method == "correctness":  # an empty answer scores 0 without a judge call
                assert value == 0.0 and detail["failure"] is None
            elif detail["failure"] is None:  # the evaluator's reply is the last output of its sample
                reply = next(o for o in reversed(r["outputs"]) if count_labels(o, method, parser) == detail["counts"])
                assert value == score(count_labels(reply, method, parser), method)
            else:
                assert value is None and detail["failure"] in ("split", "verdict", "empty answer", "no context")
        parsed = [v for v in r["samples"] if v is not None]
        assert r["value"] == (sum(parsed) / len(parsed) if parsed else None)
    judges = json.loads((run / "metrics.json").read_text())["judges"]
    faith = judges["faith"]
    assert faith["metric"] == "faithfulness" and faith["samples"] == 2 and faith["sample_values"] == 4
    assert faith["sample_unparsed"] == sum(v is None and not d.get("empty") for r in rows if r["stage"] == "faith"
                                           for v, d in zip(r["samples"], r["details"], strict=True))
    assert faith["empty"] == sum(any(d.get("empty") for d in r["details"]) for r in rows if r["stage"] == "faith")
    assert len(faith["sample_means"]) == 2
    print(f"\nREPORT statement judges (SmolLM2 via vLLM) on 2 PopQA answers: {judges}")
