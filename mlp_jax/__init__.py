"""mlp_jax: multi-layer perceptrons on MNIST-like data, trained by pure, compiled JAX functions.

Names load on first use (PEP 562), so `python -m mlp_jax.train --help` answers without JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlp_jax.checkpoint import (
        Checkpoint,
        Checkpointer,
        CheckpointError,
        NoCheckpointError,
        restore_checkpoint,
        restore_params,
    )
    from mlp_jax.config import Config, ConfigError
    from mlp_jax.data import Dataset, load_dataset, validation_split
    from mlp_jax.loop import (
        DivergedError,
        RunResult,
        StoppedBySignal,
        train_and_evaluate,
        train_and_evaluate_many,
    )
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
        predict,
        steps_per_epoch,
        train_epoch,
        train_step,
    )
    from mlp_jax.sweep import SweepResult, train_many, with_learning_rate
    from mlp_jax.tensorboard import TensorBoardWriter
    from mlp_jax.workdir import Workdir, read_metrics
    from mlp_jax.writers import ConsoleWriter, MetricsFileWriter, MetricWriter, ProgressBar

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
    "validation_split",
    "make_optimizer",
    "make_schedule",
    "mlp_from_config",
    "predict",
    "steps_per_epoch",
    "train_epoch",
    "train_step",
    # The loop, its run folder and where its metrics go.
    "ConsoleWriter",
    "DivergedError",
    "MetricWriter",
    "MetricsFileWriter",
    "ProgressBar",
    "TensorBoardWriter",
    "RunResult",
    "StoppedBySignal",
    "Workdir",
    "read_metrics",
    "train_and_evaluate",
    "train_and_evaluate_many",
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

# Where each public name lives.
_MODULES = {
    "Checkpoint": "mlp_jax.checkpoint",
    "CheckpointError": "mlp_jax.checkpoint",
    "Checkpointer": "mlp_jax.checkpoint",
    "NoCheckpointError": "mlp_jax.checkpoint",
    "restore_checkpoint": "mlp_jax.checkpoint",
    "restore_params": "mlp_jax.checkpoint",
    "MLP": "mlp_jax.model",
    "Config": "mlp_jax.config",
    "ConfigError": "mlp_jax.config",
    "Dataset": "mlp_jax.data",
    "TrainState": "mlp_jax.steps",
    "count_params": "mlp_jax.model",
    "create_train_state": "mlp_jax.steps",
    "cross_entropy_loss": "mlp_jax.steps",
    "eval_step": "mlp_jax.steps",
    "evaluate": "mlp_jax.steps",
    "load_dataset": "mlp_jax.data",
    "validation_split": "mlp_jax.data",
    "make_optimizer": "mlp_jax.optim",
    "make_schedule": "mlp_jax.optim",
    "mlp_from_config": "mlp_jax.model",
    "predict": "mlp_jax.steps",
    "steps_per_epoch": "mlp_jax.steps",
    "train_epoch": "mlp_jax.steps",
    "train_step": "mlp_jax.steps",
    "ConsoleWriter": "mlp_jax.writers",
    "DivergedError": "mlp_jax.loop",
    "MetricWriter": "mlp_jax.writers",
    "MetricsFileWriter": "mlp_jax.writers",
    "ProgressBar": "mlp_jax.writers",
    "TensorBoardWriter": "mlp_jax.tensorboard",
    "RunResult": "mlp_jax.loop",
    "StoppedBySignal": "mlp_jax.loop",
    "Workdir": "mlp_jax.workdir",
    "read_metrics": "mlp_jax.workdir",
    "train_and_evaluate": "mlp_jax.loop",
    "train_and_evaluate_many": "mlp_jax.loop",
    "SweepResult": "mlp_jax.sweep",
    "batch_sharding": "mlp_jax.sharding",
    "build_model": "mlp_jax.state",
    "data_parallel": "mlp_jax.sharding",
    "epoch_key": "mlp_jax.state",
    "init_state": "mlp_jax.state",
    "initialize_distributed": "mlp_jax.sharding",
    "is_main_process": "mlp_jax.sharding",
    "make_mesh": "mlp_jax.sharding",
    "put_replicated": "mlp_jax.sharding",
    "replicated": "mlp_jax.sharding",
    "shard_batch": "mlp_jax.sharding",
    "train_many": "mlp_jax.sweep",
    "with_learning_rate": "mlp_jax.sweep",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'mlp_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
