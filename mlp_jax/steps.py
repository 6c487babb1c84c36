"""Pure, compiled training and evaluation (no printing, no clocks, no host-side randomness): one
step, one whole epoch, one whole split. Batches are dicts `{"image": uint8[B, H, W, C], "label":
int32[B]}`, optionally with `"mask": bool[B]` (False marks padding, which then counts for nothing).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

if TYPE_CHECKING:  # flax.nnx costs ~0.1 s to import: only a user's NNX model brings it in
    from flax import nnx

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Loss:
    """The training loss, held by the TrainState (like apply_fn) so train_step needs no flag.

    `kind` "cross_entropy": softmax cross-entropy; "mse": the TA deck's 1/2 sum_k (sigmoid(z_k) -
    y_k)^2 against one-hot targets y. `label_smoothing` A trains on (1 - A) * one_hot + A / classes.
    Frozen, so equal losses compare equal in jit's cache.
    """

    kind: str = "cross_entropy"
    label_smoothing: float = 0.0

    def __call__(self, logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None):
        """Mean loss over the real (unmasked) examples of a batch."""
        if self.kind == "cross_entropy" and self.label_smoothing == 0:
            return cross_entropy_loss(logits, labels, mask)
        targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        if self.label_smoothing > 0:
            targets = optax.smooth_labels(targets, self.label_smoothing)
        if self.kind == "mse":
            # dC/dz_k = (y^_k - y_k) y^_k (1 - y^_k) vanishes where a sigmoid saturates, even on a
            # wrong answer: why cross-entropy (dC/dz = softmax(z) - y) trains faster.
            losses = 0.5 * jnp.sum(jnp.square(jax.nn.sigmoid(logits) - targets), axis=-1)
        else:
            losses = optax.softmax_cross_entropy(logits, targets)
        return _masked_mean(losses, mask)


class TrainState(train_state.TrainState):
    """flax TrainState plus the PRNG key for dropout/augmentation (step t uses fold_in(rng, t),
    so a state alone determines the rest of training) and the training `loss`. With `ema_decay`,
    `ema_params` is the moving average of the params, which evaluation uses; else it is None."""

    rng: jax.Array
    ema_params: Any = None
    loss: Callable[..., jax.Array] = struct.field(pytree_node=False, default=Loss())
    ema_decay: float | None = struct.field(pytree_node=False, default=None)


def create_train_state(
    rng: jax.Array,
    model: nn.Module | nnx.Module,
    tx: optax.GradientTransformation,
    sample_input: jax.Array,
    *,
    loss: Callable[..., jax.Array] = Loss(),
    ema_decay: float | None = None,
) -> TrainState:
    """The initial state (params, optimizer state, the key for dropout and augmentation), built by
    one compiled program: a pure pytree (jit, vmap over seeds, meshes).

    `model` is a linen module, its params initialised from `rng` and `sample_input` (e.g.
    images[:1]), or an `nnx.Module` whose nnx.Param weights are copied: its `__call__(self,
    images, *, train=False, rngs: nnx.Rngs | None = None)` returns the logits, `rngs` holding the
    streams "dropout" and "augment" in training; other state (BatchNorm statistics, a stored
    nnx.Rngs) raises ValueError. `loss` is any hashable `(logits, labels, mask: bool[B] | None) ->
    scalar`, the mean over unmasked examples. With `ema_decay`, the average starts at the params.
    """
    options = {"tx": tx, "loss": loss, "ema_decay": ema_decay}
    nnx = sys.modules.get("flax.nnx")  # an NNX model means its user imported flax.nnx
    if nnx is None or not isinstance(model, nnx.Module):
        return jax.jit(functools.partial(_initial_state, model=model, **options))(rng, sample_input)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        paths = ", ".join(".".join(map(str, path)) for path, _ in nnx.to_flat_state(rest))
        raise ValueError(
            f"create_train_state keeps only the nnx.Param weights of an NNX model, but "
            f"{type(model).__name__} also holds {paths}: BatchNorm statistics are not supported; "
            "dropout takes its rngs at call time: nnx.Dropout(rate)(x, ..., rngs=rngs)"
        )
    init = functools.partial(_state_from_params, apply_fn=NnxApply(graphdef), **options)
    return jax.jit(init)(jax.random.split(rng)[1], nnx.to_pure_dict(params))


@dataclasses.dataclass(frozen=True)
class NnxApply:
    """An NNX model's apply_fn: `(variables, images, train=False, rngs=None) -> logits`. It holds
    only the hashable graphdef (no arrays): the state stays a pure pytree, jit never retraces."""

    graphdef: nnx.GraphDef

    def __call__(self, variables, images, train: bool = False, rngs=None) -> jax.Array:
        from flax import nnx

        model = nnx.merge(self.graphdef, variables["params"])
        return model(images, train=train, rngs=None if rngs is None else nnx.Rngs(**rngs))


def _initial_state(rng: jax.Array, sample_input: jax.Array, *, model: nn.Module, **options):
    params_rng, dropout_rng = jax.random.split(rng)
    params = model.init(params_rng, sample_input, train=False)["params"]
    return _state_from_params(dropout_rng, params, apply_fn=model.apply, **options)


def _state_from_params(rng: jax.Array, params: Any, *, ema_decay, **fields) -> TrainState:
    # Copies, so that train_step's donation can never reach the caller's arrays (NNX weights).
    params = jax.tree.map(jnp.copy, params)
    ema = jax.tree.map(jnp.copy, params) if ema_decay is not None else None
    state = TrainState.create(params=params, rng=rng, ema_params=ema, ema_decay=ema_decay, **fields)
    return state.replace(step=jnp.zeros((), jnp.int32))  # an array, so its type never changes


def eval_params(state: TrainState) -> Any:
    """The params to evaluate: the moving average with --ema, else the params themselves."""
    return state.params if state.ema_params is None else state.ema_params


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None):
    """Mean softmax cross-entropy over the real (unmasked) examples of a batch."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return _masked_mean(losses, mask)


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jnp.mean(values)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1)


