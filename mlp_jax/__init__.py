"""mlp_jax: multi-layer perceptrons on MNIST-like data, trained by pure, compiled JAX functions."""

from mlp_jax.checkpoint import (
    Checkpoint,
    Checkpointer,
    CheckpointError,
    NoCheckpointError,
    restore_checkpoint,
    restore_params,
)
from mlp_jax.config import Config, ConfigError
from mlp_jax.data import Dataset, load_dataset
from mlp_jax.model import MLP, count_params, mlp_from_config
from mlp_jax.optim import make_optimizer, make_schedule
from mlp_jax.sharding import (
    batch_sharding,
    data_parallel,
    initialize_distributed,
    is_main_process,
    make_mesh,
    put_replicated,
    replicated,
    shard_batch,
)
from mlp_jax.state import build_model, epoch_key, init_state
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
from mlp_jax.sweep import SweepResult, train_many, with_learning_rate

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Checkpointer",
    "NoCheckpointError",
    "restore_checkpoint",
    "restore_params",
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
    # Scale: devices, processes, many models.
    "SweepResult",
    "batch_sharding",
    "build_model",
    "data_parallel",
    "epoch_key",
    "init_state",
    "initialize_distributed",
    "is_main_process",
    "make_mesh",
    "put_replicated",
    "replicated",
    "shard_batch",
    "train_many",
    "with_learning_rate",
]
