"""Where a run's heavy work executes: in this process (local, the default) or on a Ray cluster.

The executor is an execution setting: it never enters a cache key, so a Ray run and a local run
read and write the same cache entries and produce identical outputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragbench.errors import RagbenchError


class ExecutorSpec(BaseModel):
    """`--executor ray --workers N --ray-address ADDR`, or a pipeline's `executor:` block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "ray"] = Field("local", description="local: in-process; ray: a Ray cluster")
    workers: int | None = Field(None, ge=1, description="Ray workers (actors) per parallel step; default: the "
                                                        "cluster's CPUs (GPUs for GPU stages)")
    address: str | None = Field(None, description="Ray cluster to join (ray://host:10001 or auto); "
                                                   "default: start a local cluster")

    @model_validator(mode="after")
    def _ray_only(self) -> ExecutorSpec:
        if self.kind == "local" and (self.workers is not None or self.address is not None):
            raise ValueError("workers and address are for kind: ray (the local executor runs in this process)")
        return self

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"

    def describe(self) -> dict[str, Any]:
        """What the lock file records: the executor a run used."""
        return self.model_dump(exclude_none=True)


LOCAL = ExecutorSpec()


def from_options(kind: str | None, workers: int | None, address: str | None) -> ExecutorSpec | None:
    """`--executor/--workers/--ray-address` as a spec (None: none given, the pipeline's block applies).

    --workers or --ray-address alone mean Ray; with `--executor local` they are an error, in one line.
    """
    if kind is None and workers is None and address is None:
        return None
    if kind == "local" and (workers is not None or address is not None):
        raise RagbenchError.at("--executor", "--workers and --ray-address need --executor ray")
    return ExecutorSpec(kind=kind or "ray", workers=workers, address=address)


def ray_session(spec: ExecutorSpec) -> Any:
    """The `ray` module, connected: to `spec.address` when given, else to a local cluster it starts once.

    Ray is an optional extra (`pip install 'ragbench[ray]'`); without it this fails in one line.
    """
    try:
        import ray
    except ImportError:
        raise RagbenchError.at("executor", "--executor ray needs Ray: pip install 'ragbench[ray]'") from None
    if not ray.is_initialized():
        _keep_the_jvms_signal_handler()
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
        if spec.address:
            ray.init(address=spec.address, **quiet)
        else:
            ray.init(num_cpus=spec.workers, include_dashboard=False, **quiet)
    return ray


def _keep_the_jvms_signal_handler() -> None:
    """Stop Ray's driver from installing its SIGSEGV handler over the JVM's (Lucene runs in this process).

    The JVM raises SIGSEGV on purpose (safepoint polls, implicit null checks) and handles it; Ray's absl failure
    handler takes it for a crash and kills the process, at random, whenever Lucene runs after `ray.init` (seen as
    a bare "Segmentation fault" in CI). Ray reads RAY_DISABLE_FAILURE_SIGNAL_HANDLER once, when `ray` is first
    imported, so the flag is also set on the module it was read into; the environment carries it to the local
    cluster's workers.
    """
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        from ray._private import ray_constants
    except ImportError:  # a Ray that moved its constants reads the environment variable set above
        return
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True


class PartWorker(Protocol):
    """What an actor pool runs: picklable; `load` once per actor, then one call per item (a part index)."""

    def load(self) -> None: ...

    def __call__(self, item: int) -> Any: ...


class _Actor:
    """One Ray Data actor: loads its worker once, with one torch thread per CPU it holds, then runs items."""

    def __init__(self, worker: list[Any], threads: int):
        import ray

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:  # pragma: no cover - torch comes with every encoder
            pass
        self.worker: PartWorker = ray.get(worker[0])  # a reference in a list: Ray passes it through unresolved
        self.worker.load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        for item in batch["item"]:
            self.worker(int(item))
        return {"item": batch["item"], "pid": [os.getpid()] * len(batch["item"])}


def map_parts(spec: ExecutorSpec, worker: PartWorker, items: list[int], device: str = "cpu",
              on_start: Callable[[int], None] | None = None) -> Iterator[int]:
    """Run `worker` on each item with a fixed pool of Ray Data actors; yields items as they finish (any order).

    A pool of `spec.workers` actors (default: the cluster's CPUs, or its GPUs for a CUDA device), one CPU
    (and one GPU) each. An actor that dies is restarted by Ray and its item retried; the items are
    idempotent (a part is written atomically), so a retried one is simply written again.
    """
    ray = ray_session(spec)
    from ray.data import ActorPoolStrategy, DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = ctx.enable_operator_progress_bars = False  # ragbench's own bar counts parts
    ctx.print_on_execution_start = False
    gpus = 1.0 if device.startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU")) else 0.0
    workers = spec.workers or max(1, int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1)))
    workers = max(1, min(workers, len(items)))
    if on_start is not None:
        on_start(workers)
    # the worker (its corpus, its model's description) goes into the object store once and stays referenced
    # here until the pool is done, so that an actor Ray restarts finds it again
    ref = ray.put(worker)
    ds = ray.data.from_items([{"item": i} for i in items], override_num_blocks=len(items))
    ds = ds.map_batches(_Actor, fn_constructor_args=([ref], 1), batch_size=1, num_cpus=1, num_gpus=gpus,
                        compute=ActorPoolStrategy(size=workers))
    for row in ds.iter_rows():
        yield int(row["item"])
