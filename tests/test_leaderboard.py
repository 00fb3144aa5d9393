"""ragbench leaderboard on real SciFact and PopQA-sample BM25 runs: selection, sorting, the five
formats, and the HTML page rendered in a real headless Chromium (screenshot checked)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ragbench.cli import main


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three SciFact runs (bm25 twice: k1 0.9, then k1 0.05 under the same name; a renamed b=1 variant) and a
    PopQA-sample run."""
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "scifact" / "corpus.jsonl.gz").exists():
        pytest.skip(f"SciFact not found under {SHARED_DATA}")
    root = tmp_path_factory.mktemp("results")
    env = {"RAGBENCH_CACHE": str(root.parent / "cache"), "RAGBENCH_DATA": str(SHARED_DATA)}
    runs = [["--task", "scifact"], ["--task", "scifact", "--set", "bm25.k1=0.05"],
            ["--task", "scifact", "--set", "bm25.b=1.0", "--set", "name=bm25-b1"], ["--task", "popqa-sample"]]
    for args in runs:
        r = CliRunner().invoke(main, ["run", "pipelines/bm25.yaml", *args, "--results", str(root)], env=env)
        assert r.exit_code == 0, r.output
    return root


def _metrics(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) | {"folder": p.parent} for p in sorted(results.rglob("metrics.json"))]


def _board(results: Path, *args: str) -> str:
    r = CliRunner().invoke(main, ["leaderboard", str(results), *args])
    assert r.exit_code == 0, r.output
    return r.output


def test_latest_or_best_run_per_pipeline_and_task(results: Path) -> None:
    runs = _metrics(results)
    bm25 = [m for m in runs if m["task"] == "scifact" and m["pipeline"] == "bm25"]
    assert len(bm25) == 2
    best = max(bm25, key=lambda m: m["metrics"]["nDCG@10"])
    latest = max(bm25, key=lambda m: str(yaml.safe_load((m["folder"] / "config.lock.yaml").read_text())["created"]))
    assert best is not latest  # k1 = 0.05 ran last and is worse
    rows = json.loads(_board(results, "--format", "json"))
    assert len(rows) == 3
    assert {(r["task"], r["pipeline"]) for r in rows} == {("scifact", "bm25"), ("scifact", "bm25-b1"),
                                                          ("popqa-sample", "bm25")}
    row = next(r for r in rows if r["task"] == "scifact" and r["pipeline"] == "bm25")
    assert row["nDCG@10"] == pytest.approx(latest["metrics"]["nDCG@10"])
    rows = json.loads(_board(results, "--format", "json", "--pick", "best", "--sort", "nDCG@10"))
    row = next(r for r in rows if r["task"] == "scifact" and r["pipeline"] == "bm25")
    assert row["nDCG@10"] == pytest.approx(best["metrics"]["nDCG@10"]) and row["queries"] == best["n_queries"]


def test_sorting_and_formats_agree_with_the_run_folders(results: Path) -> None:
    import pandas as pd

    csv = pd.read_csv(io.StringIO(_board(results, "--format", "csv", "--pick", "best", "--sort", "R@100")))
    scifact = csv[csv["task"] == "scifact"]
    assert list(scifact["R@100"]) == sorted(scifact["R@100"], reverse=True)  # sorted within the task, best first
    by_folder = {str(m["folder"].relative_to(results)): m for m in _metrics(results)}
    for _, row in csv.iterrows():
        stored = by_folder[row["run"]]["metrics"]
        for metric in ("nDCG@10", "R@100", "RR@10"):
            assert row[metric] == pytest.approx(stored[metric], rel=1e-5)
    md = _board(results, "--format", "md", "-m", "nDCG@10", "-m", "R@100", "--pick", "best", "--sort", "nDCG@10")
    lines = [line.split(" | ") for line in md.splitlines() if line.startswith("| scifact")]
    assert len(lines) == 2
    for col in (3, 4):  # per column, bold exactly where the value is the task's best
        values = [float(cells[col].strip("*")) for cells in lines]
        assert [cells[col].startswith("**") for cells in lines] == [v == max(values) for v in values]
    assert float(lines[0][3].strip("*")) >= float(lines[1][3].strip("*"))  # sorted by nDCG@10
    tex = _board(results, "--format", "latex", "-m", "nDCG@10", "--pick", "best", "--sort", "nDCG@10")
    assert all(rule in tex for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}{llrr}"))
    best = max(m["metrics"]["nDCG@10"] for m in _metrics(results) if m["task"] == "scifact")
    assert f"\\textbf{{{best:.4f}}}" in tex and "popqa-sample" in tex


def test_bad_input_exits_2_with_a_clear_line(results: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["leaderboard", str(results), "-m", "nDCG@11"])
    assert r.exit_code == 2 and "no run has nDCG@11" in r.output
    r = CliRunner().invoke(main, ["leaderboard", str(tmp_path)])
    assert r.exit_code == 2 and "no run folders found" in r.output
    broken = tmp_path / "broken"
    shutil.copytree(next(results.rglob("metrics.json")).parent, broken / "run")
    (broken / "run" / "metrics.json").write_text('{"task": "scifact"}')
    r = CliRunner().invoke(main, ["leaderboard", str(broken)])
    assert r.exit_code == 2 and "metrics.json" in r.output and "pipeline" in r.output


def _near(pixels, rgb: tuple[int, int, int], tol: int = 40) -> int:
    import numpy as np

    return int((np.abs(pixels[..., :3].astype(int) - np.array(rgb)).sum(axis=-1) < tol).sum())


