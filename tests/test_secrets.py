"""Secrets never leave the process: an API key written in the pipeline YAML or given with --set reaches the
server, and no file the run or the cache wrote holds it (resolved options, cache keys and metadata, the lock
file's command line all show ***)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ragbench.cli import main
from ragbench.config import load_pipeline
from ragbench.yamlio import REDACTED, redact

IN_YAML = "sk-yaml-0123456789abcdef"
IN_SET = "sk-set-fedcba9876543210"


def test_overrides_resolve_to_a_redacted_key_that_the_backend_still_reads() -> None:
    llm = f"{{backend: openai_server, base_url: http://127.0.0.1:1/v1, model: m, api_key: {IN_SET}}}"
    pipeline = load_pipeline("pipelines/popqa-rag.yaml", overrides=[f"reader.llm={llm}"])
    text = json.dumps(pipeline.as_dict())
    assert IN_SET not in text and f'"api_key": "{REDACTED}"' in text
    reader = pipeline.stages[-1].options
    assert reader.llm.api_key.get_secret_value() == IN_SET  # type: ignore[attr-defined, union-attr]


def test_command_lines_are_redacted() -> None:
    given = f"--set 'reader.llm={{model: m, api_key: {IN_SET}}}'"
    assert redact(given) == "--set 'reader.llm={model: m, api_key: ***}'"
    assert redact(f"--set reader.llm.api_key={IN_SET} --out x") == "--set reader.llm.api_key=*** --out x"
    assert redact('{"api_key": "a b"}') == '{"api_key": "***"}'


def test_no_file_of_the_run_or_the_cache_holds_the_key(vllm_server, tmp_path: Path) -> None:
    llm = f"{{backend: openai_server, model: smollm2, base_url: {vllm_server.base_url}, api_key: {IN_YAML}}}"
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: secret\nmetrics: [EM]\nstages:\n  - {type: bm25, top_k: 5}\n"
                        f"  - {{type: reader, top_k: 1, max_new_tokens: 4, llm: {llm}}}\n")
    set_llm = llm.replace(IN_YAML, IN_SET)
    cache, out = tmp_path / "cache", tmp_path / "run"
    for extra in ([], ["--set", f"reader.llm={set_llm}"]):  # the key from the YAML, then one given with --set
        r = CliRunner().invoke(main, ["run", str(pipeline), "--task", "popqa-sample", "--limit", "2", *extra,
                                      "--cache-dir", str(cache), "--out", str(out)])
        assert r.exit_code == 0, r.output
        if extra:  # another key reuses every result: a secret is no part of a cache key
            assert "every stage came from the cache" in r.output.replace("\n", " ")
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2 and all(a["outputs"] for a in answers)  # the server was reached with the key
    written = [p for p in [*out.rglob("*"), *cache.rglob("*")] if p.is_file()]
    assert any(p.name == "meta.json" for p in written) and (out / "config.lock.yaml").exists()
    leaks = [str(p) for p in written if IN_YAML.encode() in p.read_bytes() or IN_SET.encode() in p.read_bytes()]
    assert not leaks
    assert REDACTED in (out / "config.lock.yaml").read_text()
