"""Looking into a run: `ragbench show` (worst queries, one query's ranking with relevance marks, answer, gold,
verdicts) and the `ragbench report` HTML explorer, clicked and sorted in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragbench.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two BM25 runs on 12 PopQA sample questions (k1 0.9 and 0.2), one cache."""
    tmp = tmp_path_factory.mktemp("explore")
    env = {"RAGBENCH_CACHE": str(tmp / "cache")}
    folders = []
    for k1 in ("0.9", "0.2"):
        folder = tmp / f"run-{k1}"
        r = CliRunner().invoke(main, ["run", "bm25", "--task", "popqa-sample", "--limit", "12", "--set",
                                      f"bm25.k1={k1}", "--out", str(folder)], env=env)
        assert r.exit_code == 0, r.output
        folders.append(folder)
    return folders[0], folders[1]


def _qrels_and_run(folder: Path) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    from ragbench.tasks import load_task
    from ragbench.tasks.card import load_task_card

    task = load_task(load_task_card("popqa-sample")[0], limit=12)
    ranked: dict[str, list[str]] = {}
    for line in (folder / "run.trec").read_text().splitlines():
        qid, _, doc, *_ = line.split()
        ranked.setdefault(qid, []).append(doc)
    return {q: {d for d, g in rels.items() if g > 0} for q, rels in task.qrels.items()}, ranked


def test_show_lists_the_worst_queries_and_one_querys_ranking(runs: tuple[Path, Path]) -> None:
    run, _ = runs
    per_query = [json.loads(line) for line in (run / "per_query.jsonl").read_text().splitlines()]
    worst = sorted(per_query, key=lambda r: (r["nDCG@10"], r["query_id"]))[:3]
    r = CliRunner().invoke(main, ["show", str(run), "--worst", "nDCG@10", "-n", "3"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    listed = [line.split("│")[1].strip() for line in r.output.splitlines() if line.startswith("│")]
    assert listed == [w["query_id"] for w in worst]
    qid = worst[0]["query_id"]
    r = CliRunner().invoke(main, ["show", str(run), "--query", qid, "--depth", "5"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    qrels, ranked = _qrels_and_run(run)
    rows = [line for line in r.output.splitlines() if line.strip()[:1].isdigit() and "│" in line]
    assert len(rows) == 5
    for line, doc in zip(rows, ranked[qid][:5], strict=True):  # each rank's document, marked as the qrels say
        assert doc in line and ("✓" in line) == (doc in qrels[qid])
    bad = CliRunner().invoke(main, ["show", str(run), "--worst", "nope"])
    assert bad.exit_code == 2 and "--worst" in bad.output and "nDCG@10" in bad.output


def test_report_page_lists_every_query_opens_documents_and_sorts(runs: tuple[Path, Path], tmp_path: Path,
                                                                 chrome) -> None:
    from selenium.webdriver.common.by import By

    run, other = runs
    page = tmp_path / "run.html"
    r = CliRunner().invoke(main, ["report", str(run), "--against", str(other), "-o", str(page)])
    assert r.exit_code == 0, r.output
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # standalone
    per_query = {json.loads(x)["query_id"]: json.loads(x) for x in (run / "per_query.jsonl").read_text().splitlines()}
    qrels, ranked = _qrels_and_run(run)
    driver = chrome
    driver.get(page.as_uri())
    rows = driver.find_elements(By.CSS_SELECTOR, "#queries tr.q")
    assert sorted(r.get_attribute("data-qid") for r in rows) == sorted(per_query)  # every query listed
    qid = rows[0].get_attribute("data-qid")
    detail = driver.find_element(By.CSS_SELECTOR, f'tr.detail[data-for="{qid}"]')
    assert not detail.is_displayed()
    rows[0].click()
    assert detail.is_displayed()
    docs = detail.find_elements(By.CSS_SELECTOR, "li[data-docid]")
    assert [d.get_attribute("data-docid") for d in docs] == ranked[qid][:10]
    marked = {d.get_attribute("data-docid") for d in docs if d.get_attribute("data-relevant") == "1"}
    assert marked == qrels[qid] & set(ranked[qid][:10]) and marked
    assert all(d.is_displayed() for d in docs)
    driver.find_element(By.CSS_SELECTOR, 'th[data-col="nDCG@10"]').click()  # ascending
    order = [r.get_attribute("data-qid") for r in driver.find_elements(By.CSS_SELECTOR, "#queries tr.q")]
    values = [per_query[q]["nDCG@10"] for q in order]
    assert values == sorted(values)
    driver.find_element(By.CSS_SELECTOR, 'th[data-col="delta:nDCG@10"]').click()
    cells = driver.find_elements(By.CSS_SELECTOR, '#queries tr.q td[data-col="delta:nDCG@10"]')
    deltas = [float(c.get_attribute("data-value")) for c in cells]
    assert deltas == sorted(deltas)
    assert driver.find_elements(By.CSS_SELECTOR, ".plots img")  # R@k and the histograms
