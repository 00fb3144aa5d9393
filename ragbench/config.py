"""Pipeline and task-card YAML -> typed, validated objects, with every problem located.

Validation never stops at the first problem: `ragbench validate` reports them all, each as
`FILE:LINE: yaml.path: message`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from ragbench import catalog, registry
from ragbench.errors import Problem, RagbenchError
from ragbench.executors import ExecutorSpec
from ragbench.metrics.spec import check_metrics, computable
from ragbench.outputs import Answers, DerivedCorpus, Output, Rankings
from ragbench.stage import Stage, StageOptions, is_execution
from ragbench.yamlio import Loc, LocatedYaml, Strict, format_loc, load_yaml, pydantic_problems, validate_mapping


# ----------------------------------------------------------------------------- pipelines
class _PipelineSpec(Strict):
    name: str
    description: str = ""
    metrics: list[str] | None = Field(None, description="ir_measures names; default: the task card's")
    stages: list[dict[str, Any]] = Field(min_length=1)
    executor: ExecutorSpec | None = Field(None, description="where heavy work runs: {kind: local | ray, workers, "
                                                            "address}; --executor overrides it")


@dataclass(frozen=True)
class StageSpec:
    id: str
    type: str
    cls: type[Stage]
    options: StageOptions
    inputs: tuple[str, ...]
    corpus: str | None = None  # a corpus stage (long_units, passages) whose documents it ranks; None: the task's
    depth: int | None = None  # documents per query it outputs (a ranking passed on: its input's); None: unknown

    def as_dict(self) -> dict[str, Any]:
        """The fully resolved stage, defaults included: what the cache key and lock file see."""
        where = {"corpus": self.corpus} if self.corpus else {}
        return {"id": self.id, "type": self.type, "inputs": list(self.inputs), **where,
                **self.options.model_dump(mode="json")}

    def key_dict(self) -> dict[str, Any]:
        """What the cache key sees: `as_dict()` with every execution setting (stage.EXECUTION) at its default, so
        changing one reuses the cache. Reset, not removed: a stage that leaves them at their defaults keeps the
        key it had before they were declared. One without a default (openai_server's base_url) is left out."""
        where = {"corpus": self.corpus} if self.corpus else {}
        return {"id": self.id, "type": self.type, "inputs": list(self.inputs), **where,
                **_key_view(self.options, self.options.model_dump(mode="json"))}


@dataclass(frozen=True)
class Pipeline:
    name: str
    description: str
    stages: tuple[StageSpec, ...]
    metrics: tuple[str, ...] | None
    file: str
    executor: ExecutorSpec | None = None  # the YAML's `executor:` block (an execution setting: never in a key)

    @property
    def final(self) -> StageSpec:
        return self.stages[-1]

    def produces(self, kind: type[Output]) -> bool:
        """Whether some stage's output is a `kind` (Answers: it has a reader; Rankings: it ranks documents)."""
        return any(issubclass(st.cls.contract.produces, kind) for st in self.stages)

    @property
    def has_reader(self) -> bool:
        return self.produces(Answers)

    @property
    def has_ranking(self) -> bool:
        return self.produces(Rankings)

    @property
    def judge_metrics(self) -> list[str]:
        """The scores its judge stages give (judge_acc, faithfulness, correctness), in stage order."""
        return judge_metrics(self.stages)

    def until(self, stage_id: str) -> Pipeline:
        """The pipeline up to and including `stage_id` (e.g. only its retrieval); stage cache keys are unchanged."""
        ids = [st.id for st in self.stages]
        if stage_id not in ids:
            raise RagbenchError.at("--until", f"'{stage_id}' is not a stage of {self.file} (stages: {', '.join(ids)})")
        kept = self.stages[: ids.index(stage_id) + 1]
        return Pipeline(self.name, self.description, kept, _still_computable(self.metrics, kept), self.file,
                        self.executor)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "metrics": list(self.metrics) if self.metrics else None,
            "stages": [s.as_dict() for s in self.stages],
        }

    def config_hash(self) -> str:
        return stable_hash(self.as_dict())[:12]


