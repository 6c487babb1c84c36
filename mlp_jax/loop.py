"""The epoch loop: `train_and_evaluate` (one model) and `train_and_evaluate_many` (--seeds,
--lr-sweep), with resume, checkpoints and signals. No argparse: train.py is the command line.

This is the only library module with clocks and printing; metrics leave it through writers.py.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp_jax.config import Config, ConfigError
from mlp_jax.data import Dataset, load_dataset, validation_split
from mlp_jax.model import count_params, layer_sizes, summary
from mlp_jax.optim import make_schedule, plateau_scale, step_plateau
from mlp_jax.runtime import active_compilation_cache, use_compilation_cache
from mlp_jax.selection import Selection, monitored_value, new_selection, selection_from_json
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
from mlp_jax.sweep import SweepProgress, SweepResult, init_progress, sweep_models, train_many
from mlp_jax.workdir import (
    CHECKPOINTS,
    CONFIG,
    SELECTION,
    TENSORBOARD,
    Workdir,
    open_workdir,
    write_atomically,
)
from mlp_jax.writers import (
    ArrayWriter,
    ConsoleWriter,
    MetricsFileWriter,
    MetricWriter,
    ProgressBar,
    print_line,
    stdout_error,
)

if TYPE_CHECKING:
    from mlp_jax.checkpoint import Checkpointer

PROG = "mlp_jax.train"  # signal messages name the command users run


class DivergedError(RuntimeError):
    """The running train loss became NaN or inf; the message lists what can cause it."""

    def __init__(
        self, epoch: int, loss: float, lr: float, config: Config | None = None, std: float = 1.0
    ):
        self.epoch, self.loss, self.lr = epoch, loss, lr
        config = config if config is not None else Config()
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
    selection: Selection | None = None  # with something monitored: the best epoch, stopping
    selected: dict[str, Any] | None = None  # the record of the epoch that validation selected


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
        # Imported only here: tensorboardX imports torch whenever it is installed (1.7 s of a
        # 3.2 s start-up here) and the confusion image needs matplotlib; runs without a workdir
        # need neither.
        from mlp_jax.plot import class_names
        from mlp_jax.tensorboard import TensorBoardWriter

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


def _cache_note() -> str:
    cache = active_compilation_cache()
    return f" (compilation cache {cache})" if cache else " (compilation cache off)"


def _load(config: Config, dataset: Dataset | None, log: Callable[[str], None]) -> Dataset:
    """The dataset (given, or loaded now), logged with how long loading took."""
    start = time.perf_counter()
    loaded = dataset is None
    dataset = dataset if dataset is not None else load_dataset(config)
    dataset = validation_split(dataset, config.validation_split)
    if dataset.note:
        log(dataset.note)
    took = f" (loaded in {time.perf_counter() - start:.2f}s)" if loaded else ""
    log(
        f"dataset: {dataset.name} ({dataset.source}): {dataset.num_train} train / "
        f"{dataset.num_test} test, images {dataset.train_images.shape[1:]} uint8, "
        f"{dataset.num_classes} classes{took}"
    )
    if dataset.validation is not None:
        log(
            f"validation: {dataset.num_val} train images held out ({config.validation_split:g}, "
            "stratified, the same for every seed); the test split is only reported"
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
    use_compilation_cache(config.compilation_cache)  # before the first compilation
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
    check_memory(config, dataset, mesh.local_devices[0])  # this process's; before allocating
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
    done, history, checkpointer, selection = 0, [], None, new_selection(config)
    if workdir:
        state, done, history, saved = _resume(config, workdir, state, run_info, log)
        selection = selection_from_json(config, saved.get("selection"))
    if workdir and is_main_process():
        # Imported only with a workdir, as orbax takes 0.3-0.4 s to import (start-up counts).
        from mlp_jax.checkpoint import Checkpointer

        checkpointer = Checkpointer(workdir, config.keep, keep_best=selection is not None)
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
    evaluation = data_parallel(
        functools.partial(evaluate, batch_size=config.eval_batch_size, batch_sharding=split),
        mesh,
        donate_state=False,
    )
    run_eval = evaluation.lower(state, test_images, test_labels).compile()
    run_val = None
    if dataset.val_images is not None:
        val_images, val_labels = put_replicated((dataset.val_images, dataset.val_labels), mesh)
        run_val = evaluation.lower(state, val_images, val_labels).compile()
    log(
        f"compiled the epoch and the evaluation in {time.perf_counter() - start:.2f}s"
        f"{_cache_note()}"
    )
    plateau_step = jax.jit(functools.partial(step_plateau, config))

    test = None
    if is_main_process() and stdout_error() is not None:  # e.g. `| head` took start-up's lines
        raise StoppedByOutput(stdout_error(), done, config.epochs, None)
    writers = (
        default_writers(config, workdir, done, log, dataset, batches) if is_main_process() else []
    )
    try:
        with _StopRequest() as stop:
            for epoch in range(done + 1, config.epochs + 1):
                if selection is not None and selection.should_stop:
                    break  # resumed a run that early stopping had ended
                lr = float(schedule(state.step)) * float(plateau_scale(state.opt_state))
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
                    **({"val_loss": None, "val_accuracy": None} if run_val is not None else {}),
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
                    if run_val is not None:
                        val = _fetch(run_val(state, val_images, val_labels))
                        record["val_loss"] = float(val["loss"])
                        record["val_accuracy"] = float(val["accuracy"])
                    test = _fetch(run_eval(state, test_images, test_labels))
                    record["test_loss"] = float(test["loss"])
                    record["test_accuracy"] = float(test["accuracy"])
                monitored = None
                if selection is not None:
                    selection = selection.update(epoch, record)
                    monitored = monitored_value(record, selection.monitor)
                    if monitored is not None and config.plateau_schedule:
                        opt_state = plateau_step(state.opt_state, jnp.float32(monitored))
                        state = state.replace(opt_state=put_replicated(opt_state, mesh))
                history.append(record)
                stopping = selection is not None and selection.should_stop
                # TensorBoard's confusion-matrix image is drawn once, at the run's last epoch:
                # matplotlib takes 0.26 s per drawing, 20% of a batch-1024 epoch on 2 cores.
                last = epoch == config.epochs or stopping
                # metrics.jsonl first: a kill before the checkpoint leaves a line resume drops.
                arrays = {
                    "per_step_loss": train_metrics["per_step_loss"],
                    "confusion": test["confusion"] if evaluated and last else None,
                }
                for writer in writers:  # the step losses first: steps stay in order
                    if isinstance(writer, ArrayWriter):
                        writer.write_arrays(epoch, arrays)
                    writer.write_epoch([record])
                # A pager that quit (or a full disk) stops the run as a signal does: saved.
                output_failed = is_main_process() and stdout_error() is not None
                if checkpointer is not None:
                    due = epoch % config.checkpoint_every == 0 or epoch == config.epochs
                    # A new best is saved whatever --checkpoint-every says: it is the selection.
                    improved = selection is not None and selection.improved
                    if due or stop.signum or output_failed or stopping or improved:
                        info = run_info
                        if selection is not None:
                            info = {**run_info, "selection": selection.to_json()}
                        checkpointer.save(
                            epoch, state, _as_saved(config), info, monitored=monitored
                        )
                saved = checkpointer.path(epoch) if checkpointer is not None else None
                if stop.signum:
                    raise StoppedBySignal(stop.signum, epoch, config.epochs, saved)
                if output_failed and epoch < config.epochs:
                    raise StoppedByOutput(stdout_error(), epoch, config.epochs, saved)
                if stopping:
                    log(
                        f"early stopping after epoch {epoch}: {selection.monitor} has not "
                        f"improved for {config.early_stopping} evaluations"
                    )
    finally:
        for writer in writers:
            writer.close()
        if checkpointer is not None:
            checkpointer.close()  # the last asynchronous save is on disk before we return
    if test is None or (history and history[-1]["test_accuracy"] is None):  # resumed a run, or
        # early stopping (on train_loss) ended it in an epoch without evaluation
        test = _fetch(run_eval(state, test_images, test_labels))
    log(
        f"test accuracy {100 * test['accuracy']:.2f}% (loss {float(test['loss']):.4f}) "
        f"on {int(test['count'])} test images"
    )
    selected = _report_selection(selection, history, workdir, checkpointer, log)
    return RunResult(state, history, test, dataset, selection=selection, selected=selected)


def _report_selection(
    selection: Selection | None,
    history: list[dict[str, Any]],
    workdir: Workdir | None,
    checkpointer: Checkpointer | None,
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    """Log (and record in DIR/selection.json) the last epoch and the one validation selected,
    with the test accuracy of each. Returns the selected epoch's record."""
    if selection is None or not history:
        return None
    last = history[-1]
    selected = next((r for r in history if r["epoch"] == selection.best_epoch), None)
    log(f"last epoch {last['epoch']}: {_scores(last)}")
    if selected is None:
        log(f"selected epoch {selection.best_epoch}: its record is not in metrics.jsonl")
    else:
        where = f" (checkpoint {checkpointer.path(selected['epoch'])})" if checkpointer else ""
        log(
            f"selected epoch {selected['epoch']} (best {selection.monitor}): "
            f"{_scores(selected)}{where}"
        )
    if workdir is not None and is_main_process():
        write_atomically(
            workdir.file(SELECTION),
            json.dumps(
                {
                    "selection": selection.to_json(),
                    "stopped_early": selection.should_stop,
                    "last": last,
                    "selected": selected,
                },
                indent=2,
            ),
        )
    return selected