def test_html_page_renders_table_and_plots_in_headless_chromium(results: Path, tmp_path: Path, chrome) -> None:
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By

    page = tmp_path / "leaderboard.html"
    r = CliRunner().invoke(main, ["leaderboard", str(results), "-o", str(page), "--pick", "best", "--sort", "nDCG@10"])
    assert r.exit_code == 0, r.output
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # standalone: nothing to fetch
    chrome.get(page.as_uri())
    table = chrome.find_element(By.ID, "leaderboard")
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 3 and table.size["height"] > 3 * 15
    cells = [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")]  # the rendered text, as a reader sees it
    assert cells[0] in ("popqa-sample", "scifact") and cells[1].startswith("bm25")
    shot = np.array(Image.open(io.BytesIO(table.screenshot_as_png)))
    assert _near(shot, (0x1F, 0x3B, 0x57), 10) > 2000  # the header band is painted
    assert _near(shot, (0xE5, 0xF2, 0xE5), 10) > 500  # best cells highlighted
    assert _near(shot, (0, 0, 0), 200) > 500  # and the cells hold text
    figure = chrome.find_element(By.ID, "recall-scifact")
    img = figure.find_element(By.TAG_NAME, "img")
    assert chrome.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 300
    plot = np.array(Image.open(io.BytesIO(img.screenshot_as_png)))
    assert plot.shape[1] > 300 and plot.shape[0] > 200
    # two pipelines on SciFact: matplotlib's first two line colours are drawn
    assert _near(plot, (0x1F, 0x77, 0xB4)) > 200 and _near(plot, (0xFF, 0x7F, 0x0E)) > 200
    chrome.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_best_is_marked_among_rows_on_the_same_queries_and_never_for_a_tie_of_all() -> None:
    from ragbench.report.leaderboard import RunEntry, best_mask, frame, notes

    def entry(name: str, n: int, **metrics: float) -> RunEntry:
        return RunEntry(Path(name), "popqa", name, n, "2026-01-01T00:00:00+00:00", metrics)

    df = frame([entry("full-a", 741, nDCG=0.6, EM=0.0), entry("full-b", 741, nDCG=0.5, EM=0.0),
                entry("limited", 300, nDCG=0.9, EM=0.0), entry("limited-b", 300, nDCG=0.8, EM=0.0)], sort="nDCG")
    marked = {(row.pipeline, m) for i, row in df.iterrows() for m in ("nDCG", "EM") if best_mask(df).at[i, m]}
    # a --limit run does not outrank full runs; all-zero EM has no best
    assert marked == {("full-a", "nDCG"), ("limited", "nDCG")}
    assert notes(df) and "300, 741" in notes(df)[0]


def test_runs_over_passages_and_over_documents_meet_at_the_document_level() -> None:
    from ragbench.report.leaderboard import RunEntry, best_mask, frame, notes

    def entry(name: str, **metrics: float) -> RunEntry:
        return RunEntry(Path(name), "frames", name, 621, "2026-01-01T00:00:00+00:00", metrics)

    df = frame([entry("articles", **{"R@10": 0.59}), entry("other-articles", **{"R@10": 0.40}),
                entry("passages", **{"R@10": 0.12, "R@10[doc]": 0.75})], sort="R@10[doc]")
    assert list(df["pipeline"]) == ["passages", "articles", "other-articles"]
    assert list(df["R@10[doc]"]) == [0.75, 0.59, 0.40]  # over whole articles, M[doc] is M
    mask = best_mask(df)
    marked = {(row.pipeline, m) for i, row in df.iterrows() for m in ("R@10", "R@10[doc]") if mask.at[i, m]}
    # R@10 over passages is not ranked against R@10 over articles
    assert marked == {("passages", "R@10[doc]"), ("articles", "R@10")}
    assert any("R@10" not in n and "M[doc]" in n for n in notes(df))


def test_one_row_per_breakdown_value_ranked_within_it() -> None:
    from ragbench.errors import RagbenchError
    from ragbench.report.leaderboard import RunEntry, best_mask, frame

    def entry(name: str, overall: float, groups: dict[str, tuple[int, float]]) -> RunEntry:
        breakdown = {"reasoning_types": {g: {"R@10": {"mean": v, "n": n}} for g, (n, v) in groups.items()}}
        return RunEntry(Path(name), "frames", name, 621, "2026-01-01T00:00:00+00:00", {"R@10": overall},
                        breakdown=breakdown)

    runs = [entry("a", 0.6, {"Tabular reasoning": (181, 0.4), "Temporal reasoning": (194, 0.7)}),
            entry("b", 0.5, {"Tabular reasoning": (181, 0.5), "Temporal reasoning": (194, 0.6)})]
    df = frame(runs, by="reasoning_types")
    assert list(df.columns[:4]) == ["task", "reasoning_types", "pipeline", "queries"]
    assert [(r.reasoning_types, r.pipeline, r.queries, r["R@10"]) for _, r in df.iterrows()] == [
        ("Tabular reasoning", "b", 181, 0.5), ("Tabular reasoning", "a", 181, 0.4),
        ("Temporal reasoning", "a", 194, 0.7), ("Temporal reasoning", "b", 194, 0.6)]
    mask = best_mask(df)
    assert [bool(mask.at[i, "R@10"]) for i in df.index] == [True, False, True, False]  # best within each value
    with pytest.raises(RagbenchError, match="no run has a breakdown by 'domain'"):
        frame(runs, by="domain")