def _key_view(model: BaseModel, dumped: Any) -> Any:
    """`dumped` (model_dump(mode="json") of `model`) with each execution field, at any depth, at its default."""
    if not isinstance(dumped, dict):
        return dumped
    out = dict(dumped)
    for name, field in type(model).model_fields.items():
        if name not in out:
            continue
        if is_execution(field):
            if field.is_required():
                del out[name]
            else:  # dumped through the field's own serialiser (a Secret default stays what it would be written as)
                reset = model.model_copy(update={name: field.get_default(call_default_factory=True)})
                out[name] = reset.model_dump(mode="json", include={name})[name]
        else:
            out[name] = _key_view_value(getattr(model, name), out[name])
    return out


def _key_view_value(value: Any, dumped: Any) -> Any:
    if isinstance(value, BaseModel):
        return _key_view(value, dumped)
    if isinstance(value, list | tuple) and isinstance(dumped, list) and len(value) == len(dumped):
        return [_key_view_value(v, d) for v, d in zip(value, dumped, strict=True)]
    if isinstance(value, dict) and isinstance(dumped, dict) and value.keys() == dumped.keys():
        return {k: _key_view_value(value[k], dumped[k]) for k in dumped}
    return dumped


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _known_fields(cls: type[Stage]) -> str:
    return ", ".join(cls.Options.model_fields) or "none"


def parse_pipeline(doc: LocatedYaml) -> tuple[Pipeline | None, list[Problem]]:
    """Validate a pipeline document; returns the pipeline (if usable) and every problem found."""
    spec, problems = validate_mapping(doc, _PipelineSpec, "a pipeline must be a YAML mapping with 'name' and 'stages'")
    if spec is None:
        return None, problems

    stages: list[StageSpec] = []
    depths: dict[str, int | None] = {}
    produces: dict[str, type[Output]] = {}
    corpora: dict[str, str | None] = {}  # stage id -> the corpus stage it ranks (None: the task's)
    seen_ids: set[str] = set()
    for i, raw in enumerate(spec.stages):
        loc: Loc = ("stages", i)
        if not isinstance(raw, dict) or "type" not in raw:
            problems.append(Problem(doc.file, "each stage needs a 'type:'", doc.line(loc), format_loc(loc)))
            continue
        raw = dict(raw)
        type_name = str(raw.pop("type"))
        sid = str(raw.pop("id", type_name))
        if sid in seen_ids:
            problems.append(Problem(doc.file, f"duplicate stage id '{sid}' (give it a unique 'id:')",
                                    doc.line((*loc, "id")) or doc.line(loc), format_loc((*loc, "id"))))
        seen_ids.add(sid)
        inputs_raw = raw.pop("input", raw.pop("inputs", None))
        corpus_raw = raw.pop("corpus", None)
        if type_name not in registry.COMPONENTS:
            problems.append(Problem(doc.file, f"unknown type '{type_name}'{registry.suggest(type_name)}; "
                                    f"known: {', '.join(registry.names())}", doc.line((*loc, "type")),
                                    format_loc((*loc, "type"))))
            continue
        cls = registry.get(type_name)
        try:
            options = cls.Options.model_validate(raw)
        except ValidationError as e:
            for p in pydantic_problems(doc, e, loc):
                if p.message == "unknown field":
                    p.message = f"unknown field for type '{type_name}' (its fields: {_known_fields(cls)})"
                problems.append(p)
            continue
        contract = cls.contract
        # inputs: default to the previous stage (corpus stages aside) for stages that read one
        readable = [st for st in stages if not issubclass(st.cls.contract.produces, DerivedCorpus)]
        if inputs_raw is None:
            inputs = (readable[-1].id,) if contract.inputs[1] >= 1 and readable else ()
        else:
            inputs = tuple([inputs_raw] if isinstance(inputs_raw, str) else [str(x) for x in inputs_raw])
        in_loc = (*loc, "input" if "input" in doc.data["stages"][i] else "inputs")
        at_inputs = (doc.line(in_loc), format_loc(in_loc))
        for name in inputs:
            upstream = produces.get(name)
            if name not in depths:
                earlier = ", ".join(depths) or "none"
                problems.append(Problem(doc.file, f"input '{name}' is not an earlier stage (earlier: {earlier})",
                                        *at_inputs))
            elif upstream is not None and issubclass(upstream, DerivedCorpus):
                problems.append(Problem(doc.file,
                                        f"input '{name}' is a corpus stage; name it with 'corpus: {name}' instead",
                                        *at_inputs))
            elif upstream is not None and contract.consumes is not None and not issubclass(upstream, contract.consumes):
                problems.append(Problem(doc.file, f"input '{name}' produces {upstream.label}, but type '{type_name}' "
                                        f"reads {contract.consumes.label}", *at_inputs))
        if contract.searches_input:
            problems += [Problem(doc.file, f"type '{type_name}' runs its queries through its input, which must be a "
                                 "first-stage retriever (bm25, dense, splade, llm_sparse); "
                                 f"'{st.id}' is type '{st.type}'", *at_inputs)
                         for st in stages if st.id in inputs and st.cls.contract.inputs[1]]
        corpus, corpus_problem = _stage_corpus(corpus_raw, inputs, produces, corpora, cls)
        if corpus_problem:
            c_loc = (*loc, "corpus") if corpus_raw is not None else in_loc
            problems.append(Problem(doc.file, corpus_problem, doc.line(c_loc), format_loc(c_loc)))
        low, high = contract.inputs
        if not low <= len(inputs) <= high:
            want = str(low) if low == high else f"{low} to {high}"
            problems.append(Problem(doc.file, f"type '{type_name}' takes {want} input stage(s), got {len(inputs)}",
                                    *at_inputs))
        depth = cls.depth(options)
        if contract.narrows_input and depth is not None:
            for name in inputs:
                upstream_depth = depths.get(name)
                if upstream_depth is not None and depth > upstream_depth:
                    problems.append(Problem(
                        doc.file, f"top_k={depth} is more than its input '{name}' returns (top_k={upstream_depth}); "
                        "a stage cannot reorder documents it never receives",
                        doc.line((*loc, "top_k")), format_loc((*loc, "top_k"))))
        if depth is None and issubclass(contract.produces, Rankings) and len(inputs) == 1:
            depth = depths.get(inputs[0])  # a ranking passed on (relevance_judge) is as deep as its input
        depths[sid] = depth
        produces[sid] = contract.produces
        corpora[sid] = corpus
        stages.append(StageSpec(sid, type_name, cls, options, inputs, corpus, depth))

    metrics = tuple(spec.metrics) if spec.metrics else None
    if metrics:
        has_reader = any(issubclass(st.cls.contract.produces, Answers) for st in stages)
        problems += check_metrics(metrics, final_depth(stages), doc, ("metrics",), has_reader=has_reader,
                                  judged=judge_metrics(stages), per_document=scored_per_document(stages))
    if problems:
        return None, problems
    return Pipeline(spec.name, spec.description, tuple(stages), metrics, doc.file, spec.executor), []


