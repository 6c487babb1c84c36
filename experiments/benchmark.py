"""Speed of mlp_jax against the lectures' PyTorch loop and a Flax-example host loop, side by side.

python -m experiments.benchmark [--idx-dir DIR] [--out DIR] [--quick] [--time-to-accuracy]
Throughput (default) or time to 88% test accuracy; writes JSON and a Markdown table to --out.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from experiments.common import markdown_table
from mlp_jax import Config, Dataset, train_epoch
from mlp_jax.data import load_idx_dir
from mlp_jax.loop import train_and_evaluate
from mlp_jax.state import build_model, epoch_key, init_state

try:
    import torch

    from experiments.torch_recipe import torch_mlp  # its process imports no JAX
except ImportError:  # torch is the optional extra `.[bench]`; CI installs only `.[test]`
    torch = None

OUT_DIR = Path(__file__).resolve().parent / "results" / "benchmark"
BATCH_SIZES = (12, 128, 1024)
QUICK_BATCH_SIZES = (16, 64)
NUM_TRAIN, NUM_TEST = 60_000, 10_000  # the random workload has Fashion-MNIST's sizes
QUICK_TRAIN, QUICK_TEST = 512, 256
LR = 0.01
# The 5-layer net of the lectures: 784-512-256-128-64-10, ReLU (Config() defaults, --layers 5).
HIDDEN = Config().hidden_sizes


# ----------------------------------------------------------------------------- the roofline


def flops_per_example(sizes: Sequence[int]) -> int:
    """Multiply-add FLOPs (2 per MAC) of one example's forward and backward pass through the net.

    For each Dense layer in -> out: forward 2*in*out (x @ W); backward 2*in*out for the weight
    gradient (x^T delta) plus 2*in*out for the input gradient (delta @ W^T), except the first
    layer, whose input gradient (w.r.t. the pixels) is never computed. Biases, activations, the
    softmax and the optimizer update are O(width) per example or O(params) per step, and are not
    counted. 784-512-256-128-64-10: 2,641,664 FLOPs per example.
    """
    macs = [n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)]
    return 2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:])


def time_matmul(size: int) -> float:
    """FLOP/s of one size x size f32 matmul in JAX on the default device (best of 3 calls)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()  # compile and warm up
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / min(seconds)


# ----------------------------------------------------------------------------- contenders


class Contender(Protocol):
    """One way to train the net for one epoch at a fixed batch size; `run_epoch` blocks."""

    device: str

    def run_epoch(self, epoch: int) -> int:
        """Train one epoch (1-based); returns the number of examples it trained on."""
        ...


class MlpJaxEpoch:
    """mlp_jax's public API: one compiled `train_epoch` (lax.scan) over device-resident uint8."""

    def __init__(self, dataset: Dataset, batch_size: int):
        self.config = Config(
            optimizer="sgd", lr=LR, schedule="constant", normalize="scale", batch_size=batch_size
        )
        self.state = init_state(self.config, dataset, build_model(self.config, dataset))
        self.images, self.labels = jax.device_put((dataset.train_images, dataset.train_labels))
        self.device = str(jax.devices()[0])

    def run_epoch(self, epoch: int) -> int:
        key = epoch_key(self.config, epoch)
        self.state, metrics = train_epoch(
            self.state, self.images, self.labels, key, batch_size=self.config.batch_size
        )
        return int(metrics["examples"])  # fetching it waits for the epoch to finish


class FlaxHostLoop:
    """The Flax MNIST example's loop: numpy batches from a host permutation, jitted step calls.

    As in google/flax examples/mnist/train.py: `apply_model` (loss and grads) and `update_model`
    are jitted separately, images are float32 in [0, 1] on the host, and the last partial batch is
    dropped. The model is mlp_jax's MLP, so the network is the same as the other contenders'.
    """

    def __init__(self, dataset: Dataset, batch_size: int):
        self.batch_size = batch_size
        self.images = dataset.train_images.astype(np.float32) / 255.0
        self.labels = dataset.train_labels
        model = build_model(Config(normalize="scale"), dataset)
        params = model.init(jax.random.PRNGKey(0), self.images[:1])["params"]
        self.state = train_state.TrainState.create(
            apply_fn=model.apply, params=params, tx=optax.sgd(LR)
        )
        self.rng = np.random.default_rng(0)
        self.device = str(jax.devices()[0])

    def run_epoch(self, epoch: int) -> int:
        steps = len(self.labels) // self.batch_size
        order = self.rng.permutation(len(self.labels))[: steps * self.batch_size]
        losses = []
        for indices in order.reshape(steps, self.batch_size):
            grads, loss = _flax_apply_model(self.state, self.images[indices], self.labels[indices])
            self.state = _flax_update_model(self.state, grads)
            losses.append(loss)
        np.mean(jax.device_get(losses))  # waits for the last step, as the example's logging does
        return steps * self.batch_size


