"""Data parallelism over a 1-D device mesh (axis `data`), on one host or many (jax.distributed):
params and optimizer state are replicated, each batch is split over `data`, and XLA adds the
gradient all-reduce. The same jitted train_epoch/evaluate run on 1 or N devices and processes."""

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
    """Join the other processes when the flags or a launcher (SLURM, Open MPI, TPU) say so; a
    no-op for one process or when already joined. Must run before any JAX computation."""
    if jax.distributed.is_initialized():
        return
    launched = _launched_as_several_processes()
    flags = (config.coordinator, config.num_processes, config.process_id)  # initialize's order
    if flags == (None, None, None) and not launched:
        return
    if config.coordinator is None and not launched and (config.num_processes or 1) > 1:
        needs = "needs --coordinator host:port, unless a SLURM, Open MPI or TPU launcher gives it"
        raise ConfigError("coordinator", f"--num-processes {config.num_processes} {needs}")
    where, timeout = config.coordinator or "the coordinator", config.coordinator_timeout
    failed = (
        f"could not join the {config.num_processes or 'N'} processes at {where} within "
        f"--coordinator-timeout {timeout}s; start every process with the same --coordinator and "
        "--num-processes, process 0 first"
    )

    def give_up() -> None:  # on a timer thread: the main thread is blocked in C++
        os.write(2, f"mlp_jax: error: --coordinator: {failed}\n".encode())
        os._exit(2)

    with exit_on_signal_while_blocked("mlp_jax.train", f"waiting for {where}"):
        # JAX aborts the process (a C++ LOG(FATAL)) at its initialization_timeout; this timer,
        # 10 s earlier, leaves first with one line instead.
        timer = threading.Timer(timeout, give_up)
        timer.daemon = True
        timer.start()
        try:  # what the flags leave out, jax.distributed detects from the environment
            jax.distributed.initialize(*flags, initialization_timeout=timeout + 10)
        except Exception as error:  # jax raises ValueError/RuntimeError/XlaRuntimeError here
            raise ConfigError("coordinator", f"{failed} ({_first_line(error)})") from None
        finally:
            timer.cancel()


def _first_line(error: Exception) -> str:
    """`Type: the first line of the message` (at most 200 characters), for a one-line error."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


def available_devices() -> list[jax.Device]:
    """jax.devices(), or ConfigError when the backend JAX_PLATFORMS asks for cannot start."""
    try:
        return jax.devices()
    except RuntimeError as error:
        raise ConfigError(
            "JAX_PLATFORMS",
            f"no usable device for JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', '')!r} "
            f"({_first_line(error)}); unset it, or install the matching jax (e.g. jax[cuda12])",
        ) from None


def _launched_as_several_processes() -> bool:
    """True inside a multi-task `srun` or `mpirun`, on a multi-host TPU slice, or with JAX's env."""
    env = os.environ

    def count(name: str) -> int:  # a launcher's process count: 1 when unset or empty
        value = env.get(name, "").strip() or "1"
        if not (value.isascii() and value.isdigit()):
            raise ConfigError(name, f"must be a number of processes, got {value!r}")
        return int(value)

    return (
        "JAX_COORDINATOR_ADDRESS" in env
        or ("SLURM_STEP_NODELIST" in env and count("SLURM_NTASKS") > 1)
        or ("OMPI_MCA_orte_hnp_uri" in env and count("OMPI_COMM_WORLD_SIZE") > 1)
        or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    )


def is_main_process() -> bool:
    """Process 0 is the one that prints and writes metrics; all processes compute."""
    return jax.process_index() == 0


def make_mesh(config: Config) -> Mesh:
    """The 1-D `data` mesh over --devices (auto: every device of every process); ConfigError if
    --devices asks for more devices than there are, or the global batch does not split evenly."""
    visible, processes = jax.device_count(), jax.process_count()
    count = visible if config.devices == "auto" else int(config.devices)
    if count > visible:
        raise ConfigError("devices", f"asks for {count} devices but {visible} exist; use auto")
    if processes > 1 and count != visible:
        raise ConfigError("devices", f"{processes} processes use all {visible} devices; use auto")
    check_batch_divides(config.batch_size, count)
    # Auto axes: XLA propagates shardings (linen's Dropout fails under jax 0.10's Explicit default).
    axis_types = (AxisType.Auto,)
    return jax.make_mesh((count,), (DATA_AXIS,), axis_types, devices=jax.devices()[:count])


def check_batch_divides(batch_size: int, num_devices: int) -> None:
    """Each device takes batch_size / num_devices examples, so that must be a whole number."""
    if batch_size % num_devices:
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
    """A global batch, split over `data`, from the rows this process loaded (see process_rows);
    for loops that feed train_step from the host (train_epoch reads a resident train set)."""
    return _from_process_data(local_batch, batch_sharding(mesh))


def _from_process_data(tree: Tree, sharding: NamedSharding) -> Tree:
    make = jax.make_array_from_process_local_data
    return jax.tree.map(lambda leaf: make(sharding, np.asarray(leaf)), tree)


def data_parallel(fn: Callable[..., Any], mesh: Mesh, *, donate_state: bool) -> Callable[..., Any]:
    """jit `fn(state, *arrays)` with every input and output replicated over the mesh; bind static
    arguments first (functools.partial). Their batch_sharding splits the work over `data`."""
    everywhere, donate = replicated(mesh), 0 if donate_state else ()
    return jax.jit(fn, in_shardings=everywhere, out_shardings=everywhere, donate_argnums=donate)


def describe(mesh: Mesh) -> str:
    """One line for the log, e.g. `mesh data=8 over 8 cpu devices in 1 process`."""
    size, processes = mesh.devices.size, jax.process_count()
    where = f"{processes} process{'es' if processes > 1 else ''}"
    return f"mesh {DATA_AXIS}={size} over {size} {mesh.devices.flat[0].platform} devices in {where}"