def _stage_corpus(given: Any, inputs: tuple[str, ...], produces: dict[str, type[Output]],
                  corpora: dict[str, str | None], cls: type[Stage]) -> tuple[str | None, str]:
    """(the corpus a stage works on, a problem or ""): given by `corpus:`, else its inputs'; all must agree."""
    inherited = {corpora[name] for name in inputs if name in corpora}
    if cls.contract.regroups:
        return _regrouped_corpus(given, inherited, produces, corpora)
    if given is None:
        if len(inherited) > 1:
            ranked = ", ".join(sorted(str(c or "the task corpus") for c in inherited))
            return None, f"inputs {', '.join(inputs)} rank different corpora ({ranked})"
        return (inherited.pop() if inherited else None), ""
    name = str(given)
    known = [k for k, v in produces.items() if issubclass(v, DerivedCorpus)]
    if name not in known:
        earlier = "; earlier: " + ", ".join(known) if known else ""
        return None, f"'{name}' is not an earlier corpus stage (type: long_units or passages){earlier}"
    if inherited and inherited != {name}:
        ranked = ", ".join(str(c or "the task corpus") for c in inherited)
        return None, f"corpus '{name}' differs from the corpus its input ranks ({ranked})"
    return name, ""


def _regrouped_corpus(given: Any, inherited: set[str | None], produces: dict[str, type[Output]],
                      corpora: dict[str, str | None]) -> tuple[str | None, str]:
    """The corpus of a stage that ranks units made from what its input ranks (maxp): named, and made from it."""
    ranked = ", ".join(sorted(str(c or "the task corpus") for c in inherited))
    name = str(given) if given is not None else None
    if name is None or not issubclass(produces.get(name, Output), DerivedCorpus):
        return None, f"needs 'corpus:', an earlier corpus stage made from the corpus its input ranks ({ranked})"
    if inherited and inherited != {corpora.get(name)}:
        return None, f"corpus '{name}' is not made from the corpus its input ranks ({ranked})"
    return name, ""