@jax.jit
def _flax_apply_model(state: train_state.TrainState, images: jax.Array, labels: jax.Array):
    def loss_fn(params):
        logits = state.apply_fn({"params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return grads, loss


@jax.jit
def _flax_update_model(state: train_state.TrainState, grads: Any) -> train_state.TrainState:
    return state.apply_gradients(grads=grads)


class MatmulChain:
    """A ceiling, not a peer: only the epoch's matmuls, scanned like mlp_jax's epoch.

    The same five layer shapes, batch size and steps (full batches only), with forward
    a_l = a_{l-1} W_l, backward dW_l = a_{l-1}^T E_l and E_{l-1} = E_l W_l^T, and the SGD update,
    on float32 batches already in order. No permutation, gather, bias, activation, loss or
    metric, and E_5 is the logits themselves. Its roofline fraction is what a chain of these
    matmul shapes reaches on this device: the small layers' dots run far below the big matmul.
    """

    def __init__(self, dataset: Dataset, batch_size: int):
        pixels = int(np.prod(dataset.image_shape))
        sizes = [pixels, *HIDDEN, dataset.num_classes]
        steps = len(dataset.train_labels) // batch_size
        images = dataset.train_images[: steps * batch_size].reshape(steps, batch_size, pixels)
        self.batches = jax.device_put(images.astype(np.float32) / 255.0)
        keys = jax.random.split(jax.random.PRNGKey(0), len(sizes) - 1)
        self.weights = [
            jax.random.normal(key, (n_in, n_out)) / np.sqrt(n_in)
            for key, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
        ]
        self.examples = steps * batch_size
        self.device = str(jax.devices()[0])

    def run_epoch(self, epoch: int) -> int:
        self.weights = _matmul_chain_epoch(self.weights, self.batches)
        jax.block_until_ready(self.weights)
        return self.examples


@jax.jit
def _matmul_chain_epoch(weights: list[jax.Array], batches: jax.Array) -> list[jax.Array]:
    def step(weights, inputs):
        activations = [inputs]
        for weight in weights:
            activations.append(activations[-1] @ weight)
        error, grads = activations[-1], []
        for layer in reversed(range(len(weights))):
            grads.insert(0, activations[layer].T @ error)
            if layer > 0:  # the first layer needs no input gradient, as in training
                error = error @ weights[layer].T
        # A tiny step keeps the weights finite over thousands of steps (only the time counts).
        return [weight - 1e-7 * grad for weight, grad in zip(weights, grads, strict=True)], None

    return jax.lax.scan(step, weights, batches)[0]


def time_permutation(num_examples: int) -> float:
    """Seconds of one `jax.random.permutation` of the train set: part of every mlp_jax epoch."""
    permutation = jax.jit(jax.random.permutation, static_argnums=1)
    key = jax.random.PRNGKey(0)
    permutation(key, num_examples).block_until_ready()
    seconds = []
    for index in range(5):
        start = time.perf_counter()
        permutation(jax.random.fold_in(key, index), num_examples).block_until_ready()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


class TorchLoop:
    """The lectures' PyTorch loop: randperm each epoch, index a batch, zero_grad/backward/step."""

    def __init__(
        self, dataset: Dataset, batch_size: int, threads: int | None = None, on: str = "cpu"
    ):
        self.batch_size = batch_size
        self.threads = threads or TORCH_THREADS
        self.on = on  # the torch device: the data, the net and the permutation live there
        torch.manual_seed(0)
        self.images = torch.from_numpy(dataset.train_images).to(on).float().div_(255.0)
        self.labels = torch.from_numpy(dataset.train_labels).to(on).long()
        pixels = int(np.prod(dataset.image_shape))
        self.net = torch_mlp([pixels, *HIDDEN, dataset.num_classes]).to(on)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=LR)
        self.device = f"{on} (torch)"

    def run_epoch(self, epoch: int) -> int:
        torch.set_num_threads(self.threads)  # per epoch: the 1-thread variant shares the process
        order = torch.randperm(len(self.labels), device=self.on)
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            self.optimizer.zero_grad()
            logits = self.net(self.images[indices])
            torch.nn.functional.cross_entropy(logits, self.labels[indices]).backward()
            self.optimizer.step()
        if self.on == "cuda":
            torch.cuda.synchronize()  # the epoch's kernels are done when it returns
        return len(order)


class TorchCompiledLoop(TorchLoop):
    """The lectures' loop with the forward pass and loss under `torch.compile` (Inductor, C++).

    `mode` was chosen by measurement (docs/performance.md). The backward pass is compiled with
    it (AOTAutograd); the optimizer step is compiled too, as PyTorch's "compiling the optimizer"
    recipe does. The last, smaller batch compiles a second graph during the warm-up epoch.
    """

    def __init__(self, dataset: Dataset, batch_size: int, mode: str = "default"):
        super().__init__(dataset, batch_size)
        net, optimizer = self.net, self.optimizer

        def loss_fn(images, labels):
            return torch.nn.functional.cross_entropy(net(images), labels)

        self.loss_fn = torch.compile(loss_fn, mode=mode)
        self.optimizer_step = torch.compile(optimizer.step, mode=mode)
        self.device = f"cpu (torch.compile, mode {mode})"

    def run_epoch(self, epoch: int) -> int:
        torch.set_num_threads(self.threads)
        order = torch.randperm(len(self.labels))
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            self.optimizer.zero_grad()
            self.loss_fn(self.images[indices], self.labels[indices]).backward()
            self.optimizer_step()
        return len(order)


def import_keras() -> Any:
    """Keras 3 on the JAX backend (KERAS_BACKEND=jax), or an ImportError saying what is missing."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"
    import keras

    if keras.backend.backend() != "jax":
        raise ImportError(f"keras was imported with the {keras.backend.backend()} backend, not jax")
    return keras


class KerasFit:
    """Keras 3 on the JAX backend: `model.fit` for one epoch, `jit_compile=True`.

    The same 784-512-256-128-64-10 ReLU net and plain SGD lr 0.01, on float32 images in [0, 1]
    (flattened on the host once, not timed), shuffled by fit every epoch; the last partial batch
    is kept. `steps_per_execution` > 1 runs that many steps per compiled call, as `lax.scan` does.
    Keras tracks only the loss here (mlp_jax also computes the accuracy), which favours Keras.
    """

    def __init__(self, dataset: Dataset, batch_size: int, steps_per_execution: int = 1):
        keras = import_keras()
        keras.utils.set_random_seed(0)
        pixels = int(np.prod(dataset.image_shape))
        self.images = dataset.train_images.reshape(-1, pixels).astype(np.float32) / 255.0
        self.labels = dataset.train_labels
        self.batch_size = batch_size
        layers = [keras.layers.Dense(width, activation="relu") for width in HIDDEN]
        self.model = keras.Sequential(
            [keras.Input((pixels,)), *layers, keras.layers.Dense(dataset.num_classes)]
        )
        self.model.compile(
            optimizer=keras.optimizers.SGD(LR),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True,
            steps_per_execution=steps_per_execution,
        )
        self.device = f"{jax.devices()[0]} (keras {keras.__version__})"

    def run_epoch(self, epoch: int) -> int:
        self.model.fit(
            self.images,
            self.labels,
            batch_size=self.batch_size,
            initial_epoch=epoch,
            epochs=epoch + 1,
            shuffle=True,
            verbose=0,
        )
        return len(self.labels)


class CliEpochs:
    """mlp_jax as users run it: `python -m mlp_jax.train ... --workdir DIR`, one epoch a round.

    The CLI runs in a process of its own, on the same images (written as IDX files), with the
    same recipe as `mlp_jax` and a checkpoint every epoch (the default, docs/checkpoints.md). It is
    paused (SIGSTOP) between rounds, so it never shares the cores with another contender; a
    round is the wall time from resuming it to its next epoch line: the epoch, the test-set
    evaluation, the line, metrics.jsonl and the checkpoint of the epoch before. `cli_seconds`
    keeps the CLI's own `epoch_seconds` (train_epoch alone) for comparison.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, workdir: bool = True, evaluate: bool = True
    ):
        self.folder = tempfile.TemporaryDirectory(prefix="mlp_jax_cli_")
        idx_dir = Path(self.folder.name) / "idx"
        write_idx_dir(dataset, idx_dir)
        self.command = [
            sys.executable,
            "-m",
            "mlp_jax.train",
            "--idx-dir",
            str(idx_dir),
            "--optimizer",
            "sgd",
            "--lr",
            str(LR),
            "--schedule",
            "constant",
            "--normalize",
            "scale",
            "--batch-size",
            str(batch_size),
            "--epochs",
            "100000",
        ]
        if workdir:  # checkpoints, metrics.jsonl and TensorBoard every epoch
            self.command += ["--workdir", str(Path(self.folder.name) / "run")]
        if not evaluate:  # the test split only after the last of the 100,000 epochs: never
            self.command += ["--eval-every", "100000"]
        self.process: subprocess.Popen | None = None
        self.examples = len(dataset.train_labels)
        self.cli_seconds: list[float] = []
        self.device = "cpu (CLI process)"

    def run_epoch(self, epoch: int) -> int:
        if self.process is None:
            self.errors = open(Path(self.folder.name) / "stderr.txt", "w+")  # noqa: SIM115
            environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.process = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=self.errors, text=True, env=environment
            )
        else:
            self.process.send_signal(signal.SIGCONT)
        for line in self.process.stdout:
            if line.startswith("epoch "):
                break
        else:
            self.errors.seek(0)
            raise RuntimeError(f"the CLI stopped: {self.errors.read()[-2000:]}")
        self.process.send_signal(signal.SIGSTOP)
        if epoch > 0:  # the first epoch line comes after imports, loading and compilation
            self.cli_seconds.append(float(re.search(r"([\d.]+)s [\d,]+ ex/s", line)[1]))
        return self.examples

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()  # our own child, by its handle
            self.process.send_signal(signal.SIGCONT)
            self.process.wait()
            self.errors.close()
        self.folder.cleanup()


