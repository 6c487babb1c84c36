"""What a Config implies before the loop starts: the model, the initial train states of its K
models (one per seed and peak lr), and the keys that order each epoch. Model k of a sweep draws
exactly the numbers a separate run with its seed and lr would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp_jax.config import Config, ConfigError
from mlp_jax.data import Dataset, train_mean_std
from mlp_jax.model import MLP, mlp_from_config
from mlp_jax.optim import make_optimizer
from mlp_jax.steps import Loss, TrainState, create_train_state, steps_per_epoch


def build_model(config: Config, dataset: Dataset) -> MLP:
    """The MLP that `config` describes, normalising with the train split's statistics."""
    mean, std = train_mean_std(dataset.train_images)
    if std == 0:  # standardising would divide by 0; scaling would train on a constant
        what = f"every pixel of every training image of {dataset.name} is {round(mean * 255)}"
        flag = "idx_dir" if config.idx_dir is not None else "dataset"
        raise ConfigError(flag, f"{what} (std 0): nothing to learn from; check the image files")
    return mlp_from_config(config, dataset.num_classes, mean, std)


def init_key(seed: int | jax.Array) -> jax.Array:
    """The key that initialises params and dropout for `seed` (vmappable over seeds)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0)


def data_key(seed: int | jax.Array) -> jax.Array:
    """The key that orders the epochs for `seed`; epoch e uses fold_in(data_key, e)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def epoch_key(config: Config, epoch: int) -> jax.Array:
    """The key that orders epoch `epoch` (1-based): fold_in(data_key, epoch)."""
    return jax.random.fold_in(data_key(config.seed), epoch)


def epoch_keys(seeds: Sequence[int] | jax.Array, epoch: int, stacked: bool = False) -> jax.Array:
    """`epoch_key` of each seed: uint32[2] for one seed (unless `stacked`), uint32[K, 2] for K."""
    if len(seeds) == 1 and not stacked:
        return jax.random.fold_in(data_key(int(seeds[0])), epoch)
    return jax.vmap(lambda seed: jax.random.fold_in(data_key(seed), epoch))(jnp.asarray(seeds))


def new_train_state(config: Config, key: jax.Array, model: MLP, tx: Any, sample) -> TrainState:
    """create_train_state with the loss (--loss, --label-smoothing) and --ema of `config`."""
    loss = Loss(config.loss, config.label_smoothing)
    return create_train_state(key, model, tx, sample, loss=loss, ema_decay=config.ema)


def init_state(config: Config, dataset: Dataset, model: MLP) -> TrainState:
    """Params and optimizer state for `model`, initialised from `config.seed`."""
    return init_states(config, dataset, model, [config.seed], [config.lr])


def init_states(
    config: Config, dataset: Dataset, model: MLP, seeds: Sequence, lrs: Sequence, stacked=False
) -> TrainState:
    """The K models' initial states, model k as a separate run with seeds[k] and peak lr lrs[k]:
    one TrainState for K = 1 (unless `stacked`), else a stack (leading axis K)."""
    tx = make_optimizer(config, steps_per_epoch(len(dataset.train_labels), config.batch_size))

    def one(seed, lr):
        state = new_train_state(config, init_key(seed), model, tx, dataset.train_images[:1])
        return state if lr is None else with_learning_rate(state, lr)

    if len(seeds) == 1 and not stacked:
        return one(seeds[0], None if lrs[0] == config.lr else lrs[0])
    return jax.jit(jax.vmap(one))(jnp.asarray(seeds), jnp.asarray(lrs, jnp.float32))


def with_learning_rate(state: TrainState, lr: float | jax.Array) -> TrainState:
    """`state` with its peak learning rate (optax.inject_hyperparams' hyperparameter) set to lr."""
    hyperparams = state.opt_state.hyperparams
    lr = jnp.asarray(lr, jnp.result_type(hyperparams["learning_rate"]))
    opt_state = state.opt_state._replace(hyperparams=dict(hyperparams, learning_rate=lr))
    return state.replace(opt_state=opt_state)


def sweep_models(
    config: Config, seeds: Sequence[int] | None = None, lrs: Sequence[float] | None = None
) -> tuple[list[int], list[float]]:
    """(seeds, peak lrs) of the models, lr-major: each seed for each learning rate. Defaults:
    seeds config.seed .. config.seed + config.seeds - 1; lrs config.lr_sweep, else (config.lr,)."""
    seeds = range(config.seed, config.seed + config.seeds) if seeds is None else seeds
    lrs = (config.lr_sweep or (config.lr,)) if lrs is None else lrs
    return [int(s) for _ in lrs for s in seeds], [float(lr) for lr in lrs for _ in seeds]


MAX_STEPS = 2**31 - 1  # the step counter (and the schedules' step) is int32


def check_fits(config: Config, dataset: Dataset) -> None:
    """ConfigError unless the batch fits the training set and all steps fit the counter."""
    n, batch = len(dataset.train_labels), config.batch_size
    if batch > n:
        raise ConfigError("batch_size", f"must be 1 .. {n} (the training-set size), got {batch}")
    steps = steps_per_epoch(n, batch)
    if config.epochs * steps > MAX_STEPS:
        raise ConfigError(
            "epochs",
            f"{config.epochs} epochs of {steps} steps exceed the int32 step counter; at most "
            f"{MAX_STEPS // steps} epochs at batch size {batch}",
        )


def check_memory(config: Config, dataset: Dataset, device: jax.Device) -> None:
    """ConfigError with the estimate if the run cannot fit in what `device` has free (its
    allocator's limit, else the host's RAM), from shapes before allocating: each model's float32
    params, gradients and optimizer moments and the activations of one training and one evaluation
    batch; both splits as uint8. XLA may need some more for temporaries."""
    classes = dataset.num_classes
    sizes = [int(np.prod(dataset.image_shape)), *config.hidden_sizes_for(classes), classes]
    params = sum(a * b + b * config.bias for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    # Evaluation never uses a batch larger than its split (evaluate pads to min(batch, N)).
    eval_batch = min(config.eval_batch_size, max(len(dataset.test_labels), dataset.num_val))
    activations = 3 * config.batch_size * sum(sizes) + eval_batch * max(sizes)
    # Arrays per parameter: params, gradients and the optimizer's moments.
    copies = 2 + {"sgd": 0, "adam": 2, "adamw": 2}.get(config.optimizer, 1)
    needs = {
        "params and optimizer state": 4 * params * copies * config.num_models,
        "activations": 4 * config.num_models * activations,
        "data": int(dataset.train_images.nbytes + dataset.test_images.nbytes),
    }
    stats = device.memory_stats() or {}  # None on CPU
    if "bytes_limit" in stats:
        free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        what = f"{device} has {_bytes(free)} free"
    else:
        import psutil  # a CPU device uses host memory

        free = psutil.virtual_memory().available
        what = f"{device} (host memory) has {_bytes(free)} available"
    total = sum(needs.values())
    if total > free:
        parts = ", ".join(f"{name} {_bytes(size)}" for name, size in needs.items())
        raise ConfigError(
            "hidden" if config.hidden is not None else "layers",
            f"this run needs about {_bytes(total)} ({parts}) but {what}; use fewer or narrower "
            "layers, a smaller --batch-size, or fewer models (--seeds/--lr-sweep)",
        )


def _bytes(size: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    power = min(int(math.log(max(size, 1), 1024)), len(units) - 1)
    return f"{size / 1024**power:.1f} {units[power]}"