@functools.partial(jax.jit, donate_argnums=0)
def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    """One SGD step on a minibatch: forward, loss, backprop (jax.value_and_grad), optax update.

    Returns the new state and the batch's `{"loss", "accuracy", "count", "grad_norm"}`, measured
    in training mode on the params before the update. With `state.ema_decay` d, the average
    becomes d * ema + (1 - d) * new params. The input state is donated: do not use it after.
    """
    mask = batch.get("mask")
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    rngs = {"dropout": dropout_rng, "augment": jax.random.fold_in(dropout_rng, 1)}

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, batch["image"], train=True, rngs=rngs)
        return state.loss(logits, batch["label"], mask), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    if state.ema_decay is not None:
        ema = optax.incremental_update(state.params, state.ema_params, 1.0 - state.ema_decay)
        state = state.replace(ema_params=ema)
    correct = jnp.argmax(logits, -1) == batch["label"]
    count = jnp.sum(mask) if mask is not None else jnp.asarray(correct.shape[0])
    return state, {
        "loss": loss,
        "accuracy": _masked_mean(correct, mask),
        "count": count.astype(jnp.int32),
        "grad_norm": optax.tree.norm(grads),
    }


@jax.jit
def eval_step(state: TrainState, batch: Batch) -> Metrics:
    """Per-example evaluation with `eval_params`, vmapped over the batch: loss (cross-entropy,
    whatever the training loss), correct and prediction, each [B]."""

    def one_example(image, label):
        logits = state.apply_fn({"params": eval_params(state)}, image[None], train=False)[0]
        return {
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, label),
            "correct": jnp.argmax(logits) == label,
            "prediction": jnp.argmax(logits).astype(jnp.int32),
        }

    return jax.vmap(one_example)(batch["image"], batch["label"])


@jax.jit
def predict(state: TrainState, images: jax.Array) -> jax.Array:
    """Class probabilities float32[B, num_classes] of images uint8[B, *image_shape] (or float in
    [0, 1]), in inference mode, with `eval_params`. The model normalises them."""
    logits = state.apply_fn({"params": eval_params(state)}, images, train=False)
    return jax.nn.softmax(logits, axis=-1)