def write_idx_dir(dataset: Dataset, directory: Path) -> None:
    """The dataset as the 4 IDX files that `--idx-dir` reads (uint8 images and labels)."""
    directory.mkdir(parents=True)
    files = {
        "train-images-idx3-ubyte": dataset.train_images[..., 0],
        "train-labels-idx1-ubyte": dataset.train_labels,
        "t10k-images-idx3-ubyte": dataset.test_images[..., 0],
        "t10k-labels-idx1-ubyte": dataset.test_labels,
    }
    for name, array in files.items():
        array = np.ascontiguousarray(array, dtype=np.uint8)
        header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
        (directory / name).write_bytes(header + array.tobytes())


# name -> factory(dataset, batch_size). Further contenders or sections plug in here.
CONTENDERS: dict[str, Callable[[Dataset, int], Contender]] = {
    "mlp_jax": MlpJaxEpoch,
    "pytorch": TorchLoop,
    "flax_host_loop": FlaxHostLoop,
    # A reference, not a peer: the same loop on one thread, which an oversubscribed machine
    # favours (OpenMP's threads wait for each other when another process takes a core).
    "pytorch_1thread": lambda dataset, batch_size: TorchLoop(dataset, batch_size, threads=1),
    # A ceiling, not a peer: the epoch's matmuls alone.
    "matmul_chain": MatmulChain,
    # What users get: the CLI's epochs with evaluation and a checkpoint every epoch.
    "mlp_jax_cli": CliEpochs,
    # The CLI without --workdir: the epoch, the test evaluation and the line only.
    "mlp_jax_cli_noworkdir": lambda dataset, batch_size: CliEpochs(dataset, batch_size, False),
    # The CLI without --workdir and without evaluation: what `mlp_jax` times, plus the loop.
    "mlp_jax_cli_noeval": lambda dataset, batch_size: CliEpochs(dataset, batch_size, False, False),
    "keras": KerasFit,
    "keras_spe": lambda dataset, batch_size: KerasFit(
        dataset, batch_size, steps_per_execution=KERAS_STEPS_PER_EXECUTION
    ),
    "torch_compile": lambda dataset, batch_size: TorchCompiledLoop(
        dataset, batch_size, mode=TORCH_COMPILE_MODE
    ),
}
NEEDS_TORCH = {"pytorch", "pytorch_1thread", "torch_compile"}
NEEDS_KERAS = {"keras", "keras_spe"}
PEERS = {"pytorch", "pytorch_1thread", "torch_compile", "flax_host_loop", "keras", "keras_spe"}
KERAS_STEPS_PER_EXECUTION = 32  # the fastest of 1, 8, 32, 128 (docs/performance.md)
TORCH_COMPILE_MODE = "default"  # see TorchCompiledLoop
DEFAULT_CONTENDERS = ",".join(CONTENDERS)
TORCH_THREADS = os.cpu_count() or 1  # the lectures' torch.set_num_threads; --torch-threads
REFERENCE = "pytorch"


