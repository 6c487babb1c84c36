"""mlp_jax: multi-layer perceptrons on MNIST-like data, trained by pure, compiled JAX functions.

The public API is the names below; everything else is importable from its module. Names load on
first use (PEP 562), so `python -m mlp_jax.train --help` answers without importing JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it: the one list of the public API.
_PUBLIC = {
    # Configuration and data.
    "Config": "config",
    "ConfigError": "config",
    "Dataset": "data",
    "load_dataset": "data",
    "validation_split": "data",
    # The model and its optimizer.
    "MLP": "model",
    "mlp_from_config": "model",
    "count_params": "model",
    "make_optimizer": "optim",
    "make_schedule": "optim",
    # Pure, compiled steps: put them in your own loops (jit, vmap, lax.scan, sharded batches).
    "TrainState": "steps",
    "create_train_state": "steps",
    "cross_entropy_loss": "steps",
    "train_step": "steps",
    "train_epoch": "steps",
    "eval_step": "steps",
    "evaluate": "steps",
    "predict": "steps",
    "steps_per_epoch": "steps",
    # The loop (K >= 1 models), checkpoints, devices.
    "train_and_evaluate": "loop",
    "train_many": "loop",
    "restore_checkpoint": "resume",
    "restore_params": "resume",
    "make_mesh": "sharding",
    "shard_batch": "sharding",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mlp_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mlp_jax.{_PUBLIC[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
