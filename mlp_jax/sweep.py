"""Many models in one compiled program: jax.vmap over a stack of train states (seeds, lrs).

K small models cost one dispatch per epoch instead of K, and model k equals a separate run with
its seed and peak learning rate (which lives in the optimizer state, see optim.py).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mlp_jax.config import Config
from mlp_jax.data import Dataset, load_dataset
from mlp_jax.model import MLP
from mlp_jax.optim import make_optimizer, make_schedule, plateau_scale, step_plateau
from mlp_jax.selection import Selection, monitored_value, new_selection
from mlp_jax.sharding import batch_sharding, data_parallel, make_mesh, put_replicated
from mlp_jax.state import build_model, check_fits, data_key, init_key, new_train_state
from mlp_jax.steps import TrainState, evaluate, steps_per_epoch, train_epoch

Record = dict[str, Any]


@dataclasses.dataclass
class SweepProgress:
    """Where a sweep stands after `epoch` epochs: all that its checkpoint holds, and all a resume
    needs (with `epoch_keys` ordering each epoch)."""

    epoch: int
    states: TrainState  # stacked: every leaf has a leading axis of one entry per model
    history: list[list[Record]]  # history[k]: model k's records of epochs 1..epoch
    selections: list[Selection] | None  # per model, when something is monitored


@dataclasses.dataclass
class SweepResult:
    """Model k was trained with seeds[k] and peak learning rate lrs[k]."""

    seeds: list[int]
    lrs: list[float]
    states: TrainState  # stacked: every leaf has a leading axis of length len(seeds)
    history: list[list[Record]]  # history[k][e]: model k's metrics.jsonl record for epoch e+1
    test: list[dict[str, Any]]  # evaluate() of each final model, as numpy
    dataset: Dataset
    compile_seconds: float  # compiling the vmapped epoch and evaluation, before epoch 1
    selections: list[Selection] | None = None  # per model: its best epoch by the monitor

    def state(self, k: int) -> TrainState:
        """Model k's train state, unstacked."""
        return jax.tree.map(lambda leaf: leaf[k], self.states)

    def selected(self, k: int) -> Record:
        """Model k's record of the epoch validation selected (its last epoch if none was)."""
        best = self.selections[k].best_epoch if self.selections else None
        return self.history[k][-1] if best is None else self.history[k][best - 1]

    def summary(self) -> list[Record]:
        """Per peak learning rate: mean and std over seeds of the final test accuracy and loss,
        and, with a validation split, of each model's selected epoch's val and test accuracy.

        std is `sample_std` (ddof=1; 0 for a single seed). Diverged models
        (non-finite train loss) are counted in `diverged` and left out of the statistics.
        """
        rows = []
        for lr in dict.fromkeys(self.lrs):  # first-seen order
            members = [k for k, model_lr in enumerate(self.lrs) if model_lr == lr]
            finite = [k for k in members if np.isfinite(self.history[k][-1]["train_loss"])]
            row = {
                "lr": lr,
                "seeds": [self.seeds[k] for k in members],
                "diverged": len(members) - len(finite),
                **_mean_std("test_accuracy", [self.test[k]["accuracy"] for k in finite]),
                **_mean_std("test_loss", [self.test[k]["loss"] for k in finite]),
            }
            if self.dataset.val_labels is not None:
                selected = [self.selected(k) for k in finite]
                row["selected_epochs"] = [record["epoch"] for record in selected]
                for key in ("val_loss", "val_accuracy", "test_accuracy"):
                    values = [record[key] for record in selected]
                    row.update(_mean_std(f"selected_{key}", values))
            rows.append(row)
        return rows

    def pick(self, by: str = "val_accuracy") -> Record | None:
        """The summary row of the learning rate that validation picks: the best mean `by`
        (val_accuracy or val_loss) at the selected epochs. None without a validation split:
        a sweep never picks on test."""
        if self.dataset.val_labels is None:
            return None
        rows = [row for row in self.summary() if np.isfinite(row[f"selected_{by}_mean"])]
        if not rows:
            return None
        sign = -1.0 if by.endswith("accuracy") else 1.0
        return min(rows, key=lambda row: sign * row[f"selected_{by}_mean"])


def _mean_std(name: str, values: Sequence[float | None]) -> Record:
    """{name_mean, name_std}: sample std (ddof=1; 0 for one value); NaN for no value."""
    array = np.array([v for v in values if v is not None], np.float64)
    if len(array) == 0:
        return {f"{name}_mean": float("nan"), f"{name}_std": float("nan")}
    return {f"{name}_mean": float(array.mean()), f"{name}_std": sample_std(array)}


