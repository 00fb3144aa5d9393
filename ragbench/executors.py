"""Where a run's heavy work executes: in this process (local, the default) or on a Ray cluster.

The executor is an execution setting: it never enters a cache key, so a Ray run and a local run
read and write the same cache entries and produce identical outputs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragbench.errors import RagbenchError


class ExecutorSpec(BaseModel):
    """`--executor ray --workers N --ray-address ADDR`, or a pipeline's `executor:` block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "ray"] = Field("local", description="local: in-process; ray: a Ray cluster")
    workers: int | None = Field(None, ge=1, description="Ray workers (actors) per parallel step; default: the "
                                                        "cluster's CPUs (GPUs for GPU stages)")
    address: str | None = Field(None, description="Ray cluster to join (ray://host:10001 or auto); "
                                                   "default: start a local cluster")

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"


LOCAL = ExecutorSpec()


def ray_session(spec: ExecutorSpec) -> Any:
    """The `ray` module, connected: to `spec.address` when given, else to a local cluster it starts once.

    Ray is an optional extra (`pip install 'ragbench[ray]'`); without it this fails in one line.
    """
    try:
        import ray
    except ImportError:
        raise RagbenchError.at("executor", "--executor ray needs Ray: pip install 'ragbench[ray]'") from None
    if not ray.is_initialized():
        if spec.address:
            ray.init(address=spec.address, log_to_driver=False)
        else:
            ray.init(num_cpus=spec.workers, include_dashboard=False, log_to_driver=False)
    return ray
