"""ragbench as an installed package: the catalogue ships in the wheel, and users' folders come first.

The wheel test builds from a copy of the sources (an in-tree setuptools build reuses `build/lib`, where modules
deleted from the tree linger and would be shipped), installs it into a folder outside the repository and runs
the CLI from another directory, with the repository kept off the import path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragbench import catalog
from ragbench.cli import main
from ragbench.config import load_pipeline
from ragbench.errors import RagbenchError
from ragbench.tasks.card import load_task_card

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "README.md", "ragbench", "pipelines", "tasks")


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheel_installed_outside_the_repository(tmp_path: Path) -> None:
    src, wheels, target, work = (tmp_path / name for name in ("src", "wheels", "target", "work"))
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(wheels)], check=True)
    (wheel,) = wheels.glob("ragbench-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAGBENCH_PATH", "RAGBENCH_DATA", "PYTHONPATH")}
    env |= {"PYTHONPATH": str(target), "RAGBENCH_CACHE": str(tmp_path / "cache"), "COLUMNS": "400"}

    # the venv's editable install must not win over the wheel: dependencies come from the venv, ragbench not
    where = _cli(["-c", "import ragbench, ragbench.catalog as c; print(ragbench.__file__); print(c.folder('task'))"],
                 work, env).split()
    assert all(Path(p).is_relative_to(target) for p in where), where

    listing = _cli(["-m", "ragbench.cli", "list"], work, env)
    for name in ("popqa-sample", "scifact", "popqa", "litsearch", "frames", "bm25", "dense", "popqa-rag"):
        assert f" {name} " in listing, f"{name} missing from `ragbench list`"
    assert str(target / "ragbench" / "catalog_data" / "tasks") in listing

    _cli(["-m", "ragbench.cli", "run", "bm25", "--task", "popqa-sample", "--results", "R", "--cache-dir", "C"],
         work, env)
    (metrics_file,) = (work / "R").rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))["metrics"]
    recalls = {k: v for k, v in metrics.items() if k.startswith("R@")}
    assert recalls and all(0 < v <= 1 for v in recalls.values()), metrics


# -- the user's folders: RAGBENCH_PATH and `ragbench --catalog` ------------------------------------------------
def _card(name: str, description: str) -> str:
    return f"name: {name}\ndescription: {description}\nembedded: popqa_sample\nmetrics: [R@10]\n"


def _pipeline(name: str, k1: float) -> str:
    return f"name: {name}\nstages:\n  - type: bm25\n    k1: {k1}\n"


@pytest.fixture
def user_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """One folder with pipelines/ and tasks/ subfolders, one with the YAML files side by side."""
    split, flat = tmp_path / "split", tmp_path / "flat"
    for path, text in {
        split / "tasks" / "my-task.yaml": _card("my-task", "mine"),
        split / "tasks" / "scifact.yaml": _card("scifact", "shadowed"),
        split / "pipelines" / "mine.yaml": _pipeline("mine", 1.1),
        split / "pipelines" / "bm25.yaml": _pipeline("bm25", 1.7),
        flat / "flat-task.yaml": _card("flat-task", "flat"),
        flat / "flat-pipe.yaml": _pipeline("flat-pipe", 1.3),
    }.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    monkeypatch.setenv(catalog.ENV, "")  # restored (unset) afterwards, whatever --catalog wrote
    return split, flat


def test_user_folders_come_first(user_folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    split, flat = user_folders
    monkeypatch.setenv(catalog.ENV, os.pathsep.join([str(split), str(flat)]))
    assert load_task_card("my-task")[0].description == "mine"
    assert load_task_card("scifact")[0].description == "shadowed"  # shadows the shipped card
    assert load_task_card("popqa-sample")[1] == catalog.folder("task") / "popqa-sample.yaml"
    assert load_pipeline("bm25").stages[0].options.k1 == 1.7
    assert catalog.find("flat-task", "task") == flat / "flat-task.yaml"
    assert catalog.find("flat-pipe", "pipeline") == flat / "flat-pipe.yaml"

    tasks = {p.stem: p for p in catalog.files("task")}
    assert tasks["scifact"] == split / "tasks" / "scifact.yaml" and "flat-pipe" not in tasks
    assert {"my-task", "flat-task", "popqa-sample", "frames"} <= tasks.keys()
    pipelines = {p.stem for p in catalog.files("pipeline")}
    assert {"mine", "flat-pipe", "popqa-rag"} <= pipelines and "flat-task" not in pipelines
    with pytest.raises(RagbenchError, match="no such task; .*flat-task.*my-task"):
        catalog.find("flat-pipe", "task")


def test_catalog_option(user_folders: tuple[Path, Path]) -> None:
    split, flat = user_folders
    result = CliRunner().invoke(main, ["--catalog", str(split), "--catalog", str(flat), "list"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert {"my-task", "flat-task", "mine", "flat-pipe"} <= rows.keys()
    assert "shadowed" in rows["scifact"]
    assert os.environ[catalog.ENV].split(os.pathsep) == [str(split.resolve()), str(flat.resolve())]
