"""The training loop, written once for K >= 1 models: one run is K = 1; --seeds and --lr-sweep
train K models in one compiled program (jax.vmap over a stack of states). Clocks live here; text
lives in report.py and metrics leave through writers.py."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp_jax import report, sharding, state
from mlp_jax.config import Config
from mlp_jax.data import Dataset, class_names, for_config, load_dataset
from mlp_jax.errors import DivergedError, StoppedByOutput, StoppedBySignal
from mlp_jax.model import count_params, layer_sizes, summary
from mlp_jax.optim import make_schedule, plateau_scale, step_plateau
from mlp_jax.report import Log, Record
from mlp_jax.results import RunResult, SweepResult, per_model
from mlp_jax.resume import Progress, as_saved, dataset_facts, resume, run_config
from mlp_jax.runtime import active_compilation_cache, use_compilation_cache
from mlp_jax.selection import monitored_value, new_selection
from mlp_jax.signals import stop_after_epoch
from mlp_jax.steps import TrainState, evaluate, steps_per_epoch, train_epoch
from mlp_jax.workdir import SELECTION, Workdir, open_workdir, write_atomically
from mlp_jax.writers import (
    CallbackWriter,
    ConsoleWriter,
    MetricWriter,
    Profiler,
    close_all,
    print_line,
    stdout_error,
    write_epoch,
)


def _silent(line: str) -> None:
    """The log of every process but process 0, and of train_many."""


def train_and_evaluate(
    config: Config, dataset: Dataset | None = None, log: Log = print_line
) -> RunResult | SweepResult:
    """Train config.num_models models for `config.epochs`, evaluating every `config.eval_every`
    epochs and after the last: a RunResult for one model, a SweepResult for several. Runs in every
    process of a launch; process 0 alone logs and writes the workdir, where a run resumes from its
    newest readable checkpoint (saved every `config.checkpoint_every` epochs, at each new best
    epoch, after the last and on a signal)."""
    sharding.initialize_distributed(config)  # before any JAX computation
    devices = sharding.available_devices()  # the first use of a backend: JAX_PLATFORMS errors here
    log = log if sharding.is_main_process() else _silent
    use_compilation_cache(config.compilation_cache, log)  # before the first compilation
    # Process 0 alone writes the workdir, so it alone holds the lock (for the whole run).
    with open_workdir(config, log, lock=sharding.is_main_process()) as workdir:
        mesh = sharding.make_mesh(config)
        log(f"devices: {', '.join(map(str, devices))}")
        log(sharding.describe(mesh))
        start, seconds = time.perf_counter(), None
        if dataset is None:
            dataset, seconds = load_dataset(config), time.perf_counter() - start
        dataset = for_config(dataset, config)  # with its validation split
        for line in report.describe_dataset(dataset, config.validation_split, seconds):
            log(line)
        # Only this process's device, and before anything is allocated.
        state.check_memory(config, dataset, mesh.local_devices[0])
        models = state.sweep_models(config)
        result = _Loop(config, dataset, mesh, *models, workdir=workdir, log=log).run()
    return result.single() if config.num_models == 1 else result


def train_many(
    config: Config,
    dataset: Dataset | None = None,
    seeds: Sequence[int] | None = None,
    lrs: Sequence[float] | None = None,
    mesh: Any = None,
    on_epoch: Callable[[int, list[Record]], None] | None = None,
    model: Any = None,
) -> SweepResult:
    """Train one model per (seed, lr) with the loop of `train_and_evaluate`, all in one compiled
    program, without files or printing. Seeds default to config.seed .. + config.seeds - 1, lrs to
    config.lr_sweep or (config.lr,); model k is train_and_evaluate(config.replace(seed=seeds[k],
    lr=lrs[k])) up to float rounding. A model whose loss becomes NaN keeps going (says so).
    `on_epoch(epoch, records)` gets each model's record after each epoch. `model`, a linen or NNX
    module of your own (uint8 images -> logits), replaces the MLP; an NNX module's own weights
    start every model (seeds then change dropout and data order only).
    """
    dataset = dataset if dataset is not None else load_dataset(config)
    mesh = mesh if mesh is not None else sharding.make_mesh(config)
    options = dict(on_epoch=on_epoch, stop_on_divergence=False, model=model)
    return _Loop(config, dataset, mesh, *state.sweep_models(config, seeds, lrs), **options).run()


@dataclasses.dataclass
class _Loop:
    """One run of K models: `run()` trains them epoch by epoch (see train_and_evaluate)."""

    config: Config
    dataset: Dataset
    mesh: Any
    seeds: list[int]
    lrs: list[float]
    workdir: Workdir | None = None
    log: Log = _silent
    on_epoch: Callable[[int, list[Record]], None] | None = None
    stop_on_divergence: bool = True  # when every model's loss is NaN or inf
    model: Any = None  # None: the Config's MLP

    def __post_init__(self):
        state.check_fits(self.config, self.dataset)
        self.num_models, self.checkpointer = len(self.seeds), None
        self.batches = steps_per_epoch(self.dataset.num_train, self.config.batch_size)
        self.schedules = [make_schedule(self.config, self.batches, peak_lr=lr) for lr in self.lrs]

    def run(self) -> SweepResult:
        config, dataset = self.config, self.dataset
        start = time.perf_counter()
        self.model = state.build_model(config, dataset) if self.model is None else self.model
        states = state.init_states(config, dataset, self.model, self.seeds, self.lrs)
        selection = new_selection(config)
        selections = None if selection is None else [selection] * self.num_models
        progress = Progress(0, states, [[] for _ in self.seeds], selections)
        if self.log is not _silent:  # (flax's summary initialises the model once more)
            seconds, num_params = time.perf_counter() - start, count_params(states.params)
            self.log(report.describe_models(config, self._sizes(), self.lrs, num_params, seconds))
            if self.num_models == 1:
                self.log(summary(self.model, dataset.image_shape))
                self.log(report.describe_training(config, self.batches, self.lrs[0]))
        if self.workdir is not None:
            progress = self._open_workdir(progress)
        # Replicated on every device (MNIST-sized sets fit): each device gathers its batch rows.
        progress.states = sharding.put_replicated(progress.states, self.mesh)
        self._compile(progress.states)
        # A `| head` that took start-up's lines: stop before epoch 1.
        if sharding.is_main_process() and stdout_error() is not None:
            raise StoppedByOutput(stdout_error(), progress.epoch, config.epochs, None)
        writers = self._writers(progress.epoch)
        with stop_after_epoch("mlp_jax.train", saves=self.workdir is not None) as stop:
            try:
                progress, test = self._epochs(progress, writers, stop)
            finally:  # the last asynchronous save is on disk after the checkpointer's close
                close_all([*writers, self.checkpointer] if self.checkpointer else writers)
            if stop.signum:  # it came while the last checkpoint was written: that one is whole
                saved = self.checkpointer and self.checkpointer.path(progress.epoch)
                raise StoppedBySignal(stop.signum, progress.epoch, config.epochs, saved)
        if test is None:  # a resumed run with no epoch left, or early stopping (on train_loss)
            test = self._evaluate("test", progress.states)  # in an epoch without evaluation
        return self._finish(progress, test)

    def _sizes(self) -> list[int]:  # of the Config's MLP (a model of your own has no workdir)
        return layer_sizes(int(np.prod(self.dataset.image_shape)), self.model)

    def _open_workdir(self, progress):
        from mlp_jax.checkpoint import Checkpointer  # orbax: only with a workdir

        model, facts = self.model, dataset_facts(self.dataset)
        info = {"mean": model.mean, "std": model.std, "hidden_sizes": list(model.hidden_sizes)}
        self.run_info = {"dataset": facts, **info}
        progress = resume(self.config, self.workdir, progress, self.run_info, self.log)
        if sharding.is_main_process():
            keep_best = progress.selections is not None
            self.checkpointer = Checkpointer(self.workdir, self.config.keep, keep_best=keep_best)
            self.workdir.write_config(run_config(self.config, self.run_info, self._sizes()))
        return progress

    def _compile(self, states: TrainState) -> None:
        """Compile (and time) the epoch, test and validation programs; place their data."""
        config, mesh, dataset = self.config, self.mesh, self.dataset
        start = time.perf_counter()
        split = sharding.batch_sharding(mesh)
        epoch_fn = partial(
            train_epoch,
            batch_size=config.batch_size,
            batch_sharding=split,
            diagnostics=config.diagnostics,
        )
        eval_fn = partial(evaluate, batch_size=config.eval_batch_size, batch_sharding=split)
        plateau_fn = partial(step_plateau, config)
        if self.num_models > 1:  # the data is shared (None); states and keys are stacked (0)
            epoch_fn = jax.vmap(epoch_fn, in_axes=(0, None, None, 0))
            eval_fn = jax.vmap(eval_fn, in_axes=(0, None, None))
            plateau_fn = jax.vmap(plateau_fn)
        splits = {"train": (dataset.train_images, dataset.train_labels)}
        splits["test"] = (dataset.test_images, dataset.test_labels)
        if dataset.val_images is not None:
            splits["val"] = (dataset.val_images, dataset.val_labels)
        data = self.data = sharding.put_replicated(splits, mesh)
        key = sharding.put_replicated(state.epoch_keys(self.seeds, 1), mesh)
        run_epoch = sharding.data_parallel(epoch_fn, mesh, donate_state=True)
        run_eval = sharding.data_parallel(eval_fn, mesh, donate_state=False)
        self.programs = {"train": run_epoch.lower(states, *data["train"], key).compile()}
        for split in ("test", "val") if "val" in data else ("test",):
            self.programs[split] = run_eval.lower(states, *data[split]).compile()
        self.plateau = jax.jit(plateau_fn)
        self.compile_seconds = seconds = time.perf_counter() - start
        self.log(report.describe_compiled(seconds, active_compilation_cache(), self.num_models))

    def _evaluate(self, split: str, states: TrainState) -> dict[str, np.ndarray]:
        """The compiled evaluation of `split` (test or val), on the host, per model."""
        return per_model(_fetch(self.programs[split](states, *self.data[split])), self.num_models)

    def _writers(self, done: int) -> list[MetricWriter]:
        """Where metrics go (hparams written): train_many's on_epoch, or the console and, with a
        workdir, --profile, metrics.jsonl and TensorBoard (purging what a resume redoes)."""
        if self.on_epoch is not None:
            return [CallbackWriter(self.on_epoch)]
        if self.log is _silent:  # train_many, or any process but process 0
            return []
        config, workdir, base = self.config, self.workdir, self.config.to_dict()
        writers: list[MetricWriter] = [ConsoleWriter(config.epochs, self.log, done)]
        if workdir is not None:
            # Imported only here: tensorboardX imports torch whenever it is installed (1.7 s of a
            # 3.2 s start-up) and the confusion image needs matplotlib.
            from mlp_jax.tensorboard import TensorBoardWriter

            if config.profiled_epochs is not None:
                writers.insert(0, Profiler(workdir.file("profile"), *config.profiled_epochs, done))
            writers.append(CallbackWriter(lambda epoch, records: workdir.append_metrics(records)))
            names = class_names(self.dataset.name, self.dataset.num_classes)
            purge = done * self.batches + 1 if done else None
            logdir = workdir.file("tensorboard")
            writers.append(TensorBoardWriter(logdir, names, purge, workdir.show("tensorboard")))
        pairs = zip(self.seeds, self.lrs, strict=True)  # a sweep's models: their seed and lr
        hparams = [{**base, "seed": s, "peak_lr": lr} for s, lr in pairs]
        for writer in writers:
            writer.write_hparams(hparams if self.num_models > 1 else [base])
        return writers

    def _epochs(self, progress, writers, stop) -> tuple[Any, Any]:
        """Epochs done + 1 .. config.epochs (fewer when early stopping ends every model)."""
        config, test = self.config, None
        while progress.epoch < config.epochs and not progress.stopped:
            progress, records, per_step_loss, confusion, test = self._epoch(progress)
            step = progress.epoch * self.batches
            write_epoch(writers, step, records, per_step_loss, confusion, config.log_every)
            # A pager that quit (or a full disk) stops the run as a signal does: saved.
            output_failed = sharding.is_main_process() and stdout_error() is not None
            saved = self._maybe_save(progress, forced=bool(stop.signum) or output_failed)
            if stop.signum:
                raise StoppedBySignal(stop.signum, progress.epoch, config.epochs, saved)
            if output_failed and progress.epoch < config.epochs:
                raise StoppedByOutput(stdout_error(), progress.epoch, config.epochs, saved)
            if progress.stopped:
                self.log(report.describe_early_stop(config, progress.epoch, self.num_models))
        return progress, test

    def _epoch(self, progress):
        """Train and evaluate one epoch: (progress, one record per model, per-step losses
        float[K, steps], test confusion matrices int[K, C, C] at the last epoch, test per model)."""
        config, epoch, states, K = self.config, progress.epoch + 1, progress.states, self.num_models
        scales = np.broadcast_to(jax.device_get(plateau_scale(states.opt_state)), K)
        step = (epoch - 1) * self.batches
        lrs = [float(s(step)) * float(c) for s, c in zip(self.schedules, scales, strict=True)]
        start = time.perf_counter()
        key = sharding.put_replicated(state.epoch_keys(self.seeds, epoch), self.mesh)
        states, train = self.programs["train"](states, *self.data["train"], key)
        train = per_model(_fetch(train), K)
        seconds = time.perf_counter() - start
        # A mean train loss above 1e6 (or NaN) has diverged: ln(10) is 2.3 at the start.
        if self.stop_on_divergence and not (np.abs(train["train_loss"]) < 1e6).any():
            loss = float(train["train_loss"][0])
            raise DivergedError(epoch, loss, lrs[0], config, self.model.std)
        val = test = None
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            val = self._evaluate("val", states) if "val" in self.data else None
            test = self._evaluate("test", states)
        records = [self._record(k, epoch, train, val, test, lrs[k], seconds) for k in range(K)]
        selections = progress.selections
        if selections is not None:
            selections = [s.update(epoch, r) for s, r in zip(selections, records, strict=True)]
            values = [monitored_value(record, config.monitored) for record in records]
            if values[0] is not None and config.plateau_schedule:
                value = jnp.asarray(values if K > 1 else values[0], jnp.float32)
                opt_state = self.plateau(states.opt_state, value)
                states = states.replace(opt_state=sharding.put_replicated(opt_state, self.mesh))
        history = [h + [r] for h, r in zip(progress.history, records, strict=True)]
        progress = Progress(epoch, states, history, selections)
        # TensorBoard's confusion image is drawn once, at the run's last epoch (0.26 s each).
        last = test is not None and (epoch == config.epochs or progress.stopped)
        confusion = test["confusion"] if last else None
        return progress, records, train["per_step_loss"], confusion, test

    def _record(self, k, epoch, train, val, test, lr, seconds) -> Record:
        """Model k's metrics.jsonl line for `epoch` (a sweep's also name its seed and lr)."""
        record: Record = {"epoch": epoch}
        if self.num_models > 1:
            record.update(seed=self.seeds[k], peak_lr=self.lrs[k])
        for split, metrics in (("train", train), ("val", val), ("test", test)):
            if split == "val" and self.dataset.val_images is None:
                continue
            for name in ("loss", "accuracy"):
                key = f"train_{name}" if split == "train" else name
                record[f"{split}_{name}"] = None if metrics is None else float(metrics[key][k])
        examples_per_second = self.dataset.num_train / seconds
        record.update(lr=lr, epoch_seconds=seconds, examples_per_second=examples_per_second)
        if self.config.diagnostics:
            record["grad_norm"] = float(train["grad_norm"][k])
        return record

    def _maybe_save(self, progress, forced: bool) -> str | None:
        """Checkpoint when due, forced (signal, stdout), stopping, or at a new best epoch."""
        if self.checkpointer is None:
            return None
        config, epoch = self.config, progress.epoch
        due = epoch % config.checkpoint_every == 0 or epoch == config.epochs
        improved = any(s.improved for s in progress.selections or ())
        if due or forced or progress.stopped or improved:
            info = {**self.run_info, "selections": progress.selections_json()}
            selected = progress.selected_epochs()
            self.checkpointer.save(epoch, progress.states, as_saved(config), info, selected)
        return self.checkpointer.path(epoch)

    def _finish(self, progress, test) -> SweepResult:
        """The result, the final report, and DIR/selection.json."""
        states, K = progress.states, self.num_models
        states = states if K > 1 else jax.tree.map(lambda leaf: leaf[None], states)  # a stack of 1
        tests = [{name: v[k] for name, v in test.items()} for k in range(K)]
        models = (self.seeds, self.lrs, states, progress.history, tests, self.dataset)
        result = SweepResult(*models, self.compile_seconds, progress.selections)
        if self.log is not _silent:  # process 0's report, and its DIR/selection.json
            path = self.checkpointer.path if self.checkpointer is not None else None
            payload = report.report_run(result, path, self.log)
            if payload is not None and self.workdir is not None:
                text, shown = json.dumps(payload, indent=2), self.workdir.show(SELECTION)
                write_atomically(self.workdir.file(SELECTION), text, shown)
        return result


def _fetch(tree: Any) -> Any:
    """jax.device_get, but waiting in short sleeps: a signal handler then runs at once, where a
    blocking wait would defer it (and a second Ctrl-C) to the end of the epoch."""
    while not all(leaf.is_ready() for leaf in jax.tree.leaves(tree)):
        time.sleep(0.002)
    return jax.device_get(tree)
