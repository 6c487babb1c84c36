"""mlp_jax: multi-layer perceptrons on MNIST-like data, trained by pure, compiled JAX functions.

The public API is the names below (each importable from its module too). They load on first use
(PEP 562), so `python -m mlp_jax.train --help` answers without importing JAX."""

from __future__ import annotations

import importlib
from typing import Any

# module -> the public names it defines: the one list of the public API.
_MODULES = {
    "config": "Config ConfigError",
    "data": "Dataset load_dataset validation_split",
    "model": "MLP mlp_from_config count_params",
    "optim": "make_optimizer make_schedule",
    # Pure, compiled steps: put them in your own loops (jit, vmap, lax.scan, sharded batches).
    "steps": "TrainState create_train_state cross_entropy_loss train_step train_epoch eval_step "
    "evaluate predict steps_per_epoch",
    # The loop (K >= 1 models), checkpoints, devices.
    "loop": "train_and_evaluate train_many",
    "resume": "restore_checkpoint restore_params",
    "sharding": "make_mesh shard_batch",
}
_PUBLIC = {name: module for module, names in _MODULES.items() for name in names.split()}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mlp_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mlp_jax.{_PUBLIC[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
