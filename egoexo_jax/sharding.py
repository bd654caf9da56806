"""Device mesh, multi-host start-up and batch placement (data parallelism on the ``data`` axis).

One code path for 1 CPU, 1 GPU, 8 GPUs and TPU pods: a 1-D ``Mesh`` over every device of every
process; parameters are replicated, batches are split on their leading axis. Each host reads its
own slice of the global batch (``pipeline`` gives host ``p`` the positions ``p, p+P, ...``) and
:func:`global_batch` assembles the host-local numpy arrays into global ``jax.Array`` s.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Calls ``jax.distributed.initialize()`` when launched as one of several processes.

    Detected from the environment: TPU pod workers (``TPU_WORKER_HOSTNAMES`` with several hosts),
    SLURM with several tasks, or an explicit ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
    ``JAX_PROCESS_ID`` triple (useful on CPU; set ``JAX_CPU_COLLECTIVES=gloo`` there).
    """
    if jax.distributed.is_initialized():
        return
    env = os.environ
    coordinator = env.get("JAX_COORDINATOR_ADDRESS")
    if coordinator and env.get("JAX_NUM_PROCESSES"):
        if env.get("JAX_CPU_COLLECTIVES"):
            jax.config.update("jax_cpu_collectives_implementation", env["JAX_CPU_COLLECTIVES"])
        jax.distributed.initialize(
            coordinator, num_processes=int(env["JAX_NUM_PROCESSES"]), process_id=int(env["JAX_PROCESS_ID"])
        )
    elif len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1 or int(env.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()
    else:
        return
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def make_mesh(num_devices: int | None = None) -> Mesh:
    """1-D mesh ``('data',)`` over all devices (or the first ``num_devices``, single-process tests)."""
    devices = jax.devices()
    if num_devices is not None:
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local: Mapping[str, Any], mesh: Mesh) -> dict:
    """Host-local ``{name: [B_host, ...] numpy}`` -> global arrays ``[B_host * processes, ...]``
    split over the ``data`` axis."""
    sharding = data_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree (identical on every host) replicated on the mesh."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def to_host(tree: Any) -> Any:
    """Fully replicated (or fully addressable) arrays -> numpy on this host."""

    def fetch(x):
        if isinstance(x, jax.Array) and x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(fetch, tree)