def _scores(record: dict[str, Any]) -> str:
    """`val loss 0.3012 acc 89.20%, test accuracy 88.42%` of an evaluated epoch's record."""
    parts = []
    if record.get("val_loss") is not None:
        parts.append(f"val loss {record['val_loss']:.4f} acc {100 * record['val_accuracy']:.2f}%")
    if record.get("test_accuracy") is not None:
        parts.append(f"test accuracy {100 * record['test_accuracy']:.2f}%")
    else:
        parts.append(f"train loss {record['train_loss']:.4f} (no test score this epoch)")
    return ", ".join(parts)


def train_and_evaluate_many(
    config: Config, dataset: Dataset | None = None, log: Callable[[str], None] = print_line
) -> SweepResult:
    """--seeds K and/or --lr-sweep: every model in one compiled program (sweep.train_many).

    Logs mean ± std over the models per epoch, each model's final test accuracy, and mean ± std
    over seeds per learning rate; with a validation split also each lr's validation and test
    accuracy at the selected epochs, and the lr that validation picks. The workdir's
    metrics.jsonl gets one record per model and epoch; checkpoints, resume and signals work as
    for one model (the checkpoint holds all models' states and selections).
    """
    initialize_distributed(config)  # before any JAX computation
    devices = available_devices()  # the first use of a backend: JAX_PLATFORMS errors here
    use_compilation_cache(config.compilation_cache)  # before the first compilation
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
    seeds, lrs = sweep_models(config)
    log(
        f"models: {config.num_models} {'-'.join(map(str, sizes))} MLPs in one program "
        f"(seeds {config.seed}..{config.seed + config.seeds - 1} x peak lr "
        f"{', '.join(f'{lr:g}' for lr in dict.fromkeys(lrs))}), {config.epochs} epochs of "
        f"batch {config.batch_size}"
    )
    run_info = {
        "dataset": _dataset_info(dataset),
        "mean": model.mean,
        "std": model.std,
        "hidden_sizes": list(model.hidden_sizes),
    }
    start = init_progress(config, dataset, model, seeds, lrs)
    checkpointer = None
    if workdir:
        start = _resume_many(config, workdir, start, run_info, seeds, lrs, log)
    if workdir and is_main_process():
        from mlp_jax.checkpoint import Checkpointer  # only with a workdir: see _train

        checkpointer = Checkpointer(workdir, config.keep)
        _write_config(workdir, config, dataset, sizes)
    batches = steps_per_epoch(dataset.num_train, config.batch_size)
    writers = (
        default_writers(config, workdir, start.epoch, log, dataset, batches)
        if is_main_process()
        else []
    )

    def on_epoch(epoch: int, records: list[dict[str, Any]]) -> None:
        for writer in writers:
            writer.write_epoch(records)

    def on_compiled(seconds: float) -> None:
        log(f"compiled the epoch and the evaluation of all models in {seconds:.2f}s{_cache_note()}")

    try:
        with _StopRequest() as stop:

            def after_epoch(progress: SweepProgress) -> bool:
                epoch = progress.epoch
                stopping = progress.selections is not None and all(
                    s.should_stop for s in progress.selections
                )
                if checkpointer is not None:
                    due = epoch % config.checkpoint_every == 0 or epoch == config.epochs
                    if due or stop.signum or stopping:
                        info = {**run_info, "selections": _selections_json(progress)}
                        checkpointer.save(epoch, progress.states, _as_saved(config), info)
                if stop.signum:
                    saved = checkpointer.path(epoch) if checkpointer is not None else None
                    raise StoppedBySignal(stop.signum, epoch, config.epochs, saved)
                if stopping:
                    log(
                        f"early stopping after epoch {epoch}: no model's {config.monitored} "
                        f"has improved for {config.early_stopping} evaluations"
                    )
                return False

            result = train_many(
                config,
                dataset,
                mesh=mesh,
                on_epoch=on_epoch,
                on_compiled=on_compiled,
                start=start,
                after_epoch=after_epoch,
            )
    finally:
        for writer in writers:
            writer.close()
        if checkpointer is not None:
            checkpointer.close()
    _report_sweep(config, result, workdir, log)
    return result


