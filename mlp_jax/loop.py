"""The epoch loop: `train_and_evaluate` (one model) and `train_and_evaluate_many` (--seeds,
--lr-sweep), with resume, checkpoints and signals. No argparse: train.py is the command line.

This is the only library module with clocks and printing; metrics leave it through writers.py.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from mlp_jax.checkpoint import (
    Checkpointer,
    NoCheckpointError,
    check_resumable,
)
from mlp_jax.config import Config, ConfigError
from mlp_jax.data import Dataset, load_dataset
from mlp_jax.model import count_params, layer_sizes, summary
from mlp_jax.optim import make_schedule
from mlp_jax.plot import class_names
from mlp_jax.sharding import (
    available_devices,
    batch_sharding,
    data_parallel,
    describe,
    initialize_distributed,
    is_main_process,
    make_mesh,
    put_replicated,
)
from mlp_jax.state import build_model, check_fits, check_memory, epoch_key, init_state
from mlp_jax.steps import TrainState, evaluate, steps_per_epoch, train_epoch
from mlp_jax.sweep import SweepResult, train_many
from mlp_jax.tensorboard import TensorBoardWriter
from mlp_jax.workdir import CHECKPOINTS, CONFIG, TENSORBOARD, Workdir, open_workdir
from mlp_jax.writers import (
    ArrayWriter,
    ConsoleWriter,
    MetricsFileWriter,
    MetricWriter,
    ProgressBar,
    print_line,
    stdout_error,
)

PROG = "mlp_jax.train"  # signal messages name the command users run


class DivergedError(RuntimeError):
    """The running train loss became NaN or inf; the message lists what can cause it."""

    def __init__(self, epoch: int, loss: float, lr: float, config: Config, std: float = 1.0):
        self.epoch, self.loss, self.lr = epoch, loss, lr
        causes = []
        if config.weight_decay > 0:
            causes.append(f"--weight-decay {config.weight_decay:g} too large")
        if config.normalize == "standardize" and std < 0.01:
            causes.append(
                f"images that barely vary (pixel std {std:.2g}) blown up by standardising: "
                "try --normalize scale"
            )
        causes.append(
            "a learning rate too large for this model: try a smaller --lr"
            + ("" if config.clip_norm is not None else " or --clip-norm")
        )
        super().__init__(
            f"train loss became {loss} in epoch {epoch} (lr {lr:.4g}); possible causes: "
            + "; ".join(causes)
        )


class StoppedByOutput(Exception):
    """stdout could not be written (a pager quit, a full disk): the run saved and stopped."""

    def __init__(self, error: OSError, epoch: int, epochs: int, checkpoint: str | None):
        self.error = error
        reason = error.strerror or str(error)
        where = (
            f"checkpoint {checkpoint} is saved; run the same command to resume"
            if checkpoint
            else "nothing new was saved" + ("" if epoch else " (no epoch had started)")
        )
        super().__init__(
            f"stdout cannot be written ({reason}), so the run stopped after epoch "
            f"{epoch}/{epochs}: {where}"
        )


class StoppedBySignal(Exception):
    """SIGINT/SIGTERM stopped the run after a completed epoch (checkpointed with --workdir)."""

    def __init__(self, signum: int, epoch: int, epochs: int, checkpoint: str | None):
        self.signum = signum
        name = signal.Signals(signum).name
        where = (
            f"checkpoint {checkpoint} is saved; run the same command to resume"
            if checkpoint
            else "nothing was saved (no --workdir)"
        )
        super().__init__(f"stopped by {name} after epoch {epoch}/{epochs}: {where}")


@dataclasses.dataclass
class RunResult:
    state: TrainState
    history: list[dict[str, Any]]  # one metrics.jsonl record per epoch
    test: dict[str, Any]  # evaluate() of the final state, as numpy
    dataset: Dataset


def _silent(line: str) -> None:
    """The log of every process but process 0."""


def default_writers(
    config: Config,
    workdir: Workdir | None,
    done: int,
    log: Callable[[str], None],
    dataset: Dataset,
    batches: int,
) -> list[MetricWriter]:
    """Where process 0's epoch records go: the console line, the progress bar, and with a
    workdir metrics.jsonl and TensorBoard (DIR/tensorboard/; `batches` steps per epoch)."""
    writers: list[MetricWriter] = [
        ConsoleWriter(config.epochs, log),
        ProgressBar(config.epochs, done),
    ]
    if workdir is not None:
        writers.append(MetricsFileWriter(workdir))
        writers.append(
            TensorBoardWriter(
                workdir.file(TENSORBOARD),
                config.to_dict(),
                steps_per_epoch=batches,
                class_names=class_names(dataset.name, dataset.num_classes),
                log_every=config.log_every,
                done_epochs=done,
            )
        )
    return writers


def _load(config: Config, dataset: Dataset | None, log: Callable[[str], None]) -> Dataset:
    """The dataset (given, or loaded now), logged with how long loading took."""
    start = time.perf_counter()
    loaded = dataset is None
    dataset = dataset if dataset is not None else load_dataset(config)
    if dataset.note:
        log(dataset.note)
    took = f" (loaded in {time.perf_counter() - start:.2f}s)" if loaded else ""
    log(
        f"dataset: {dataset.name} ({dataset.source}): {dataset.num_train} train / "
        f"{dataset.num_test} test, images {dataset.train_images.shape[1:]} uint8, "
        f"{dataset.num_classes} classes{took}"
    )
    return dataset


def train_and_evaluate(
    config: Config, dataset: Dataset | None = None, log: Callable[[str], None] = print_line
) -> RunResult:
    """Train for `config.epochs`, evaluating every `config.eval_every` epochs and after the last.

    Runs on the `data` mesh of --devices, in every process of a multi-process launch; only
    process 0 logs and writes the workdir. For --seeds/--lr-sweep see train_and_evaluate_many.
    With `config.workdir`, a run already there resumes from its newest readable checkpoint, and
    a checkpoint is saved every `config.checkpoint_every` epochs, after the last and on a signal.
    """
    if config.num_models > 1:
        raise ValueError("config asks for several models (--seeds/--lr-sweep): use train_many")
    initialize_distributed(config)  # before any JAX computation
    devices = available_devices()  # the first use of a backend: JAX_PLATFORMS errors here
    log = log if is_main_process() else _silent
    # Process 0 alone writes the workdir, so it alone holds the lock (for the whole run).
    with open_workdir(config, log, lock=is_main_process()) as workdir:
        return _train(config, workdir, devices, dataset, log)


def _start(
    config: Config, devices: list[jax.Device], dataset: Dataset | None, log: Callable[[str], None]
) -> tuple[Any, Dataset]:
    """The mesh and the dataset, logged as they are ready; refuses runs that cannot fit."""
    mesh = make_mesh(config)
    log(f"devices: {', '.join(str(d) for d in devices)}")
    log(describe(mesh))
    dataset = _load(config, dataset, log)
    check_fits(config, dataset)
    check_memory(config, dataset, mesh.devices.flat[0])  # before allocating anything
    return mesh, dataset


def _train(
    config: Config,
    workdir: Workdir | None,
    devices: list[jax.Device],
    dataset: Dataset | None,
    log: Callable[[str], None],
) -> RunResult:
    mesh, dataset = _start(config, devices, dataset, log)
    start = time.perf_counter()
    model = build_model(config, dataset)
    state = init_state(config, dataset, model)
    num_train = len(dataset.train_labels)
    batches = steps_per_epoch(num_train, config.batch_size)
    schedule = make_schedule(config, batches)
    sizes = layer_sizes(int(np.prod(dataset.train_images.shape[1:])), model)
    log(
        f"model: {'-'.join(map(str, sizes))} MLP, {count_params(state.params):,} parameters "
        f"(initialised in {time.perf_counter() - start:.2f}s)"
    )
    log(summary(model, dataset.image_shape))
    log(
        f"training: {config.epochs} epochs x {batches} steps of batch {config.batch_size} "
        f"({config.optimizer}, lr {config.lr:g}, {config.schedule} schedule)"
    )
    run_info = {
        "dataset": _dataset_info(dataset),
        "mean": model.mean,
        "std": model.std,
        "hidden_sizes": list(model.hidden_sizes),
    }
    done, history, checkpointer = 0, [], None
    if workdir:
        state, done, history = _resume(config, workdir, state, run_info, log)
    if workdir and is_main_process():
        checkpointer = Checkpointer(workdir, config.keep)
        _write_config(workdir, config, dataset, sizes)

    # Replicated on every device (MNIST-sized sets fit): each device gathers its rows of a batch.
    state = put_replicated(state, mesh)
    train_images, train_labels, test_images, test_labels = put_replicated(
        (dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels), mesh
    )
    split = batch_sharding(mesh)
    start = time.perf_counter()
    run_epoch = data_parallel(
        functools.partial(
            train_epoch,
            batch_size=config.batch_size,
            batch_sharding=split,
            diagnostics=config.diagnostics,
        ),
        mesh,
        donate_state=True,
    ).lower(state, train_images, train_labels, put_replicated(epoch_key(config, 1), mesh))
    run_epoch = run_epoch.compile()
    run_eval = data_parallel(
        functools.partial(evaluate, batch_size=config.eval_batch_size, batch_sharding=split),
        mesh,
        donate_state=False,
    ).lower(state, test_images, test_labels)
    run_eval = run_eval.compile()
    log(f"compiled the epoch and the evaluation in {time.perf_counter() - start:.2f}s")

    test = None
    if is_main_process() and stdout_error() is not None:  # e.g. `| head` took start-up's lines
        raise StoppedByOutput(stdout_error(), done, config.epochs, None)
    writers = (
        default_writers(config, workdir, done, log, dataset, batches) if is_main_process() else []
    )
    try:
        with _StopRequest() as stop:
            for epoch in range(done + 1, config.epochs + 1):
                lr = float(schedule(state.step))
                start = time.perf_counter()
                key = put_replicated(epoch_key(config, epoch), mesh)
                state, train_metrics = run_epoch(state, train_images, train_labels, key)
                train_metrics = _fetch(train_metrics)
                seconds = time.perf_counter() - start
                train_loss = float(train_metrics["train_loss"])
                if not math.isfinite(train_loss):
                    raise DivergedError(epoch, train_loss, lr, config, model.std)
                record = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "train_accuracy": float(train_metrics["train_accuracy"]),
                    "test_loss": None,
                    "test_accuracy": None,
                    "lr": lr,
                    "epoch_seconds": seconds,
                    "examples_per_second": num_train / seconds,
                }
                if config.diagnostics:
                    record["grad_norm"] = float(train_metrics["grad_norm"])
                evaluated = epoch % config.eval_every == 0 or epoch == config.epochs
                if evaluated:
                    test = _fetch(run_eval(state, test_images, test_labels))
                    record["test_loss"] = float(test["loss"])
                    record["test_accuracy"] = float(test["accuracy"])
                history.append(record)
                # metrics.jsonl first: a kill before the checkpoint leaves a line resume drops.
                arrays = {
                    "per_step_loss": train_metrics["per_step_loss"],
                    "confusion": test["confusion"] if evaluated else None,
                }
                for writer in writers:  # the step losses first: steps stay in order
                    if isinstance(writer, ArrayWriter):
                        writer.write_arrays(epoch, arrays)
                    writer.write_epoch([record])
                # A pager that quit (or a full disk) stops the run as a signal does: saved.
                output_failed = is_main_process() and stdout_error() is not None
                if checkpointer is not None:
                    due = epoch % config.checkpoint_every == 0 or epoch == config.epochs
                    if due or stop.signum or output_failed:
                        checkpointer.save(epoch, state, _as_saved(config), run_info)
                saved = checkpointer.path(epoch) if checkpointer is not None else None
                if stop.signum:
                    raise StoppedBySignal(stop.signum, epoch, config.epochs, saved)
                if output_failed and epoch < config.epochs:
                    raise StoppedByOutput(stdout_error(), epoch, config.epochs, saved)
    finally:
        for writer in writers:
            writer.close()
        if checkpointer is not None:
            checkpointer.close()  # the last asynchronous save is on disk before we return
    if test is None:  # resumed a run that was already complete
        test = _fetch(run_eval(state, test_images, test_labels))
    log(
        f"test accuracy {100 * test['accuracy']:.2f}% (loss {float(test['loss']):.4f}) "
        f"on {int(test['count'])} test images"
    )
    return RunResult(state=state, history=history, test=test, dataset=dataset)


def train_and_evaluate_many(
    config: Config, dataset: Dataset | None = None, log: Callable[[str], None] = print_line
) -> SweepResult:
    """--seeds K and/or --lr-sweep: every model in one compiled program (sweep.train_many).

    Logs mean ± std over the models per epoch, each model's final test accuracy, and mean ± std
    over seeds per learning rate. The workdir's metrics.jsonl gets one record per model and epoch.
    """
    initialize_distributed(config)  # before any JAX computation
    devices = available_devices()  # the first use of a backend: JAX_PLATFORMS errors here
    log = log if is_main_process() else _silent
    with open_workdir(config, log, lock=is_main_process()) as workdir:
        return _train_many(config, workdir, devices, dataset, log)


def _train_many(
    config: Config,
    workdir: Workdir | None,
    devices: list[jax.Device],
    dataset: Dataset | None,
    log: Callable[[str], None],
) -> SweepResult:
    mesh, dataset = _start(config, devices, dataset, log)
    model = build_model(config, dataset)
    sizes = layer_sizes(int(np.prod(dataset.train_images.shape[1:])), model)
    lrs = config.lr_sweep if config.lr_sweep is not None else (config.lr,)
    log(
        f"models: {config.num_models} {'-'.join(map(str, sizes))} MLPs in one program "
        f"(seeds {config.seed}..{config.seed + config.seeds - 1} x peak lr "
        f"{', '.join(f'{lr:g}' for lr in lrs)}), {config.epochs} epochs of batch "
        f"{config.batch_size}"
    )
    if workdir and is_main_process():
        _write_config(workdir, config, dataset, sizes)
    batches = steps_per_epoch(dataset.num_train, config.batch_size)
    writers = (
        default_writers(config, workdir, 0, log, dataset, batches) if is_main_process() else []
    )

    def on_epoch(epoch: int, records: list[dict[str, Any]]) -> None:
        for writer in writers:
            writer.write_epoch(records)

    def on_compiled(seconds: float) -> None:
        log(f"compiled the epoch and the evaluation of all models in {seconds:.2f}s")

    try:
        result = train_many(config, dataset, mesh=mesh, on_epoch=on_epoch, on_compiled=on_compiled)
    finally:
        for writer in writers:
            writer.close()
    for k, (seed, lr) in enumerate(zip(result.seeds, result.lrs, strict=True)):
        log(
            f"seed {seed} lr {lr:g}: test accuracy {100 * result.test[k]['accuracy']:.2f}% "
            f"(loss {float(result.test[k]['loss']):.4f})"
        )
    for row in result.summary():
        diverged = f", {row['diverged']} diverged" if row["diverged"] else ""
        log(
            f"lr {row['lr']:g}: test accuracy {100 * row['test_accuracy_mean']:.2f} "
            f"± {100 * row['test_accuracy_std']:.2f}% (mean ± std over {len(row['seeds'])} "
            f"seeds{diverged})"
        )
    return result


def _resume(
    config: Config,
    workdir: Workdir,
    state: TrainState,
    run_info: dict[str, Any],
    log: Callable[[str], None],
) -> tuple[TrainState, int, list[dict[str, Any]]]:
    """Continue the run in `workdir`, if any: (state, epochs done, their metrics records).

    Everything that can refuse (another config, no readable checkpoint, too few --epochs) runs
    before anything in the workdir changes.
    """
    if not workdir.holds_run():
        return state, 0, []
    workdir.read_metrics()  # a hand-edited or corrupted line refuses before anything changes
    checkpoint, newer = None, []
    if os.path.isdir(workdir.file(CHECKPOINTS)):
        reader = Checkpointer(workdir, read_only=True)
        if reader.epochs():
            try:
                checkpoint = reader.restore(
                    state,
                    check=lambda info: check_resumable(
                        _as_saved(config), info, run_info["dataset"]
                    ),
                )
            except NoCheckpointError as error:
                raise ConfigError(
                    "--workdir", f"{error}; --fresh moves this run aside and starts over"
                ) from None
            newer = sorted((e for e in reader.epochs() if e > checkpoint.epoch), reverse=True)
    if checkpoint is None and os.path.exists(workdir.file(CONFIG)):
        check_resumable(_as_saved(config), workdir.read_config(), run_info["dataset"])
    done = checkpoint.epoch if checkpoint is not None else 0
    if done > config.epochs:
        raise ConfigError(
            "--epochs",
            f"the run in {workdir.shown} is at epoch {done}; use --epochs {done} or more",
        )
    if not is_main_process():  # process 0 alone changes the workdir
        return (checkpoint.state if checkpoint else state), done, []

    for epoch, reason in zip(newer, checkpoint.skipped if checkpoint else (), strict=True):
        log(f"{reason}: moved it to {reader.set_aside(epoch)}")
    history, dropped = workdir.keep_metrics_until(done)
    note = f"; dropped {dropped} metrics.jsonl lines after epoch {done}" if dropped else ""
    if checkpoint is None:
        log(f"resuming {workdir.shown}: no checkpoint yet, starting at epoch 1{note}")
        return state, 0, history
    if [record["epoch"] for record in history] != list(range(1, done + 1)):
        note += f"; metrics.jsonl lacks some of epochs 1..{done}"
    log(
        f"resuming from checkpoint {checkpoint.path} (epoch {done}/{config.epochs}, "
        f"step {int(checkpoint.state.step)}){note}"
    )
    restored = checkpoint.state
    if checkpoint.config.lr != config.lr:  # the peak lr lives in the optimizer state: take the new
        hyperparams = state.opt_state.hyperparams
        restored = restored.replace(opt_state=restored.opt_state._replace(hyperparams=hyperparams))
    return restored, done, history


class _StopRequest:
    """The first SIGINT/SIGTERM asks the loop to stop after the current epoch; the second exits.

    Handlers go in only in the main thread (Python allows no other), and the previous ones are
    restored on exit. They only write to fd 2 and set a flag: safe whatever the loop is doing.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            os.write(2, f"{PROG}: {name} again: exiting now, without saving\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        os.write(
            2,
            f"{PROG}: {name}: finishing this epoch, then saving and stopping "
            f"({name} again exits at once)\n".encode(),
        )


