"""The optax optimizer and learning-rate schedule that a Config asks for. The peak learning rate
is an injected hyperparameter (it lives in the optimizer state), so a learning-rate sweep can vmap
over train states that differ only in it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from optax.contrib import ReduceLROnPlateauState, reduce_on_plateau

from mlp_jax.config import Config


def make_schedule(
    config: Config, steps_per_epoch: float, peak_lr: float | None = None
) -> optax.Schedule:
    """Learning rate as a function of the step count; epochs are converted to steps here."""
    peak = config.lr if peak_lr is None else peak_lr
    total_steps = config.epochs * steps_per_epoch
    if config.schedule in ("constant", "plateau"):  # plateau: scaled by `plateau_scale` on top
        return optax.constant_schedule(peak)
    if config.schedule == "step":  # PyTorch's StepLR: lr * gamma ** (epoch // step_every)
        every = config.step_every * steps_per_epoch
        return optax.exponential_decay(peak, every, config.gamma, staircase=True)
    if config.schedule == "exponential":  # lr * gamma ** epoch, decayed smoothly every step
        return optax.exponential_decay(peak, steps_per_epoch, config.gamma)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(peak, total_steps)
    # warmup_cosine, the last name Config.validate allows
    warmup = round(config.warmup_epochs * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1))


def max_norm(max_norm: float) -> optax.GradientTransformation:
    """Max-norm constraint (Srivastava et al. 2014): after the update, each column of a Dense
    kernel [fan_in, units] (a unit's incoming weights) is scaled down to L2 norm <= max_norm;
    biases are left alone. Put it last in a chain: it needs the final updates and the params.
    """

    def constrain(update: jax.Array, param: jax.Array) -> jax.Array:
        if param.ndim < 2:
            return update
        new = param + update
        norms = jnp.linalg.norm(new, axis=tuple(range(new.ndim - 1)), keepdims=True)
        scale = jnp.minimum(1.0, max_norm / jnp.maximum(norms, jnp.finfo(new.dtype).tiny))
        return new * scale - param

    def update_fn(updates, state, params=None):
        return jax.tree.map(constrain, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def make_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Gradient clipping (optional) -> weight decay -> the optimizer, at lr = peak * shape(step)
    -> the max-norm constraint (optional); with --grad-accum N all of it inside optax.MultiSteps,
    which applies it to the mean gradient of every N batches (its schedule counts those)."""
    # Without accumulation the int is kept: float step counts could change the schedule's bits.
    accum = config.grad_accum
    shape = make_schedule(config, steps_per_epoch / accum if accum > 1 else steps_per_epoch, 1.0)

    def optimizer(learning_rate: float) -> optax.GradientTransformation:
        core = _CORE[config.optimizer](lambda count: learning_rate * shape(count), config)
        # L2 penalty on the gradient, as PyTorch's weight_decay (adamw's is decoupled, its own)
        if config.weight_decay > 0 and config.optimizer != "adamw":
            core = optax.chain(optax.add_decayed_weights(config.weight_decay), core)
        if config.clip_norm is not None:
            core = optax.chain(optax.clip_by_global_norm(config.clip_norm), core)
        if config.schedule == "plateau":
            core = optax.chain(core, _scale_by_plateau(config))
        if config.max_norm is not None:  # last: it projects the params after the whole update
            core = optax.chain(core, max_norm(config.max_norm))
        if accum > 1:  # inside inject_hyperparams: the peak lr stays where it was
            core = optax.MultiSteps(core, every_k_schedule=accum).gradient_transformation()
        return core

    return optax.inject_hyperparams(optimizer)(learning_rate=config.lr)


_CORE = {
    "sgd": lambda lr, config: optax.sgd(lr),
    "momentum": lambda lr, config: optax.sgd(lr, momentum=config.momentum),
    "nesterov": lambda lr, config: optax.sgd(lr, momentum=config.momentum, nesterov=True),
    "rmsprop": lambda lr, config: optax.rmsprop(lr),
    "adam": lambda lr, config: optax.adam(lr),
    "adamw": lambda lr, config: optax.adamw(lr, weight_decay=config.weight_decay),
}


# ------------------------------------------------------------------------ the plateau schedule
# optax.contrib.reduce_on_plateau needs the monitored value in every update, but it exists only
# after an evaluation, and TrainState.apply_gradients passes no extra arguments. So the training
# step only applies the current scale, and `step_plateau` updates the state after each evaluation.
# The state lives in the optimizer state: checkpoints and resume need no special case.


def _reduce_on_plateau(c: Config) -> optax.GradientTransformationExtraArgs:
    return reduce_on_plateau(c.plateau_factor, c.plateau_patience, cooldown=c.plateau_cooldown)


def _scale_by_plateau(config: Config) -> optax.GradientTransformation:
    """Multiply the updates by reduce_on_plateau's current scale, leaving its state unchanged."""

    def update(updates, state: ReduceLROnPlateauState, params=None):
        return jax.tree.map(lambda g: state.scale.astype(g.dtype) * g, updates), state

    return optax.GradientTransformation(_reduce_on_plateau(config).init, update)


def _is_plateau(node) -> bool:
    return isinstance(node, ReduceLROnPlateauState)


def step_plateau(config: Config, opt_state, value: jax.Array):
    """`opt_state` after one evaluation whose monitored value (lower is better) is `value`, by
    optax's reduce_on_plateau update (a no-op without it). Pure: jit and vmap it (one per model).
    """
    if config.schedule != "plateau":
        return opt_state
    plateau = _reduce_on_plateau(config)

    def update(node):
        return plateau.update((), node, value=value)[1] if _is_plateau(node) else node

    return jax.tree.map(update, opt_state, is_leaf=_is_plateau)


def plateau_scale(opt_state) -> jax.Array | float:
    """The factor by which the plateau schedule has cut the lr so far (1.0 without one)."""
    nodes = jax.tree.leaves(opt_state, is_leaf=_is_plateau)
    return next((node.scale for node in nodes if _is_plateau(node)), 1.0)