def _report_sweep(
    config: Config, result: SweepResult, workdir: Workdir | None, log: Callable[[str], None]
) -> None:
    """Each model's final test accuracy, then per lr mean ± std over seeds; with a validation
    split, per lr the validation and test accuracy at the selected epochs and the lr that
    validation picks (DIR/selection.json records them). Nothing is ever picked on test."""
    for k, (seed, lr) in enumerate(zip(result.seeds, result.lrs, strict=True)):
        log(
            f"seed {seed} lr {lr:g}: test accuracy {100 * result.test[k]['accuracy']:.2f}% "
            f"(loss {float(result.test[k]['loss']):.4f})"
        )
    summary = result.summary()
    for row in summary:
        diverged = f", {row['diverged']} diverged" if row["diverged"] else ""
        log(
            f"lr {row['lr']:g}: test accuracy {100 * row['test_accuracy_mean']:.2f} "
            f"± {100 * row['test_accuracy_std']:.2f}% (mean ± std over {len(row['seeds'])} "
            f"seeds{diverged})"
        )
    if result.dataset.val_labels is None:
        return
    at = "the selected epochs" if result.selections else "the last epoch"
    log(f"on validation, at {at} (std: sample std over seeds, ddof=1):")
    for row in summary:
        log(
            f"lr {row['lr']:g}: val accuracy {_pm(row, 'selected_val_accuracy')}, "
            f"test accuracy {_pm(row, 'selected_test_accuracy')} "
            f"(epochs {', '.join(map(str, row['selected_epochs']))})"
        )
    pick = result.pick("val_accuracy")
    if pick is not None:
        log(
            f"validation picks lr {pick['lr']:g} (highest mean val accuracy "
            f"{100 * pick['selected_val_accuracy_mean']:.2f}%): its test accuracy "
            f"{_pm(pick, 'selected_test_accuracy')}"
        )
    if workdir is not None and is_main_process():
        write_atomically(
            workdir.file(SELECTION),
            json.dumps({"picked_by": "val_accuracy", "pick": pick, "per_lr": summary}, indent=2),
        )


