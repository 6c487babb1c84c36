"""Data parallelism over a 1-D device mesh (axis `data`), on one host or many (jax.distributed).

Params and optimizer state are replicated; each batch is split over `data`; XLA adds the gradient
all-reduce. The same jitted train_epoch/evaluate run on 1 or N devices, in 1 or N processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from mlp_jax.config import Config, ConfigError
from mlp_jax.signals import exit_on_signal_while_blocked

DATA_AXIS = "data"

Tree = TypeVar("Tree")


def initialize_distributed(config: Config) -> None:
    """Join the other processes when the flags or the launcher (SLURM, Open MPI, TPU) say so.

    Must run before any JAX computation. A no-op for a single process, or when already joined.
    """
    if jax.distributed.is_initialized():
        return
    flags = (config.coordinator, config.num_processes, config.process_id)
    launched = _launched_as_several_processes()
    if all(value is None for value in flags) and not launched:
        return
    if config.coordinator is None and not launched and (config.num_processes or 1) > 1:
        raise ConfigError(
            "coordinator",
            f"--num-processes {config.num_processes} needs --coordinator host:port (the "
            "address of process 0), unless a SLURM, Open MPI or TPU launcher provides it",
        )
    where = config.coordinator or "the coordinator"
    with exit_on_signal_while_blocked("mlp_jax.train", f"waiting for {where}"):
        # JAX aborts the process (a C++ LOG(FATAL)) when its initialization_timeout passes; this
        # timer, 10 s earlier, leaves first with one line instead.
        give_up = threading.Timer(config.coordinator_timeout, _coordinator_timed_out, (config,))
        give_up.daemon = True
        give_up.start()
        try:
            # What the flags leave out, jax.distributed detects from the environment.
            jax.distributed.initialize(
                coordinator_address=config.coordinator,
                num_processes=config.num_processes,
                process_id=config.process_id,
                initialization_timeout=config.coordinator_timeout + 10,
            )
        except Exception as error:  # jax raises ValueError/RuntimeError/XlaRuntimeError here
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            raise ConfigError(
                "coordinator",
                f"could not join the processes at {where} within --coordinator-timeout "
                f"{config.coordinator_timeout}s ({type(error).__name__}: {reason}); start every "
                "process with the same --coordinator and --num-processes, process 0 first",
            ) from None
        finally:
            give_up.cancel()


def _coordinator_timed_out(config: Config) -> None:
    where = config.coordinator or "the coordinator (from the launcher)"
    os.write(
        2,
        f"mlp_jax: error: --coordinator: not every one of the {config.num_processes or 'N'} "
        f"processes reached {where} within --coordinator-timeout {config.coordinator_timeout}s; "
        "check the address, and start every process (process 0 first)\n".encode(),
    )
    os._exit(2)


def available_devices() -> list[jax.Device]:
    """jax.devices(), or ConfigError when the backend JAX_PLATFORMS asks for cannot start."""
    try:
        return jax.devices()
    except RuntimeError as error:
        platforms = os.environ.get("JAX_PLATFORMS", "")
        reason = str(error).strip().splitlines()[0][:200]
        raise ConfigError(
            "JAX_PLATFORMS",
            f"no usable device for JAX_PLATFORMS={platforms!r} ({reason}); unset it to use "
            "the CPU, or install the matching jax package (e.g. jax[cuda12])",
        ) from None


def _launched_as_several_processes() -> bool:
    """True inside a multi-task `srun` or `mpirun`, on a multi-host TPU slice, or with JAX's env."""
    env = os.environ
    return (
        "JAX_COORDINATOR_ADDRESS" in env
        or ("SLURM_STEP_NODELIST" in env and _count(env, "SLURM_NTASKS") > 1)
        or ("OMPI_MCA_orte_hnp_uri" in env and _count(env, "OMPI_COMM_WORLD_SIZE") > 1)
        or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    )


def _count(env: dict[str, str], name: str) -> int:
    """A launcher's process count: 1 when unset or empty; ConfigError naming it otherwise."""
    value = env.get(name, "").strip() or "1"
    if not (value.isascii() and value.isdigit()):
        raise ConfigError(name, f"must be a number of processes, got {value!r}")
    return int(value)


def is_main_process() -> bool:
    """Process 0 is the one that prints and writes metrics; all processes compute."""
    return jax.process_index() == 0


def make_mesh(config: Config) -> Mesh:
    """The 1-D `data` mesh over --devices (auto: every device of every process); ConfigError if
    --devices asks for more devices than there are, or the global batch does not split evenly."""
    available = jax.device_count()
    count = available if config.devices == "auto" else int(config.devices)
    if count > available:
        raise ConfigError(
            "devices", f"asks for {count} devices but {available} are visible; use auto"
        )
    if jax.process_count() > 1 and count != available:
        raise ConfigError(
            "devices",
            f"with {jax.process_count()} processes the mesh spans all {available} devices; "
            "use auto",
        )
    check_batch_divides(config.batch_size, count)
    # Auto axes: XLA propagates shardings (linen's Dropout fails under jax 0.10's Explicit default).
    return jax.make_mesh(
        (count,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:count]
    )


def check_batch_divides(batch_size: int, num_devices: int) -> None:
    """Each device takes batch_size / num_devices examples, so that must be a whole number."""
    if batch_size % num_devices == 0:
        return
    below = batch_size // num_devices * num_devices
    nearest = f"{below} or {below + num_devices}" if below > 0 else f"{num_devices}"
    raise ConfigError(
        "batch_size",
        f"the global batch {batch_size} does not split evenly over {num_devices} devices; "
        f"use a multiple of {num_devices}, e.g. {nearest}",
    )


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array: params, optimizer state, keys, the resident data set."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (example) axis split over `data`; the rest of each example stays whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def put_replicated(tree: Tree, mesh: Mesh) -> Tree:
    """Place a pytree on every device of the mesh; each process passes its own, identical copy."""
    return _from_process_data(tree, replicated(mesh))


def process_rows(global_batch_size: int) -> slice:
    """The rows of a global batch that this process feeds (its devices' contiguous block)."""
    per_process = global_batch_size // jax.process_count()
    start = jax.process_index() * per_process
    return slice(start, start + per_process)


def shard_batch(local_batch: Tree, mesh: Mesh) -> Tree:
    """A global batch, split over `data`, from the rows this process loaded (see process_rows).

    For loops that feed train_step from the host; train_epoch instead reads a resident train set.
    """
    return _from_process_data(local_batch, batch_sharding(mesh))


def _from_process_data(tree: Tree, sharding: NamedSharding) -> Tree:
    return jax.tree.map(
        lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), tree
    )


def data_parallel(fn: Callable[..., Any], mesh: Mesh, *, donate_state: bool) -> Callable[..., Any]:
    """jit `fn(state, *arrays)` with every input and output replicated over the mesh.

    Bind static arguments (batch_size, batch_sharding) with functools.partial first. Inside, the
    batch_sharding constraint of train_epoch/evaluate splits the work over `data`.
    """
    everywhere = replicated(mesh)
    return jax.jit(
        fn,
        in_shardings=everywhere,
        out_shardings=everywhere,
        donate_argnums=0 if donate_state else (),
    )


def describe(mesh: Mesh) -> str:
    """One line for the log, e.g. `mesh data=8 over 8 cpu devices in 1 process`."""
    platform = mesh.devices.flat[0].platform
    processes = jax.process_count()
    return (
        f"mesh {DATA_AXIS}={mesh.devices.size} over {mesh.devices.size} {platform} devices "
        f"in {processes} process{'es' if processes > 1 else ''}"
    )