# ----------------------------------------------------------------------------- sections


def throughput_section(
    dataset: Dataset,
    batch_size: int,
    contenders: Sequence[str],
    epochs: int,
    matmul_size: int,
    slow_epoch_seconds: float,
) -> dict[str, Any]:
    """Epoch seconds of each contender at one batch size: warm-up, then alternating epochs.

    Each round times one epoch of every contender (in a rotating order) and one large matmul, so
    the roofline and the contenders see the same load from other processes. A contender whose
    warm-up epoch took over `slow_epoch_seconds` is timed on one epoch only, so the run ends.
    """
    runners = {name: CONTENDERS[name](dataset, batch_size) for name in contenders}
    try:
        return _time_rounds(runners, dataset, batch_size, epochs, matmul_size, slow_epoch_seconds)
    finally:  # the CLI contender's process goes even when a round fails
        for runner in runners.values():
            if hasattr(runner, "close"):
                runner.close()
        del runners
        gc.collect()


def _time_rounds(
    runners: dict[str, Contender],
    dataset: Dataset,
    batch_size: int,
    epochs: int,
    matmul_size: int,
    slow_epoch_seconds: float,
) -> dict[str, Any]:
    timed_epochs = {}
    for name, runner in runners.items():
        start = time.perf_counter()
        runner.run_epoch(0)  # compiles (JAX) and warms caches; not timed
        seconds = time.perf_counter() - start
        timed_epochs[name] = 1 if seconds > slow_epoch_seconds else epochs
        print(f"  batch {batch_size}: warmed up {name} in {seconds:.1f}s", flush=True)
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    examples: dict[str, int] = {}
    peaks = []
    for round_index in range(epochs):
        shift = round_index % len(runners)  # rotate, so no contender always runs first
        order = list(runners)[shift:] + list(runners)[:shift]
        timed = [name for name in order if len(wall[name]) < timed_epochs[name]]
        for name in timed:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            examples[name] = runners[name].run_epoch(round_index + 1)
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
        peaks.append(time_matmul(matmul_size))
        print(
            f"  batch {batch_size} round {round_index + 1}/{epochs}: "
            + ", ".join(f"{name} {wall[name][-1]:.2f}s" for name in timed),
            flush=True,
        )
    peak = statistics.median(peaks)
    num_examples = len(dataset.train_labels)
    permutation_seconds = time_permutation(num_examples)
    milliseconds = permutation_seconds * 1e3
    print(f"  the permutation of {num_examples:,} in each mlp_jax epoch: {milliseconds:.1f} ms")
    flops = flops_per_example([int(np.prod(dataset.image_shape)), *HIDDEN, dataset.num_classes])
    rows = []
    for name, runner in runners.items():
        median = statistics.median(wall[name])
        rows.append(
            {
                "contender": name,
                "device": runner.device,
                "batch_size": batch_size,
                "timed_epochs": len(wall[name]),
                "examples_per_epoch": examples[name],
                "epoch_seconds_median": median,
                "epoch_seconds_min": min(wall[name]),
                "epoch_seconds_max": max(wall[name]),
                "epoch_seconds_all": wall[name],
                "cpu_seconds_median": statistics.median(cpu[name]),
                "examples_per_second": examples[name] / median,
                "flops_per_epoch": flops * examples[name],
                "roofline_fraction": flops * examples[name] / median / peak,
            }
        )
    for name, runner in runners.items():
        if getattr(runner, "cli_seconds", None):
            row = next(row for row in rows if row["contender"] == name)
            row["cli_epoch_seconds_median"] = statistics.median(runner.cli_seconds)
            print(f"  {name}: the CLI's own epoch_seconds {runner.cli_seconds}")
    fastest_peer = max(
        (row["examples_per_second"] for row in rows if row["contender"] in PEERS), default=None
    )
    reference = next((row for row in rows if row["contender"] == REFERENCE), None)
    fastest_torch = max(
        (row["examples_per_second"] for row in rows if row["contender"] in NEEDS_TORCH),
        default=None,
    )
    for row in rows:
        speed = row["examples_per_second"]
        row["speedup_vs_pytorch"] = speed / reference["examples_per_second"] if reference else None
        row["speedup_vs_fastest_pytorch"] = speed / fastest_torch if fastest_torch else None
        row["speedup_vs_fastest_peer"] = speed / fastest_peer if fastest_peer else None
    return {
        "batch_size": batch_size,
        "matmul_flops_per_second": peak,
        "matmul_flops_per_second_all": peaks,
        "permutation_seconds": permutation_seconds,
        "loadavg_after": os.getloadavg(),
        "peak_rss_mib_so_far": peak_rss_mib(),
        "rows": rows,
    }