def _still_computable(metrics: tuple[str, ...] | None, stages: tuple[StageSpec, ...]) -> tuple[str, ...] | None:
    """A pipeline's own metrics less those whose reader or judge a cut (--until) removed."""
    if not metrics:
        return metrics
    has_reader = any(issubclass(st.cls.contract.produces, Answers) for st in stages)
    return tuple(computable(list(metrics), True, has_reader, judge_metrics(stages)))


def judge_metrics(stages: tuple[StageSpec, ...] | list[StageSpec]) -> list[str]:
    """The per-query scores the stages' outputs give (judges), in stage order."""
    return [m for st in stages for m in st.cls.metrics(st.options)]


def scored_per_document(stages: tuple[StageSpec, ...] | list[StageSpec]) -> bool:
    """Whether the last ranking is over a corpus (passages) whose rankings are also scored per document (M[doc])."""
    ranking = [st for st in stages if issubclass(st.cls.contract.produces, Rankings)]
    by_id = {st.id: st for st in stages}
    corpus = by_id.get(ranking[-1].corpus) if ranking and ranking[-1].corpus else None
    while corpus is not None:  # units made of passages are scored per document too
        if getattr(corpus.cls, "document_level", False):
            return True
        corpus = by_id.get(corpus.corpus) if corpus.corpus else None
    return False


def final_depth(stages: tuple[StageSpec, ...] | list[StageSpec]) -> int | None:
    """Depth of the last ranking stage (a ranking passed on: its input's): what metric cutoffs are checked against."""
    ranking = [st for st in stages if issubclass(st.cls.contract.produces, Rankings)]
    return ranking[-1].depth if ranking else None


def apply_overrides(doc: LocatedYaml, overrides: list[str] | tuple[str, ...]) -> LocatedYaml:
    """`--set STAGE.key.sub=VALUE` (or a top-level key: `--set name=x`): the value is parsed as YAML.

    STAGE is a stage's id (its type when it has no id). Changed keys keep their parent's line,
    so a bad value is still reported against the file.
    """
    import copy

    import yaml

    data = copy.deepcopy(doc.data)
    for item in overrides:
        path, sep, raw = item.partition("=")
        parts = [p for p in path.strip().split(".") if p]
        if not sep or not parts:
            raise RagbenchError.at("--set", f"expected STAGE.key=VALUE or key=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise RagbenchError.at("--set", f"{path}: value is not valid YAML ({getattr(e, 'problem', e)})") from None
        stages = data.get("stages") if isinstance(data, dict) else None
        ids = [str(st.get("id", st.get("type"))) for st in stages or [] if isinstance(st, dict)]
        if parts[0] in ids:
            node: Any = stages[ids.index(parts[0])]
            parts = parts[1:]
        elif len(parts) == 1 and parts[0] in _PipelineSpec.model_fields and parts[0] != "stages":
            node = data
        else:
            raise RagbenchError.at("--set", f"'{parts[0]}' is not a stage of {doc.file} (stages: {', '.join(ids)}) "
                                            "nor one of name, description, metrics")
        if not parts:
            raise RagbenchError.at("--set", f"{path}: name a field of stage '{path}' (e.g. {path}.top_k=10)")
        for key in parts[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[parts[-1]] = value
    return LocatedYaml(data, doc.lines, doc.file)


def load_pipeline(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Pipeline:
    path = catalog.find(path, "pipeline")
    doc = load_yaml(path)
    pipeline, problems = parse_pipeline(apply_overrides(doc, overrides) if overrides else doc)
    if problems:
        raise RagbenchError(problems)
    assert pipeline is not None
    return pipeline


def validate_file(path: str | Path) -> list[Problem]:
    """Validate a pipeline or a task card (told apart by a top-level 'stages' key)."""
    from ragbench.tasks.card import parse_task_card

    try:
        doc = load_yaml(path)
    except RagbenchError as e:
        return e.problems
    not_pipeline = isinstance(doc.data, dict) and "stages" not in doc.data
    if not_pipeline and ("splits" in doc.data or "hf" in doc.data or "embedded" in doc.data):
        return parse_task_card(doc)[1]
    if not_pipeline and Path(path).resolve().parent == catalog.folder("task").resolve():
        return parse_task_card(doc)[1]
    return parse_pipeline(doc)[1]
