"""Where a run's heavy work executes: in this process (local, the default) or on a Ray cluster.

The executor is an execution setting: it never enters a cache key, so a Ray run and a local run
read and write the same cache entries and produce identical outputs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