def batch_indices(order: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array | None]:
    """`order` [N] as int32[steps, batch_size], and its bool mask (None when nothing was padded).
    Padding points at example `order[0]`, so the gather stays in bounds; its mask is False."""
    n = order.shape[0]
    steps = steps_per_epoch(n, batch_size)
    padding = steps * batch_size - n
    if padding == 0:
        return order.reshape(steps, batch_size), None
    indices = jnp.concatenate([order, jnp.full((padding,), order[0], order.dtype)])
    mask = jnp.arange(steps * batch_size) < n
    return indices.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def _split_over_devices(batch: Batch, sharding: jax.sharding.Sharding | None) -> Batch:
    # Data parallelism (a no-op without sharding): the train set is replicated, so each device
    # gathers only its own rows and the one collective left is XLA's all-reduce of the gradient.
    return batch if sharding is None else jax.lax.with_sharding_constraint(batch, sharding)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Every example is used once per epoch: the last, smaller batch is padded and masked."""
    return -(-num_examples // batch_size)


@functools.partial(
    jax.jit,
    static_argnames=("batch_size", "unroll", "batch_sharding", "diagnostics"),
    donate_argnums=0,
)
def train_epoch(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    batch_size: int,
    unroll: int | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
    diagnostics: bool = False,
) -> tuple[TrainState, Metrics]:
    """One pass over the training set in one compiled call: lax.scan over a fresh permutation.

    images uint8[N, H, W, C] and labels int32[N] stay on the device; `key` orders the epoch.
    Every example is seen once: the last batch holds the N mod batch_size left over (the rest is
    masked padding). Returns the example-weighted mean `train_loss` and `train_accuracy`,
    `examples`, and `per_step_loss` float32[steps]. `batch_sharding` (sharding.py) splits each
    batch over the devices. `unroll` (default 4 for batches up to 64, else 1) is for speed: the
    params stay bit-identical, the metrics may differ in their last bits. With `diagnostics`,
    `grad_norm` is the mean gradient norm; without, it is never computed (~15% of the epoch).
    """
    order = jax.random.permutation(key, images.shape[0])
    indices, masks = batch_indices(order, batch_size)

    def body(state, xs):
        batch = {"image": images[xs["index"]], "label": labels[xs["index"]], "mask": xs["mask"]}
        state, metrics = train_step(state, _split_over_devices(batch, batch_sharding))
        if not diagnostics:  # an output nobody reads: XLA drops the norm's computation
            del metrics["grad_norm"]
        return state, metrics

    if unroll is None:  # small batches are bound by per-step overhead (docs/performance.md)
        unroll = 4 if batch_size <= 64 else 1
    # no mask (None) when nothing was padded
    state, per_step = jax.lax.scan(body, state, {"index": indices, "mask": masks}, unroll=unroll)
    weights = per_step["count"] / jnp.sum(per_step["count"])
    metrics = {
        "train_loss": jnp.sum(per_step["loss"] * weights),
        # Right answers over examples: weights such as 128/4000 sum above 1 in float32, and the
        # weighted mean of all-right batches printed "err -0.00%".
        "train_accuracy": jnp.sum(per_step["accuracy"] * per_step["count"])
        / jnp.sum(per_step["count"]),
        "examples": jnp.sum(per_step["count"]),
        "per_step_loss": per_step["loss"],
    }
    if diagnostics:
        metrics["grad_norm"] = jnp.mean(per_step["grad_norm"])
    return state, metrics


@functools.partial(jax.jit, static_argnames=("batch_size", "batch_sharding"))
def evaluate(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    batch_size: int = 1000,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> dict[str, Any]:
    """Score a whole split in one compiled call, with `eval_params`; every example counts once.

    Returns the means over the split `loss` (the cross-entropy, whatever the training loss) and
    `accuracy`, `error_rate`, `count`, and `confusion` int32[C, C] (rows: true, columns: predicted).
    """
    n = images.shape[0]
    indices, masks = batch_indices(jnp.arange(n), min(batch_size, n))
    if masks is None:
        masks = jnp.ones(indices.shape, bool)
    num_classes = jax.eval_shape(
        lambda: state.apply_fn({"params": state.params}, images[:1], train=False)
    ).shape[-1]

    def body(totals, xs):
        batch = {"image": images[xs[0]], "label": labels[xs[0]], "mask": xs[1]}
        batch = _split_over_devices(batch, batch_sharding)
        mask = batch["mask"]
        out = eval_step(state, batch)
        truth = jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.int32) * mask[:, None]
        predicted = jax.nn.one_hot(out["prediction"], num_classes, dtype=jnp.int32)
        return {
            "loss": totals["loss"] + jnp.sum(out["loss"] * mask),
            "correct": totals["correct"] + jnp.sum(out["correct"] & mask),
            "confusion": totals["confusion"] + truth.T @ predicted,
        }, None

    zeros = {
        "loss": jnp.zeros((), jnp.float32),
        "correct": jnp.zeros((), jnp.int32),
        "confusion": jnp.zeros((num_classes, num_classes), jnp.int32),
    }
    totals, _ = jax.lax.scan(body, zeros, (indices, masks))
    accuracy = totals["correct"] / n
    return {
        "loss": totals["loss"] / n,
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        "count": jnp.sum(totals["confusion"]),
        "confusion": totals["confusion"],
    }