def _fetch(tree: Any) -> Any:
    """jax.device_get, but waiting in short sleeps: a signal handler then runs at once, where a
    blocking wait would defer it (and a second Ctrl-C) to the end of the epoch."""
    while not all(leaf.is_ready() for leaf in jax.tree.leaves(tree)):
        time.sleep(0.002)
    return jax.device_get(tree)


def _dataset_info(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "source": dataset.source,
        "note": dataset.note,
        "num_train": len(dataset.train_labels),
        "num_test": len(dataset.test_labels),
        "image_shape": list(dataset.train_images.shape[1:]),
        "num_classes": dataset.num_classes,
    }


def _as_saved(config: Config) -> Config:
    """`config` with absolute data paths: evaluate and plot may run from another directory."""
    paths = {
        name: os.path.abspath(getattr(config, name))
        for name in ("idx_dir", "data_dir", "manual_dir")
        if getattr(config, name) is not None
    }
    return config.replace(**paths)


def _write_config(workdir: Workdir, config: Config, dataset: Dataset, sizes: list[int]) -> None:
    workdir.write_config({
        "config": _as_saved(config).to_dict(),
        "dataset": _dataset_info(dataset),
        "layer_sizes": sizes,
        "devices": [str(d) for d in jax.devices()],
    })  # fmt: skip
