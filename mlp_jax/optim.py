"""The optax optimizer and learning-rate schedule that a Config asks for.

The peak learning rate is an injected hyperparameter (it lives in the optimizer state), so a
learning-rate sweep can vmap over train states that differ only in it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mlp_jax.config import Config


def make_schedule(
    config: Config, steps_per_epoch: int, peak_lr: float | None = None
) -> optax.Schedule:
    """Learning rate as a function of the step count; epochs are converted to steps here."""
    peak = config.lr if peak_lr is None else peak_lr
    total_steps = config.epochs * steps_per_epoch
    if config.schedule == "constant":
        return optax.constant_schedule(peak)
    if config.schedule == "step":  # PyTorch's StepLR: lr * gamma ** (epoch // step_every)
        return optax.exponential_decay(
            peak, config.step_every * steps_per_epoch, config.gamma, staircase=True
        )
    if config.schedule == "exponential":  # lr * gamma ** epoch, decayed smoothly every step
        return optax.exponential_decay(peak, steps_per_epoch, config.gamma)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(peak, total_steps)
    if config.schedule == "warmup_cosine":
        warmup_steps = round(config.warmup_epochs * steps_per_epoch)
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup_steps, max(total_steps, warmup_steps + 1)
        )
    raise ValueError(f"unknown schedule {config.schedule!r}")  # Config.validate stops this first


def max_norm(max_norm: float) -> optax.GradientTransformation:
    """Max-norm constraint (Srivastava et al. 2014): after the update, each unit's incoming weight
    vector, a column of a Dense kernel [fan_in, units], has L2 norm <= max_norm; a longer one is
    scaled down onto the sphere. Biases are left alone. Put it last in a chain: it needs the
    final updates and the params (as optax.keep_params_nonnegative does).
    """

    def constrain(update: jax.Array, param: jax.Array) -> jax.Array:
        if param.ndim < 2:
            return update
        new = param + update
        norms = jnp.linalg.norm(new, axis=tuple(range(new.ndim - 1)), keepdims=True)
        scale = jnp.minimum(1.0, max_norm / jnp.maximum(norms, jnp.finfo(new.dtype).tiny))
        return new * scale - param

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("max_norm needs the params: call update(updates, state, params)")
        return jax.tree.map(constrain, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def make_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Gradient clipping (optional) -> weight decay -> the optimizer, at lr = peak * shape(step)
    -> the max-norm constraint (optional)."""
    shape = make_schedule(config, steps_per_epoch, peak_lr=1.0)

    def optimizer(learning_rate: float) -> optax.GradientTransformation:
        def schedule(count):
            return learning_rate * shape(count)

        if config.optimizer == "adamw":
            core = optax.adamw(schedule, weight_decay=config.weight_decay)
        else:
            core = _CORE[config.optimizer](schedule, config)
            if config.weight_decay > 0:  # L2 penalty on the gradient, as PyTorch's weight_decay
                core = optax.chain(optax.add_decayed_weights(config.weight_decay), core)
        if config.clip_norm is not None:
            core = optax.chain(optax.clip_by_global_norm(config.clip_norm), core)
        if config.max_norm is not None:
            core = optax.chain(core, max_norm(config.max_norm))
        return core

    return optax.inject_hyperparams(optimizer)(learning_rate=config.lr)


_CORE = {
    "sgd": lambda lr, config: optax.sgd(lr),
    "momentum": lambda lr, config: optax.sgd(lr, momentum=config.momentum),
    "nesterov": lambda lr, config: optax.sgd(lr, momentum=config.momentum, nesterov=True),
    "rmsprop": lambda lr, config: optax.rmsprop(lr),
    "adam": lambda lr, config: optax.adam(lr),
}
