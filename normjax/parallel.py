"""Devices: the data-parallel mesh, shardings, and multi-host start-up.

One mesh axis, `data`, over every device of every process: the batch is sharded over it and
parameters are replicated; XLA inserts the gradient all-reduce.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from normjax.errors import UserError

DATA = "data"


def maybe_initialize_distributed(flag: bool = False) -> None:
    """`jax.distributed.initialize()` when asked (flag or NORMJAX_DISTRIBUTED=1) and not done yet.

    On TPU VMs and SLURM/Open MPI clusters JAX discovers the coordinator by itself.
    """
    if (flag or os.environ.get("NORMJAX_DISTRIBUTED") == "1") and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def data_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh named `data` over all devices (Auto axes: shardings propagate by themselves)."""
    return jax.make_mesh((jax.device_count(),), (DATA,), axis_types=(AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))


def check_batch(batch_size: int, mesh: jax.sharding.Mesh, name: str = "train.batch_size") -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise UserError(f"{name}={batch_size} is not divisible by the device count {n}; use a multiple of {n}")


def put_replicated(x: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
    """A global array replicated on every device; works on one host and on many (each passes the same data)."""
    sharding = replicated(mesh)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
