"""`type: judge`: an LLM judges each answer of the reader it reads.

Methods (each gives one per-query score named after it, see `METRIC`):
- `rating` -> `judge_acc`: FRAMES' autorater (Krishna et al., 2024). The judge sees the
  question, the answer and the gold answer, explains, and ends with TRUE or FALSE, read by
  `parse_judgement`, a fixed rule (the last labelled decision, negations respected).
- `faithfulness` -> `faithfulness`: statement-level support of the answer by the context the
  reader read (docs/methods.md, Statement-level faithfulness and correctness (Ispas et al.);
  `judges/statements.py`): split, label PASSED / FAILED, count.
- `correctness` -> `correctness`: statement-level TP / FP / FN of the answer against the gold
  answer; recall TP/(TP+FN), or F1 with `score: f1`.

`samples: n` judges each answer n times (seeds seed, seed+1, ...; temperature 1 by default when
n > 1, the paper's setting) and the score is the mean of the parseable samples; each sample's
value is stored, and the run reports the spread. A reply with any verdict is scored (correctness
with only FP verdicts scores 0); an empty answer scores 0 for correctness and stays unscored for
faithfulness, and is counted as `empty`. Only a reply with no verdict (or a split with no
statements) is kept as unparseable (None), counted in the run and left out, never scored as
wrong. Prompts, replies, seed and model are stored per query (judgements.jsonl) and in
config.lock.yaml. A task with several gold aliases (PopQA) shows the first as the gold answer
and the others as also accepted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ragbench.errors import RagbenchError
from ragbench.judges import statements as st
from ragbench.llm.base import Chat, Sampling
from ragbench.llm.stage import LLMOptions, UsesLLM
from ragbench.metrics.answers import gold_answers, parse_judgement
from ragbench.outputs import Answers, Judgements, Output
from ragbench.passages import render
from ragbench.stage import Contract, Stage
from ragbench.types import Answer, Corpus, Judgement, Query, TaskData

# Modelled on the auto-rater prompt in FRAMES (Krishna et al. 2024, arXiv:2409.12941, Fig. 6):
# show the question, the response and the gold answer; ask whether the gold answer's meaning and
# key facts are in the response; end with a TRUE/FALSE decision. The wording here is ours.
JUDGE_PROMPT = """===Task===
You will judge an answer written by a language model against a ground truth answer. Decide
whether the ground truth answer is present in the model's response.
===Instructions===
1. Compare the "Response" with the "Ground truth answer".
2. Judge substance, not wording: equivalent phrasings, units or formats of the same fact count
   as a match. Exact wording matters only where it changes the meaning.
3. Answer TRUE only if the meaning and the key facts of the ground truth answer are in the
   response. Answer FALSE if the response leaves them out or contradicts them.