def _pm(row: dict[str, Any], name: str) -> str:
    return f"{100 * row[f'{name}_mean']:.2f} ± {100 * row[f'{name}_std']:.2f}%"


def _selections_json(progress: SweepProgress) -> list[dict[str, Any]] | None:
    if progress.selections is None:
        return None
    return [selection.to_json() for selection in progress.selections]


def _resume_many(
    config: Config,
    workdir: Workdir,
    start: SweepProgress,
    run_info: dict[str, Any],
    seeds: list[int],
    lrs: list[float],
    log: Callable[[str], None],
) -> SweepProgress:
    """The sweep in `workdir`, if any, continued from its checkpoint: as `_resume` for one model,
    with the metrics.jsonl records regrouped per model and each model's selection restored."""
    states, done, records, saved = _resume(config, workdir, start.states, run_info, log)
    history: list[list[dict[str, Any]]] = [[] for _ in seeds]
    index = {(seed, lr): k for k, (seed, lr) in enumerate(zip(seeds, lrs, strict=True))}
    for record in records:
        k = index.get((record.get("seed"), record.get("peak_lr")))
        if k is not None:
            history[k].append(record)
    selections = start.selections
    if selections is not None and saved.get("selections"):
        selections = [selection_from_json(config, s) for s in saved["selections"]]
    return SweepProgress(done, states, history, selections)


