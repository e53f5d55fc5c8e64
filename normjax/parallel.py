"""Devices: the data-parallel mesh, shardings, and multi-host start-up.

One mesh axis, `data`, over every device of every process: the batch is sharded over it and
parameters are replicated; XLA inserts the gradient all-reduce.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from normjax.errors import UserError

DATA = "data"


def maybe_initialize_distributed(flag: bool = False) -> None:
    """`jax.distributed.initialize()` when asked (flag or NORMJAX_DISTRIBUTED=1) and not done yet.

    On TPU VMs and SLURM/Open MPI clusters JAX discovers the coordinator by itself. Elsewhere
    (several processes on one machine, a hand-made cluster) set `JAX_COORDINATOR_ADDRESS`
    (host:port of process 0), `NORMJAX_NUM_PROCESSES` and `NORMJAX_PROCESS_ID`. CPU collectives
    across processes go through gloo (XLA's default CPU client has none).

    Example:
      >>> maybe_initialize_distributed()  # nothing asked: nothing done
    """
    if (flag or os.environ.get("NORMJAX_DISTRIBUTED") == "1") and not jax.distributed.is_initialized():
        kwargs = {}
        if "NORMJAX_NUM_PROCESSES" in os.environ:
            try:
                kwargs = {
                    "coordinator_address": os.environ["JAX_COORDINATOR_ADDRESS"],
                    "num_processes": int(os.environ["NORMJAX_NUM_PROCESSES"]),
                    "process_id": int(os.environ["NORMJAX_PROCESS_ID"]),
                }
            except (KeyError, ValueError) as e:
                raise UserError(
                    "NORMJAX_NUM_PROCESSES needs JAX_COORDINATOR_ADDRESS=host:port and an integer "
                    f"NORMJAX_PROCESS_ID ({type(e).__name__}: {e})"
                ) from None
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**kwargs)


def is_writer() -> bool:
    """Whether this process writes run files (process 0; every process computes)."""
    return jax.process_index() == 0


def broadcast_json(obj: Any) -> Any:
    """Process 0's JSON-able `obj` on every process (itself on one process).

    Host-side decisions (which runs to train, from which step) are made once, by process 0, and
    shared: processes that decided separately could disagree (a file written in between) and
    then wait forever on each other's collectives.

    Example:
      >>> broadcast_json({"resume": 8})
      {'resume': 8}
    """
    if jax.process_count() == 1:
        return obj
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(obj).encode(), np.uint8) if is_writer() else np.zeros(0, np.uint8)
    n = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
    buf = np.zeros(n, np.uint8)
    buf[: data.size] = data
    return json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf))).decode())


def decide(fn: Callable[[], Any]) -> Any:
    """`fn()` run on process 0 alone and its result (or its UserError) shared with every process.

    Example:
      >>> decide(lambda: 1 + 1)
      2
    """
    if jax.process_count() == 1:
        return fn()
    out = None
    if is_writer():
        try:
            out = {"ok": fn()}
        except UserError as e:
            out = {"error": str(e)}
    out = broadcast_json(out)
    if "error" in out:
        raise UserError(out["error"])
    return out["ok"]


def check_same(name: str, value: Any) -> None:
    """Raise on every process unless all processes hold the same `value` (numbers or arrays)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.assert_equal(np.asarray(value), f"processes disagree on {name}")


# The devices of a chip that is not here, while `normjax plan` compiles for it (compile_for).
_target: list[Sequence[jax.Device]] = []


@contextlib.contextmanager
def compile_for(devices: Sequence[jax.Device]) -> Iterator[None]:
    """Inside the block, programs are built for `devices` (compile-only devices of another chip,
    from `jax.experimental.topologies`): `data_mesh` spans them and `platform` is theirs.

    Args:
      devices: the target's devices, all of one platform.

    Example:
      >>> with compile_for(jax.devices()):
      ...     platform()
      'cpu'
    """
    _target.append(list(devices))
    try:
        yield
    finally:
        _target.pop()


def platform() -> str:
    """The platform programs are built for: `cpu`, `gpu` or `tpu` (a `compile_for` target's, else
    the default backend's)."""
    name = _target[-1][0].platform if _target else jax.default_backend()
    return "gpu" if name in ("cuda", "rocm") else name


def compiling_elsewhere() -> bool:
    """Whether programs are being built for a chip that is not here (`compile_for`)."""
    return bool(_target)


def data_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh named `data` over all devices, or a `compile_for` target's (Auto axes: shardings
    propagate by themselves)."""
    if _target:  # in the given order: libtpu gives a v4's TensorCores, which make_mesh refuses
        return jax.sharding.Mesh(np.array(_target[-1]), (DATA,), axis_types=(AxisType.Auto,))
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
