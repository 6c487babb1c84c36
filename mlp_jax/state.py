"""What a Config implies before the loop starts: the model, its initial train state, the data keys.

Shared by the single-run loop (train.py) and the many-model loop (sweep.py), so that model k of a
sweep draws exactly the numbers a separate run with its seed would.
"""

from __future__ import annotations

import jax

from mlp_jax.config import Config, ConfigError
from mlp_jax.data import Dataset, train_mean_std
from mlp_jax.model import MLP, mlp_from_config
from mlp_jax.optim import make_optimizer
from mlp_jax.steps import TrainState, create_train_state, steps_per_epoch


def build_model(config: Config, dataset: Dataset) -> MLP:
    """The MLP that `config` describes, normalising with the train split's statistics."""
    mean, std = train_mean_std(dataset.train_images)
    return mlp_from_config(config, dataset.num_classes, mean, std)


def init_key(seed: int | jax.Array) -> jax.Array:
    """The key that initialises params and dropout for `seed` (vmappable over seeds)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0)


def data_key(seed: int | jax.Array) -> jax.Array:
    """The key that orders the epochs for `seed`; epoch e uses fold_in(data_key, e)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def init_state(config: Config, dataset: Dataset, model: MLP) -> TrainState:
    """Params and optimizer state for `model`, initialised from `config.seed`."""
    tx = make_optimizer(config, steps_per_epoch(len(dataset.train_labels), config.batch_size))
    return create_train_state(init_key(config.seed), model, tx, dataset.train_images[:1])


def epoch_key(config: Config, epoch: int) -> jax.Array:
    """The key that orders epoch `epoch` (1-based): fold_in(data_key, epoch)."""
    return jax.random.fold_in(data_key(config.seed), epoch)


def check_fits(config: Config, dataset: Dataset) -> None:
    num_train = len(dataset.train_labels)
    if config.batch_size > num_train:
        raise ConfigError(
            "--batch-size",
            f"must be 1 .. {num_train} (the training-set size), got {config.batch_size}",
        )