def time_to_accuracy_section(
    dataset: Dataset, target: float, max_epochs: int, with_torch: bool
) -> list[dict[str, Any]]:
    """Wall seconds (set-up and compilation included, data loading not) to `target` accuracy."""
    recipes = [
        ("mlp_jax default recipe (Config())", Config(epochs=max_epochs)),
        (
            "mlp_jax, lectures' recipe",
            Config(
                optimizer="sgd",
                lr=LR,
                schedule="constant",
                batch_size=12,
                normalize="scale",
                epochs=max_epochs,
            ),
        ),
    ]
    results = [_mlp_jax_to_accuracy(label, config, dataset, target) for label, config in recipes]
    if with_torch:
        results.append(_torch_to_accuracy(dataset, target, max_epochs, batch_size=12))
    return results


def _mlp_jax_to_accuracy(
    label: str, config: Config, dataset: Dataset, target: float
) -> dict[str, Any]:
    stamps: list[float] = []

    def log(line: str) -> None:  # train_and_evaluate logs one "epoch ..." line per epoch
        if line.startswith("epoch "):
            stamps.append(time.perf_counter() - start)

    start = time.perf_counter()
    result = train_and_evaluate(config, dataset, log=log)
    accuracies = [record["test_accuracy"] for record in result.history]
    row = _accuracy_row(label, config.batch_size, accuracies, stamps, target)
    print(f"  {label}: {_describe(row)}", flush=True)
    return row


