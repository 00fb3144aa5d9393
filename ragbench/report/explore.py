"""Looking into one run, query by query: `ragbench show` (terminal) and `ragbench report` (a standalone HTML
explorer). Both read the run folder (per_query.jsonl, run.trec, answers.jsonl, judgements.jsonl) and the task
named in its lock file, for the query texts, gold answers, relevance labels, titles and snippets.

A ranking over passages (ids `doc#n`) is shown with its passages' documents: the title and relevance of the
document each passage comes from (the passage text itself lives in the cache, not in the task).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragbench.corpora.passages import document_of
from ragbench.record import RunRecord
from ragbench.trec import parse_run
from ragbench.types import Corpus, TaskData

SNIPPET_WORDS = 40


@dataclass
class DocView:
    docid: str
    score: float
    relevant: int | None  # the qrels grade (None: unjudged)
    title: str = ""
    snippet: str = ""


@dataclass
class QueryView:
    qid: str
    text: str
    metrics: dict[str, float]
    docs: list[DocView] = field(default_factory=list)
    gold: list[str] = field(default_factory=list)
    answer: str | None = None
    prompt: str | None = None
    judgements: list[dict[str, Any]] = field(default_factory=list)


def load_task_of(record: RunRecord) -> TaskData | None:
    """The task the run was made on (its lock file's name, split and data folder), or None when it cannot be
    loaded here (its data is elsewhere): the explorer then shows ids only."""
    from ragbench.errors import RagbenchError
    from ragbench.tasks import load_task
    from ragbench.tasks.card import load_task_card

    task = record.lock.get("task", {})
    source = task.get("source")
    try:
        card, _ = load_task_card(source if source and source.startswith("irds:") else task["name"])
        data = source if source and Path(source).is_dir() else None
        return load_task(card, task.get("split"), data)
    except (RagbenchError, KeyError, OSError):
        return None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _word_stride(record: RunRecord) -> int | None:
    """The stride of the run's passages in words (a `type: passages` stage with `unit: words`), else None."""
    for stage in record.lock.get("pipeline", {}).get("stages", []):
        if stage.get("type") == "passages" and stage.get("unit") == "words":
            return int(stage.get("stride") or stage.get("size") or 100)
    return None


def _doc(corpus: Corpus | None, qrels: dict[str, int], docid: str, score: float, stride: int | None) -> DocView:
    """A ranked document with its grade, title and first words; a passage (doc#n) through its document, its words
    from n x stride when the passages were cut in words."""
    base = docid if corpus is None or docid in corpus else document_of(docid)
    grade = qrels.get(docid, qrels.get(base))
    if corpus is None or base not in corpus:
        return DocView(docid, score, grade)
    d = corpus[base]
    n = docid[len(base) + 1:]  # the passage number, for a passage id
    start = int(n) * stride if base != docid and stride and n.isdigit() else 0
    return DocView(docid, score, grade, d.title, " ".join(d.text.split()[start:start + SNIPPET_WORDS]))


def _answers(gold: Any) -> list[str]:
    return [str(g) for g in gold] if isinstance(gold, list) else [] if gold is None else [str(gold)]


def query_views(folder: str | Path, depth: int = 10) -> tuple[RunRecord, list[QueryView]]:
    """Every evaluated query of the run, with its metrics, top `depth` documents, answer and verdicts."""
    record = RunRecord.read(folder)
    folder = record.folder
    task = load_task_of(record)
    queries = {q.id: q for q in task.queries} if task else {}
    answers_field = task.answers_field if task else "answers"
    run = parse_run((folder / "run.trec").read_text(), str(folder / "run.trec")) if (folder / "run.trec").exists() \
        else {}
    answers = {a["query_id"]: a for a in _jsonl(folder / "answers.jsonl")}
    stride = _word_stride(record)
    verdicts: dict[str, list[dict[str, Any]]] = {}
    for j in _jsonl(folder / "judgements.jsonl"):
        verdicts.setdefault(j["query_id"], []).append(
            {"stage": j.get("stage"), "value": j.get("value"), "reply": (j.get("outputs") or [""])[-1]})
    views = []
    for qid, metrics in record.per_query.items():
        q = queries.get(qid)
        qrels = task.qrels.get(qid, {}) if task else {}
        ranking = run.get(qid)
        docs = [] if ranking is None else [_doc(task.corpus if task else None, qrels, d, s, stride)
                                           for d, s in zip(ranking.docids[:depth], ranking.scores[:depth], strict=True)]
        gold = q.extra.get(answers_field) if q else None
        a = answers.get(qid)
        prompt = None
        if a and a.get("prompts"):
            last = a["prompts"][-1]
            prompt = "\n\n".join(m.get("content", "") for m in last) if isinstance(last, list) else str(last)
        views.append(QueryView(qid, q.text if q else "", metrics, docs, _answers(gold),
                               a.get("answer") if a else None, prompt, verdicts.get(qid, [])))
    return record, views


def worst(views: list[QueryView], metric: str, n: int) -> list[QueryView]:
    """The n queries lowest on `metric` (ties by query id)."""
    scored = [v for v in views if isinstance(v.metrics.get(metric), int | float)]
    return sorted(scored, key=lambda v: (v.metrics[metric], v.qid))[:n]


# -- the HTML explorer ------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1a1a1a; }
table#queries { border-collapse: collapse; font-size: 0.9rem; }
#queries th, #queries td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; }
#queries th.sortable { cursor: pointer; background: #1f3b57; color: #fff; }
#queries td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.q { cursor: pointer; } tr.q:hover { background: #f3f6f9; }
tr.detail td { background: #fafafa; }
li[data-relevant="1"] { background: #e5f2e5; }
.doc-title { font-weight: 600; } .meta { font-size: 0.8rem; color: #555; }
pre { white-space: pre-wrap; max-height: 20rem; overflow: auto; background: #f4f4f4; padding: 0.5rem; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; } img { max-width: 100%; }
"""

# Sort by a column (numbers, missing values last); a second click reverses. A query row opens its details.
_JS = """
function sortBy(col) {
  const body = document.querySelector('#queries tbody');
  const pairs = Array.from(body.querySelectorAll('tr.q')).map(r => [r, body.querySelector(
      'tr.detail[data-for="' + CSS.escape(r.dataset.qid) + '"]')]);
  const th = document.querySelector('#queries th[data-col="' + col + '"]');
  const asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
  const key = r => { const v = r.querySelector('td[data-col="' + col + '"]').dataset.value;
                     return v === '' ? NaN : Number(v); };
  pairs.sort((a, b) => { const x = key(a[0]), y = key(b[0]);
    if (isNaN(x)) return 1; if (isNaN(y)) return -1; return asc ? x - y : y - x; });
  pairs.forEach(([r, d]) => { body.appendChild(r); body.appendChild(d); });
}
document.addEventListener('click', e => {
  const th = e.target.closest('th.sortable'); if (th) { sortBy(th.dataset.col); return; }
  const row = e.target.closest('tr.q'); if (!row) return;
  const d = document.querySelector('tr.detail[data-for="' + CSS.escape(row.dataset.qid) + '"]');
  d.hidden = !d.hidden;
});
"""


def _num(v: Any) -> str:
    return "" if not isinstance(v, int | float) or math.isnan(v) else repr(float(v))


def _grade(relevant: int | None) -> str:
    return "unjudged" if relevant is None else f"relevant ({relevant})" if relevant > 0 else "not relevant"


def _detail(v: QueryView, span: int) -> str:
    e = html.escape
    docs = "".join(
        f'<li data-docid="{e(d.docid)}" data-relevant="{1 if (d.relevant or 0) > 0 else 0}">'
        f'<span class="doc-title">{e(d.title or d.docid)}</span> <span class="meta">{e(d.docid)} · score '
        f"{d.score:.4g} · {_grade(d.relevant)}</span><br>{e(d.snippet)}</li>" for d in v.docs)
    parts = [f"<p><b>{e(v.text)}</b></p>", f"<ol class='docs'>{docs}</ol>" if v.docs else ""]
    if v.gold:
        parts.append(f"<p>gold: {e(' | '.join(v.gold))}</p>")
    if v.answer is not None:
        parts.append(f"<p>answer: <span class='answer'>{e(v.answer)}</span></p>")
    if v.prompt:
        parts.append(f"<details><summary>prompt</summary><pre>{e(v.prompt)}</pre></details>")
    for j in v.judgements:
        parts.append(f"<p class='verdict'>{e(str(j['stage']))}: {e(str(j['value']))} "
                     f"<span class='meta'>{e(str(j['reply'])[:300])}</span></p>")
    return f'<tr class="detail" data-for="{e(v.qid)}" hidden><td colspan="{span}">{"".join(parts)}</td></tr>'


def to_html(record: RunRecord, views: list[QueryView], against: dict[str, dict[str, float]] | None = None,
            against_name: str = "") -> str:
    """A standalone page: one sortable row per query (each metric, and its delta against a second run), which
    opens to the query's documents (gold marked), answer, prompt and verdicts; R@k and per-metric histograms."""
    e = html.escape
    metrics = [m for m in record.metrics if any(isinstance(v.metrics.get(m), int | float) for v in views)]
    cols = [(m, m) for m in metrics]
    if against:
        cols += [(f"delta:{m}", f"Δ {m}") for m in metrics if any(m in a for a in against.values())]
    head = "<th>query</th><th>text</th>" + "".join(
        f'<th class="sortable" data-col="{e(c)}">{e(label)}</th>' for c, label in cols)
    rows = []
    for v in views:
        cells = []
        for c, _ in cols:
            if c.startswith("delta:"):
                m = c[6:]
                base = (against or {}).get(v.qid, {}).get(m)
                value = v.metrics.get(m) - base if isinstance(base, int | float) and \
                    isinstance(v.metrics.get(m), int | float) else None
            else:
                value = v.metrics.get(c)
            shown = "" if _num(value) == "" else f"{value:.4f}"
            cells.append(f'<td class="num" data-col="{e(c)}" data-value="{_num(value)}">{shown}</td>')
        rows.append(f'<tr class="q" data-qid="{e(v.qid)}"><td>{e(v.qid)}</td><td>{e(v.text[:120])}</td>'
                    + "".join(cells) + "</tr>")
        rows.append(_detail(v, len(cols) + 2))
    figs = "".join(f'<figure><img alt="{e(name)}" src="{src}"><figcaption class="meta">{e(name)}</figcaption>'
                   f"</figure>" for name, src in _plots(record, views, metrics))
    title = f"{record.pipeline} on {record.task}"
    note = f"; Δ: this run minus {e(against_name)}" if against else ""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>"
            f"<p class='meta'>{len(views)} queries; click a query for its documents (gold highlighted), answer and "
            f"verdicts; click a metric to sort{note}</p>"
            f"<table id='queries'><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows)
            + f"\n</tbody></table><h2>Plots</h2><div class='plots'>{figs}</div><script>{_JS}</script>"
            "</body></html>\n")


def _plots(record: RunRecord, views: list[QueryView], metrics: list[str]) -> list[tuple[str, str]]:
    """R@k against k (metrics.json curves) and a histogram of each metric's per-query values, as PNG data URIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ragbench.report.leaderboard import png

    out = []
    curve = record.data.get("curves", {}).get("R@k", {})
    if len(curve) >= 2:
        ks = sorted(curve, key=int)
        fig, ax = plt.subplots(figsize=(5, 3.4), dpi=100)
        ax.plot([int(k) for k in ks], [curve[k] for k in ks], marker="o", markersize=3)
        ax.set(xscale="log", xlabel="k", ylabel="R@k", ylim=(0, 1.02), title="recall at k")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out.append(("R@k", png(fig)))
    for m in metrics:
        values = [v.metrics[m] for v in views if isinstance(v.metrics.get(m), int | float)]
        fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
        ax.hist(values, bins=20, color="#1f3b57")
        ax.set(xlabel=m, ylabel="queries", title=f"{m} per query")
        fig.tight_layout()
        out.append((f"{m} histogram", png(fig)))
    return out