def sample_std(values: Sequence[float] | np.ndarray) -> float:
    """The std of every "mean ± std" this package prints: over seeds, ddof=1 (0 for one)."""
    values = np.asarray(values, np.float64)
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def sweep_models(
    config: Config, seeds: Sequence[int] | None = None, lrs: Sequence[float] | None = None
) -> tuple[list[int], list[float]]:
    """(seed, lr) of every model: each seed for each learning rate, lr-major.

    Defaults: seeds config.seed .. config.seed + config.seeds - 1; lrs config.lr_sweep, else
    (config.lr,).
    """
    if seeds is None:
        seeds = range(config.seed, config.seed + config.seeds)
    if lrs is None:
        lrs = config.lr_sweep if config.lr_sweep is not None else (config.lr,)
    pairs = [(int(seed), float(lr)) for lr in lrs for seed in seeds]
    return [seed for seed, _ in pairs], [lr for _, lr in pairs]


def with_learning_rate(state: TrainState, lr: float | jax.Array) -> TrainState:
    """`state` with its peak learning rate (optax.inject_hyperparams' hyperparameter) set to lr."""
    opt_state = state.opt_state
    old = opt_state.hyperparams["learning_rate"]
    hyperparams = dict(opt_state.hyperparams, learning_rate=jnp.asarray(lr, jnp.result_type(old)))
    return state.replace(opt_state=opt_state._replace(hyperparams=hyperparams))


def init_states(
    config: Config, dataset: Dataset, model: MLP, seeds: Sequence[int], lrs: Sequence[float]
) -> TrainState:
    """A stack of train states, model k initialised as a separate run with seeds[k] and lrs[k]."""
    tx = make_optimizer(config, steps_per_epoch(len(dataset.train_labels), config.batch_size))
    sample_input = dataset.train_images[:1]

    def one(seed, lr):
        state = new_train_state(config, init_key(seed), model, tx, sample_input)
        return with_learning_rate(state, lr)

    return jax.jit(jax.vmap(one))(jnp.asarray(seeds), jnp.asarray(lrs, jnp.float32))


@jax.jit
def epoch_keys(seeds: jax.Array, epoch: int | jax.Array) -> jax.Array:
    """uint32[K, 2]: the key that orders `epoch` for each seed, as state.epoch_key does."""
    return jax.vmap(lambda seed: jax.random.fold_in(data_key(seed), epoch))(seeds)


