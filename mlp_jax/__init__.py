"""mlp_jax: multi-layer perceptrons on MNIST-like data, trained by pure, compiled JAX functions."""

from mlp_jax.config import Config, ConfigError
from mlp_jax.data import Dataset, load_dataset
from mlp_jax.model import MLP, count_params, mlp_from_config
from mlp_jax.optim import make_optimizer, make_schedule
from mlp_jax.steps import (
    TrainState,
    create_train_state,
    cross_entropy_loss,
    eval_step,
    evaluate,
    steps_per_epoch,
    train_epoch,
    train_step,
)

__all__ = [
    "MLP",
    "Config",
    "ConfigError",
    "Dataset",
    "TrainState",
    "count_params",
    "create_train_state",
    "cross_entropy_loss",
    "eval_step",
    "evaluate",
    "load_dataset",
    "make_optimizer",
    "make_schedule",
    "mlp_from_config",
    "steps_per_epoch",
    "train_epoch",
    "train_step",
]