===Input===
Question: {question}
Response: {response}
Ground truth answer: {gold}
===Output format===
Explanation: <one or two sentences on how you decided>
Decision: <TRUE or FALSE>"""

#: the per-query metric each method produces
METRIC = {"rating": "judge_acc", "faithfulness": "faithfulness", "correctness": "correctness"}
PROMPTS = {"rating": JUDGE_PROMPT, "faithfulness": st.FAITHFULNESS_PROMPT, "correctness": st.CORRECTNESS_PROMPT}


class JudgeOptions(LLMOptions):
    method: Literal["rating", "faithfulness", "correctness"] = Field(
        "rating", description="rating: FRAMES' TRUE/FALSE autorater | faithfulness: statements supported by the "
                              "context | correctness: statements against the gold answer")
    prompt: str | None = Field(None, description="evaluator template (rating: {question} {response} {gold}; "
                                                 "faithfulness: {context} {statements}; correctness: {question} "
                                                 "{statements} {gold_statements}); default: the method's")
    split_prompt: str = Field(st.SPLIT_PROMPT,
                              description="simplifier template with {question} and {answer} (statement methods)")
    split_prefix: str = Field("- ", description="text the simplifier's reply is made to start with (the first bullet), "
                                                "parsed with it; '' for none")
    parser: Literal["r1", "r2", "json"] = Field(
        "r2", description="r1: 'VERDICT: LABEL' | r2: 'VERDICT: ...LABEL' on one line | json: constrained decoding "
                          "(vLLM backends)")
    score: Literal["recall", "f1"] = Field(
        "recall", description="correctness: TP/(TP+FN) (the paper's) or TP/(TP+(FP+FN)/2)")
    samples: int = Field(
        1, ge=1, description="judge each answer this many times; the score is the mean, the spread is reported")
    temperature: float | None = Field(
        None, ge=0, description="default: 0 (greedy) for one sample, 1.0 (the paper's) for several")
    seed: int = Field(0, description="sample i uses seed + i")
    max_new_tokens: int = Field(256, ge=1, description="tokens for each judge reply")
    max_aliases: int = Field(5, ge=0, description="gold aliases shown besides the first")
    max_context_tokens: int = Field(
        3000, ge=1, description="faithfulness: the reader's passages shown, whole, up to this many tokens")

    @model_validator(mode="after")
    def _json_needs_vllm(self) -> JudgeOptions:
        if self.parser == "json" and self.llm.backend == "transformers":
            raise ValueError("parser: json (constrained decoding) needs a vLLM backend "
                             "(llm.backend: vllm or openai_server)")
        if self.parser == "json" and self.method == "rating":
            raise ValueError("parser applies to the statement methods (faithfulness, correctness); "
                             "rating uses its TRUE/FALSE rule")
        return self


def gold_text(golds: list[str], max_aliases: int) -> str:
    rest = [g for g in dict.fromkeys(golds[1:]) if g != golds[0]][:max_aliases]
    return golds[0] + (f" (also accepted: {'; '.join(rest)})" if rest else "")


class Judge(UsesLLM, Stage):
    contract = Contract("judge", Judgements, consumes=Answers, inputs=(1, 1))
    version = "2"  # 2: FP-only correctness replies and empty answers score 0 (were unparseable)
    Options = JudgeOptions
    options: JudgeOptions

    @classmethod
    def metrics(cls, options: JudgeOptions) -> list[str]:  # type: ignore[override]
        """The per-query score this judge gives (judge_acc, faithfulness, correctness)."""
        return [METRIC[options.method]]

    @classmethod
    def output(cls, options: JudgeOptions, records: dict[str, Any], upstream: list[Output],  # type: ignore[override]
               task: TaskData) -> Judgements:
        # a rating judge reads an empty answer like any other; statement judges count empty answers apart
        return Judgements(records, METRIC[options.method], counts_empty=options.method != "rating")

    def prepare(self, task: TaskData) -> None:
        self.answers_field = task.answers_field
        self.corpus: Corpus | None = task.corpus
        if self.options.method == "faithfulness" and task.corpus is None:
            raise RagbenchError.at(f"stage {self.env.stage_id}", "faithfulness judges answers against the retrieved "
                                   "context, but the task has no corpus")
        self.llm  # noqa: B018 - load the model now, not inside the first batch

    def sampling(self, i: int, schema: str | None = None) -> Sampling:
        o = self.options
        temperature = o.temperature if o.temperature is not None else (0.0 if o.samples == 1 else 1.0)
        seed = o.seed + i if temperature > 0 else None  # greedy needs no seed (and keeps older cached requests valid)
        return Sampling(max_tokens=o.max_new_tokens, temperature=temperature, seed=seed, json_schema=schema)

    def gold(self, query: Query) -> str:
        return gold_text(gold_answers(query, self.answers_field), self.options.max_aliases)

    # -- rating (FRAMES) -----------------------------------------------------------------------
    def rating_chat(self, query: Query, answer: Answer) -> Chat:
        template = self.options.prompt or JUDGE_PROMPT
        content = template.format(question=query.text, response=answer.text, gold=self.gold(query))
        return [{"role": "user", "content": content}]

    def rate(self, pairs: list[tuple[Query, Answer]]) -> dict[str, Judgement]:
        out = {q.id: Judgement(q.id, None, seed=self.options.seed) for q, _ in pairs}
        for i in range(self.options.samples):
            chats = [self.rating_chat(q, a) for q, a in pairs]
            for (q, _), chat, reply in zip(pairs, chats, self.llm.chat(chats, self.sampling(i)), strict=True):
                verdict = parse_judgement(reply.text)
                j = out[q.id]
                j.prompts.append(chat)
                j.outputs.append(reply.text)
                j.samples.append(None if verdict is None else float(verdict))
        return out

    # -- statements (faithfulness, correctness) --------------------------------------------------
    def context(self, answer: Answer) -> str:
        """The passages the reader read, in its order, up to `max_context_tokens` (whole passages)."""
        assert self.corpus is not None
        budget, parts = self.options.max_context_tokens, []
        docs = self.corpus.fetch(answer.context_ids)
        for d in answer.context_ids:
            doc = docs.get(d)
            if doc is None:
                continue
            text = render(doc, "titled_raw")  # the reader's layout, unstripped (passages.py)
            budget -= self.llm.count_tokens(text) + 2
            if budget < 0 and parts:
                break
            parts.append(text)
        return "\n\n".join(parts)

    def split_chat(self, query: Query, text: str) -> Chat:
        return [{"role": "user", "content": self.options.split_prompt.format(question=query.text, answer=text)}]

    def evaluate_chat(self, query: Query, answer: Answer, claims: list[str], gold_claims: list[str]) -> Chat:
        o = self.options
        template = o.prompt or PROMPTS[o.method]
        if o.method == "faithfulness":
            content = template.format(context=self.context(answer), statements=st.numbered(claims))
        else:
            content = template.format(question=query.text, statements=st.numbered(claims),
                                      gold_statements=st.numbered(gold_claims))
        if o.parser == "json":
            content += "\nAnswer in JSON with one label per statement, in order."
        return [{"role": "user", "content": content}]

    def judge_statements(self, pairs: list[tuple[Query, Answer]]) -> dict[str, Judgement]:
        o = self.options
        out = {q.id: Judgement(q.id, None, seed=o.seed) for q, _ in pairs}
        for i in range(o.samples):
            samples: dict[str, st.Sample] = {}
            # S: split the answer (and the gold answer, for correctness)
            todo = []
            for q, a in pairs:
                if not a.text.strip():  # states nothing: every gold statement is an FN (recall 0); faithfulness is 0/0
                    samples[q.id] = (st.Sample(0.0, empty=True) if o.method == "correctness"
                                     else st.Sample(None, failure="empty answer", empty=True))
                elif o.method == "faithfulness" and not a.context_ids:
                    samples[q.id] = st.Sample(None, failure="no context")
                else:
                    todo.append((q, a))
            split = [self.split_chat(q, a.text) for q, a in todo]
            if o.method == "correctness":
                split += [self.split_chat(q, self.gold(q)) for q, _ in todo]
            replies = self.llm.chat(split, self.sampling(i), prefix=o.split_prefix) if split else []
            texts = [o.split_prefix + r.text for r in replies]
            for j, (q, _) in enumerate(todo):
                out[q.id].prompts.append(split[j])
                out[q.id].outputs.append(texts[j])
                sample = samples[q.id] = st.Sample(None, st.parse_statements(texts[j]))
                if o.method == "correctness":
                    g = len(todo) + j
                    out[q.id].prompts.append(split[g])
                    out[q.id].outputs.append(texts[g])
                    sample.gold_statements = st.parse_statements(texts[g])
                if not sample.statements or (o.method == "correctness" and not sample.gold_statements):
                    sample.failure = "split"
            # E: label each statement; P: count the labels
            ready = [(q, a) for q, a in todo if samples[q.id].failure is None]
            chats = [self.evaluate_chat(q, a, samples[q.id].statements, samples[q.id].gold_statements)
                     for q, a in ready]
            schemas = [st.json_schema(o.method, len(samples[q.id].statements), len(samples[q.id].gold_statements))
                       if o.parser == "json" else None for q, _ in ready]
            replies = self._chat_each(chats, [self.sampling(i, schema) for schema in schemas])
            for (q, _), chat, reply in zip(ready, chats, replies, strict=True):
                s = samples[q.id]
                out[q.id].prompts.append(chat)
                out[q.id].outputs.append(reply.text)
                s.counts = st.count_labels(reply.text, o.method, o.parser)
                s.value = None if s.counts is None else st.score(s.counts, o.method, o.score)
                if s.value is None:
                    s.failure = "verdict"
            for q, _ in pairs:
                out[q.id].samples.append(samples[q.id].value)
                out[q.id].details.append(samples[q.id].to_json())
        return out

    def _chat_each(self, chats: list[Chat], samplings: list[Sampling]) -> list[Any]:
        """Chats whose sampling differs (a JSON schema per statement count), asked in groups."""
        replies: list[Any] = [None] * len(chats)
        groups: dict[Sampling, list[int]] = {}
        for i, s in enumerate(samplings):
            groups.setdefault(s, []).append(i)
        for s, idx in groups.items():
            for i, r in zip(idx, self.llm.chat([chats[i] for i in idx], s), strict=True):
                replies[i] = r
        return replies

    def process(self, queries: list[Query], inputs: list[dict[str, Any]]) -> dict[str, Judgement]:
        pairs = [(q, inputs[0][q.id]) for q in queries if inputs[0].get(q.id) is not None]
        out = self.rate(pairs) if self.options.method == "rating" else self.judge_statements(pairs)
        for j in out.values():
            parsed = [v for v in j.samples if v is not None]
            j.value = sum(parsed) / len(parsed) if parsed else None
        return out

    def identity(self) -> dict[str, Any]:
        o = self.options
        return {**super().identity(), "method": o.method, "metric": METRIC[o.method], "parser": o.parser,
                "samples": o.samples,
                "seed": o.seed, "prompt": o.prompt or PROMPTS[o.method],
                **({"split_prompt": o.split_prompt, "split_prefix": o.split_prefix} if o.method != "rating" else {})}