def train_many(
    config: Config,
    dataset: Dataset | None = None,
    seeds: Sequence[int] | None = None,
    lrs: Sequence[float] | None = None,
    mesh: Mesh | None = None,
    on_epoch: Callable[[int, list[Record]], None] | None = None,
    on_compiled: Callable[[float], None] | None = None,
    start: SweepProgress | None = None,
    after_epoch: Callable[[SweepProgress], bool] | None = None,
) -> SweepResult:
    """Train one model per (seed, lr) for config.epochs, all in one compiled epoch per epoch.

    Defaults as in `sweep_models`. Each model's data order, init and dropout come from its seed, so
    model k equals train_and_evaluate(config.replace(seed=seeds[k], lr=lrs[k])) within float
    tolerance. Batches are split over `mesh` (default: make_mesh(config)). After each epoch,
    `on_epoch(epoch, records)` gets one metrics record per model (the loop writes them);
    `on_compiled(seconds)` is called once the program is compiled, before epoch 1.
    A model whose loss becomes NaN keeps going (its records say so); the others are unaffected.

    With a validation split (dataset.val_images), each evaluation also scores it (`val_loss`,
    `val_accuracy`), and each model keeps its best epoch by config.monitored; with
    --early-stopping, training stops once every model would have stopped. `start` continues a
    sweep from a checkpoint (see init_progress); `after_epoch(progress)` is called after
    on_epoch with what a checkpoint needs, and returning True stops the sweep there.
    """
    dataset = dataset if dataset is not None else load_dataset(config)
    check_fits(config, dataset)
    mesh = mesh if mesh is not None else make_mesh(config)
    seeds, lrs = sweep_models(config, seeds, lrs)
    model = build_model(config, dataset)
    num_train = len(dataset.train_labels)
    batches = steps_per_epoch(num_train, config.batch_size)
    shapes = [make_schedule(config, batches, peak_lr=lr) for lr in lrs]

    if start is None:
        start = init_progress(config, dataset, model, seeds, lrs)
    states = put_replicated(start.states, mesh)
    history = [list(records) for records in start.history]
    selections = start.selections
    train_images, train_labels, test_images, test_labels = put_replicated(
        (dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels), mesh
    )
    split = batch_sharding(mesh)
    epoch_fn = functools.partial(train_epoch, batch_size=config.batch_size, batch_sharding=split)
    eval_fn = functools.partial(evaluate, batch_size=config.eval_batch_size, batch_sharding=split)
    # One program for all models: the data is shared (None), states and keys are stacked (0).
    run_epoch = data_parallel(
        jax.vmap(epoch_fn, in_axes=(0, None, None, 0)), mesh, donate_state=True
    )
    run_eval = data_parallel(jax.vmap(eval_fn, in_axes=(0, None, None)), mesh, donate_state=False)
    seeds_array = jnp.asarray(seeds)
    compile_start = time.perf_counter()
    keys = put_replicated(epoch_keys(seeds_array, 1), mesh)
    run_epoch = run_epoch.lower(states, train_images, train_labels, keys).compile()
    run_test = run_eval.lower(states, test_images, test_labels).compile()
    run_val = None
    if dataset.val_images is not None:
        val_images, val_labels = put_replicated((dataset.val_images, dataset.val_labels), mesh)
        run_val = run_eval.lower(states, val_images, val_labels).compile()
    compile_seconds = time.perf_counter() - compile_start
    if on_compiled is not None:
        on_compiled(compile_seconds)
    step_plateaus = jax.jit(jax.vmap(functools.partial(step_plateau, config)))

    test: dict[str, Any] | None = None
    for epoch in range(start.epoch + 1, config.epochs + 1):
        if selections is not None and all(s.should_stop for s in selections):
            break  # resumed a sweep that early stopping had ended
        keys = put_replicated(epoch_keys(seeds_array, epoch), mesh)
        step = (epoch - 1) * batches
        scales = np.broadcast_to(jax.device_get(plateau_scale(states.opt_state)), len(seeds))
        epoch_start = time.perf_counter()
        states, train = run_epoch(states, train_images, train_labels, keys)
        train = jax.device_get(train)
        seconds = time.perf_counter() - epoch_start
        evaluated = epoch % config.eval_every == 0 or epoch == config.epochs
        val = None
        if evaluated:
            test = jax.device_get(run_test(states, test_images, test_labels))
            if run_val is not None:
                val = jax.device_get(run_val(states, val_images, val_labels))
        records = []
        for k, (seed, lr) in enumerate(zip(seeds, lrs, strict=True)):
            records.append({
                "epoch": epoch,
                "seed": seed,
                "peak_lr": lr,
                "train_loss": float(train["train_loss"][k]),
                "train_accuracy": float(train["train_accuracy"][k]),
                **_split_metrics("val", val, k, run_val is not None),
                "test_loss": float(test["loss"][k]) if evaluated else None,
                "test_accuracy": float(test["accuracy"][k]) if evaluated else None,
                "lr": float(shapes[k](step)) * float(scales[k]),
                "epoch_seconds": seconds,  # for all models together
                "examples_per_second": num_train / seconds,  # per model; K times this in all
            })  # fmt: skip
            history[k].append(records[-1])
        if selections is not None:
            selections = [s.update(epoch, r) for s, r in zip(selections, records, strict=True)]
            values = [monitored_value(record, config.monitored) for record in records]
            if values[0] is not None and config.plateau_schedule:
                opt_state = step_plateaus(states.opt_state, jnp.asarray(values, jnp.float32))
                states = states.replace(opt_state=put_replicated(opt_state, mesh))
        if on_epoch is not None:
            on_epoch(epoch, records)
        all_stopped = selections is not None and all(s.should_stop for s in selections)
        progress = SweepProgress(epoch, states, history, selections)
        if (after_epoch is not None and after_epoch(progress)) or all_stopped:
            break
    if test is None or (history[0] and history[0][-1]["test_accuracy"] is None):  # resumed,
        # or early stopping (on train_loss) ended it in an epoch without evaluation
        test = jax.device_get(run_test(states, test_images, test_labels))
    per_model = [jax.tree.map(lambda leaf, k=k: leaf[k], test) for k in range(len(seeds))]
    return SweepResult(seeds, lrs, states, history, per_model, dataset, compile_seconds, selections)


def init_progress(
    config: Config, dataset: Dataset, model: MLP, seeds: Sequence[int], lrs: Sequence[float]
) -> SweepProgress:
    """A sweep before epoch 1: fresh stacked states, no history, fresh selections."""
    selection = new_selection(config)
    return SweepProgress(
        epoch=0,
        states=init_states(config, dataset, model, seeds, lrs),
        history=[[] for _ in seeds],
        selections=None if selection is None else [selection] * len(seeds),
    )


def _split_metrics(split: str, metrics: dict[str, Any] | None, k: int, present: bool) -> Record:
    """{split_loss, split_accuracy} of model k (None when not evaluated); {} without the split."""
    if not present:
        return {}
    if metrics is None:
        return {f"{split}_loss": None, f"{split}_accuracy": None}
    return {
        f"{split}_loss": float(metrics["loss"][k]),
        f"{split}_accuracy": float(metrics["accuracy"][k]),
    }