def _torch_to_accuracy(
    dataset: Dataset, target: float, max_epochs: int, batch_size: int
) -> dict[str, Any]:
    """The lectures' recipe in PyTorch: SGD lr 0.01, batch 12, test set scored after every epoch."""
    start = time.perf_counter()
    loop = TorchLoop(dataset, batch_size)
    test_images = torch.from_numpy(dataset.test_images).float().div_(255.0)
    test_labels = torch.from_numpy(dataset.test_labels).long()
    accuracies, stamps = [], []
    for epoch in range(1, max_epochs + 1):
        loop.run_epoch(epoch)
        with torch.no_grad():
            predictions = torch.cat([loop.net(x).argmax(1) for x in test_images.split(1000)])
        # An exact count: a float32 mean can put 8800/10000 just below 0.88.
        accuracies.append(int((predictions == test_labels).sum()) / len(test_labels))
        stamps.append(time.perf_counter() - start)
        print(f"  pytorch epoch {epoch}: test accuracy {accuracies[-1]:.4f} at {stamps[-1]:.1f}s")
        if accuracies[-1] >= target - 1e-6:  # the time is taken; more epochs cost minutes
            break
    label = f"pytorch, lectures' recipe ({loop.threads} thread{'s' * (loop.threads > 1)})"
    row = _accuracy_row(label, batch_size, accuracies, stamps, target)
    print(f"  {label}: {_describe(row)}", flush=True)
    return row


def _accuracy_row(
    label: str, batch_size: int, accuracies: list[float], stamps: list[float], target: float
) -> dict[str, Any]:
    # mlp_jax's accuracies are float32: 8800/10000 is 0.87999999523, which must count as 88%.
    reached = next((i for i, accuracy in enumerate(accuracies) if accuracy >= target - 1e-6), None)
    return {
        "recipe": label,
        "batch_size": batch_size,
        "target_accuracy": target,
        "epochs_to_target": None if reached is None else reached + 1,
        "seconds_to_target": None if reached is None else stamps[reached],
        "epochs_run": len(accuracies),
        "final_accuracy": accuracies[-1],
        "total_seconds": stamps[-1],
        "test_accuracy_per_epoch": accuracies,
        "seconds_per_epoch_mark": stamps,
    }


def _describe(row: dict[str, Any]) -> str:
    if row["seconds_to_target"] is None:
        return f"never reached {row['target_accuracy']:.0%} in {row['epochs_run']} epochs"
    return f"{row['seconds_to_target']:.1f}s (epoch {row['epochs_to_target']})"


# ----------------------------------------------------------------------------- output


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def device_memory() -> dict[str, Any] | None:
    """The default device's allocator statistics, where the backend keeps them (not on CPU)."""
    stats = jax.local_devices()[0].memory_stats()
    if not stats:
        return None
    return {key: stats[key] for key in ("peak_bytes_in_use", "bytes_in_use") if key in stats}


VECTOR_EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "neon")


