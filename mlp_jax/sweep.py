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
from mlp_jax.optim import make_optimizer, make_schedule
from mlp_jax.sharding import batch_sharding, data_parallel, make_mesh, put_replicated
from mlp_jax.state import build_model, check_fits, data_key, init_key, new_train_state
from mlp_jax.steps import TrainState, evaluate, steps_per_epoch, train_epoch

Record = dict[str, Any]


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

    def state(self, k: int) -> TrainState:
        """Model k's train state, unstacked."""
        return jax.tree.map(lambda leaf: leaf[k], self.states)

    def summary(self) -> list[Record]:
        """Per peak learning rate: mean and std over seeds of the final test accuracy and loss.

        std is `sample_std` (ddof=1; 0 for a single seed). Diverged models
        (non-finite train loss) are counted in `diverged` and left out of the statistics.
        """
        rows = []
        for lr in dict.fromkeys(self.lrs):  # first-seen order
            members = [k for k, model_lr in enumerate(self.lrs) if model_lr == lr]
            finite = [k for k in members if np.isfinite(self.history[k][-1]["train_loss"])]
            accuracy = np.array([self.test[k]["accuracy"] for k in finite], np.float64)
            loss = np.array([self.test[k]["loss"] for k in finite], np.float64)
            rows.append({
                "lr": lr,
                "seeds": [self.seeds[k] for k in members],
                "diverged": len(members) - len(finite),
                "test_accuracy_mean": float(accuracy.mean()) if finite else float("nan"),
                "test_accuracy_std": sample_std(accuracy) if finite else float("nan"),
                "test_loss_mean": float(loss.mean()) if finite else float("nan"),
                "test_loss_std": sample_std(loss) if finite else float("nan"),
            })  # fmt: skip
        return rows


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
) -> SweepResult:
    """Train one model per (seed, lr) for config.epochs, all in one compiled epoch per epoch.

    Defaults as in `sweep_models`. Each model's data order, init and dropout come from its seed, so
    model k equals train_and_evaluate(config.replace(seed=seeds[k], lr=lrs[k])) within float
    tolerance. Batches are split over `mesh` (default: make_mesh(config)). After each epoch,
    `on_epoch(epoch, records)` gets one metrics record per model (train.py prints from it);
    `on_compiled(seconds)` is called once the program is compiled, before epoch 1.
    A model whose loss becomes NaN keeps going (its records say so); the others are unaffected.
    """
    dataset = dataset if dataset is not None else load_dataset(config)
    check_fits(config, dataset)
    mesh = mesh if mesh is not None else make_mesh(config)
    seeds, lrs = sweep_models(config, seeds, lrs)
    model = build_model(config, dataset)
    num_train = len(dataset.train_labels)
    batches = steps_per_epoch(num_train, config.batch_size)
    shapes = [make_schedule(config, batches, peak_lr=lr) for lr in lrs]

    states = put_replicated(init_states(config, dataset, model, seeds, lrs), mesh)
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
    start = time.perf_counter()
    keys = put_replicated(epoch_keys(seeds_array, 1), mesh)
    run_epoch = run_epoch.lower(states, train_images, train_labels, keys).compile()
    run_eval = run_eval.lower(states, test_images, test_labels).compile()
    compile_seconds = time.perf_counter() - start
    if on_compiled is not None:
        on_compiled(compile_seconds)

    history: list[list[Record]] = [[] for _ in seeds]
    test: dict[str, Any] | None = None
    for epoch in range(1, config.epochs + 1):
        keys = put_replicated(epoch_keys(seeds_array, epoch), mesh)
        step = (epoch - 1) * batches
        start = time.perf_counter()
        states, train = run_epoch(states, train_images, train_labels, keys)
        train = jax.device_get(train)
        seconds = time.perf_counter() - start
        evaluated = epoch % config.eval_every == 0 or epoch == config.epochs
        if evaluated:
            test = jax.device_get(run_eval(states, test_images, test_labels))
        records = []
        for k, (seed, lr) in enumerate(zip(seeds, lrs, strict=True)):
            records.append({
                "epoch": epoch,
                "seed": seed,
                "peak_lr": lr,
                "train_loss": float(train["train_loss"][k]),
                "train_accuracy": float(train["train_accuracy"][k]),
                "test_loss": float(test["loss"][k]) if evaluated else None,
                "test_accuracy": float(test["accuracy"][k]) if evaluated else None,
                "lr": float(shapes[k](step)),
                "epoch_seconds": seconds,  # for all models together
                "examples_per_second": num_train / seconds,  # per model; K times this in all
            })  # fmt: skip
            history[k].append(records[-1])
        if on_epoch is not None:
            on_epoch(epoch, records)
    per_model = [jax.tree.map(lambda leaf, k=k: leaf[k], test) for k in range(len(seeds))]
    return SweepResult(seeds, lrs, states, history, per_model, dataset, compile_seconds)