def _resume(
    config: Config,
    workdir: Workdir,
    state: TrainState,
    run_info: dict[str, Any],
    log: Callable[[str], None],
) -> tuple[TrainState, int, list[dict[str, Any]], dict[str, Any]]:
    """Continue the run in `workdir`, if any: (state, epochs done, their metrics records, the
    checkpoint's JSON record ({} when starting over)). `state` may be a sweep's stack of states.

    Everything that can refuse (another config, no readable checkpoint, too few --epochs) runs
    before anything in the workdir changes.
    """
    if not workdir.holds_run():
        return state, 0, [], {}
    from mlp_jax.checkpoint import Checkpointer, NoCheckpointError, check_resumable  # see _train

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
    saved = checkpoint.info if checkpoint is not None else {}
    if not is_main_process():  # process 0 alone changes the workdir
        return (checkpoint.state if checkpoint else state), done, [], saved

    for epoch, reason in zip(newer, checkpoint.skipped if checkpoint else (), strict=True):
        log(f"{reason}: moved it to {reader.set_aside(epoch)}")
    history, dropped = workdir.keep_metrics_until(done)
    note = f"; dropped {dropped} metrics.jsonl lines after epoch {done}" if dropped else ""
    if checkpoint is None:
        log(f"resuming {workdir.shown}: no checkpoint yet, starting at epoch 1{note}")
        return state, 0, history, saved
    if sorted({record["epoch"] for record in history}) != list(range(1, done + 1)):
        note += f"; metrics.jsonl lacks some of epochs 1..{done}"
    log(
        f"resuming from checkpoint {checkpoint.path} (epoch {done}/{config.epochs}, "
        f"step {checkpoint.info['step']}){note}"
    )
    restored = checkpoint.state
    if checkpoint.config.lr != config.lr:  # the peak lr lives in the optimizer state: take the new
        hyperparams = state.opt_state.hyperparams
        restored = restored.replace(opt_state=restored.opt_state._replace(hyperparams=hyperparams))
    return restored, done, history, saved


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
        "validation": dataset.validation,  # the split: sizes and how it was drawn
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