def cpu_facts() -> dict[str, Any]:
    """lscpu's model name, family and model, and the vector extensions XLA's CPU code can use
    (from /proc/cpuinfo; the platform's name alone where it has none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {
        "cpu_model": fields.get("model name", platform.processor() or platform.machine()),
        "cpu_family": fields.get("cpu family"),
        "cpu_model_number": fields.get("model"),
        "vector_extensions": [name for name in VECTOR_EXTENSIONS if name in flags],
    }


def cpu_slug(info: dict[str, Any]) -> str:
    """A folder name per CPU model: "amd-epyc-family26-model2"."""
    name = re.sub(r"[^a-z0-9]+", "-", info["cpu_model"].lower()).strip("-") or "cpu"
    return f"{name}-family{info['cpu_family']}-model{info['cpu_model_number']}"


def machine() -> dict[str, Any]:
    return {
        **cpu_facts(),
        "cpu_count": os.cpu_count(),
        "jax_devices": [str(device) for device in jax.devices()],
        "jax_backend": jax.default_backend(),
        "jax": jax.__version__,
        "torch": torch.__version__ if torch else None,
        "python": platform.python_version(),
    }


def throughput_table(sections: list[dict[str, Any]]) -> str:
    rows = []
    for section in sections:
        for row in section["rows"]:
            ratio, fastest = row["speedup_vs_pytorch"], row["speedup_vs_fastest_pytorch"]
            rows.append(
                {
                    "contender": row["contender"],
                    "batch": row["batch_size"],
                    "epochs": row["timed_epochs"],
                    "epoch s (median)": f"{row['epoch_seconds_median']:.2f}",
                    "min-max": f"{row['epoch_seconds_min']:.2f}-{row['epoch_seconds_max']:.2f}",
                    "CPU s": f"{row['cpu_seconds_median']:.2f}",
                    "examples/s": f"{row['examples_per_second']:,.0f}",
                    "vs PyTorch": "-" if ratio is None else f"{ratio:.2f}x",
                    "vs fastest PyTorch": "-" if fastest is None else f"{fastest:.2f}x",
                    "vs fastest peer": "-"
                    if row["speedup_vs_fastest_peer"] is None
                    else f"{row['speedup_vs_fastest_peer']:.2f}x",
                    "roofline": f"{100 * row['roofline_fraction']:.0f}%",
                    "load (1 min)": f"{section['loadavg_after'][0]:.1f}",
                }
            )
    return markdown_table(rows)


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(
        [
            {
                "recipe": row["recipe"],
                "batch": row["batch_size"],
                f"s to {row['target_accuracy']:.0%}": "never"
                if row["seconds_to_target"] is None
                else f"{row['seconds_to_target']:.1f}",
                "epoch": row["epochs_to_target"] or "-",
                "final accuracy": f"{100 * row['final_accuracy']:.2f}%",
                "epochs": row["epochs_run"],
                "total s": f"{row['total_seconds']:.1f}",
            }
            for row in rows
        ]
    )


def write(out: Path, stem: str, report: dict[str, Any], table: str, heading: str) -> None:
    """OUT/<cpu model>/<stem>.json and .md: one folder per CPU model measured."""
    info = report["machine"]
    out = out / cpu_slug(info)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    extensions = " ".join(info["vector_extensions"]) or "none of " + " ".join(VECTOR_EXTENSIONS)
    text = (
        f"# {heading}\n\n{table}\n\n"
        f"Machine: {info['cpu_model']} (family {info['cpu_family']}, model "
        f"{info['cpu_model_number']}; {extensions}), {info['cpu_count']} cores; JAX devices "
        f"{', '.join(info['jax_devices'])}; load average {report['loadavg_start'][0]:.1f} at the "
        f"start, {report['loadavg_end'][0]:.1f} at the end. Command: `{report['command']}`\n"
    )
    (out / f"{stem}.md").write_text(text)
    print(f"\n{table}\n\nwrote {out / stem}.json and .md")


# ----------------------------------------------------------------------------- main


def load_workload(args: argparse.Namespace) -> Dataset:
    """Real images with --idx-dir, else random uint8 images of Fashion-MNIST's shape and sizes."""
    if args.idx_dir:
        dataset = load_idx_dir(args.idx_dir)
        if args.quick:
            dataset = dataset._replace(
                train_images=dataset.train_images[:QUICK_TRAIN],
                train_labels=dataset.train_labels[:QUICK_TRAIN],
                test_images=dataset.test_images[:QUICK_TEST],
                test_labels=dataset.test_labels[:QUICK_TEST],
            )
        return dataset
    num_train, num_test = (QUICK_TRAIN, QUICK_TEST) if args.quick else (NUM_TRAIN, NUM_TEST)
    rng = np.random.default_rng(0)
    return Dataset(
        name="random",
        train_images=rng.integers(0, 256, (num_train, 28, 28, 1), dtype=np.uint8),
        train_labels=rng.integers(0, 10, num_train).astype(np.int32),
        test_images=rng.integers(0, 256, (num_test, 28, 28, 1), dtype=np.uint8),
        test_labels=rng.integers(0, 10, num_test).astype(np.int32),
        num_classes=10,
        source="random uint8 images (no --idx-dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--idx-dir", help="folder of 4 IDX files (e.g. Fashion-MNIST); else random")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the JSON and .md")
    parser.add_argument("--quick", action="store_true", help="tiny workload: a smoke test")
    parser.add_argument(
        "--batch-sizes", default=",".join(map(str, BATCH_SIZES)), help="comma-separated"
    )
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per contender")
    parser.add_argument(
        "--contenders", default=DEFAULT_CONTENDERS, help="comma-separated, from this list"
    )
    parser.add_argument("--matmul-size", type=int, default=2048, help="roofline matmul: N x N")
    parser.add_argument(
        "--time-to-accuracy", action="store_true", help="measure time to --target instead"
    )
    parser.add_argument("--target", type=float, default=0.88, help="test accuracy to reach")
    parser.add_argument("--max-epochs", type=int, default=10, help="time-to-accuracy epochs")
    parser.add_argument(
        "--torch-threads", type=int, default=TORCH_THREADS, help="torch.set_num_threads"
    )
    parser.add_argument(
        "--slow-epoch-seconds",
        type=float,
        default=120.0,
        help="time a contender on one epoch if its warm-up epoch took longer",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    global TORCH_THREADS
    TORCH_THREADS = args.torch_threads
    command = "python -m experiments.benchmark " + " ".join(sys.argv[1:] if argv is None else argv)
    dataset = load_workload(args)
    report: dict[str, Any] = {
        "command": command.strip(),
        "machine": machine(),
        "dataset": f"{dataset.name}: {dataset.num_train} train / {dataset.num_test} test",
        "loadavg_start": os.getloadavg(),
    }
    print(f"{report['dataset']}; {report['machine']}", flush=True)
    if args.time_to_accuracy:
        epochs = 2 if args.quick else args.max_epochs
        if torch is None:
            print("torch is not installed (pip install -e '.[bench]'): PyTorch recipe skipped")
        rows = time_to_accuracy_section(dataset, args.target, epochs, with_torch=torch is not None)
        report.update(time_to_accuracy=rows, loadavg_end=os.getloadavg())
        report.update(peak_rss_mib=peak_rss_mib(), device_memory=device_memory())
        write(args.out, "time_to_accuracy", report, accuracy_table(rows), "Time to accuracy")
        return 0

    contenders = [name for name in args.contenders.split(",") if name]
    unknown = [name for name in contenders if name not in CONTENDERS]
    if unknown:
        build_parser().error(f"unknown contender(s) {unknown}; choose from {list(CONTENDERS)}")
    if torch is None:
        skipped = [name for name in contenders if name in NEEDS_TORCH]
        contenders = [name for name in contenders if name not in NEEDS_TORCH]
        print(f"torch is not installed (pip install -e '.[bench]'): skipping {skipped}")
    if importlib.util.find_spec("keras") is None:
        skipped = [name for name in contenders if name in NEEDS_KERAS]
        contenders = [name for name in contenders if name not in NEEDS_KERAS]
        print(f"keras is not installed (pip install -e '.[bench]'): skipping {skipped}")
    if args.quick and args.contenders == DEFAULT_CONTENDERS:  # Inductor compiles for minutes
        contenders = [name for name in contenders if name not in ("torch_compile", "keras_spe")]
    batch_sizes = QUICK_BATCH_SIZES if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    epochs = 1 if args.quick else args.epochs
    matmul_size = 256 if args.quick else args.matmul_size
    sections = [
        throughput_section(
            dataset, batch_size, contenders, epochs, matmul_size, args.slow_epoch_seconds
        )
        for batch_size in batch_sizes
    ]
    report.update(
        flops_per_example=flops_per_example(
            [int(np.prod(dataset.image_shape)), *HIDDEN, dataset.num_classes]
        ),
        sections=sections,
        loadavg_end=os.getloadavg(),
        peak_rss_mib=peak_rss_mib(),
        device_memory=device_memory(),
    )
    write(args.out, "benchmark", report, throughput_table(sections), "Throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
