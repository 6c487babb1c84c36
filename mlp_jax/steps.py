"""Pure, compiled training and evaluation: one step, one whole epoch, one whole split.

Everything here is a pure function of pytrees: no printing, no clocks, no host-side randomness.
Batches are dicts `{"image": uint8[B, H, W, C], "label": int32[B]}`, optionally with
`"mask": bool[B]` (False marks padding, which then counts for nothing).
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

    `kind` "cross_entropy": softmax cross-entropy; "mse": 1/2 sum_k (sigmoid(z_k) - y_k)^2 against
    one-hot targets y (the TA deck's cost). `label_smoothing` A trains on
    (1 - A) * one_hot + A / classes. Frozen, so equal losses compare equal in jit's cache.

    A loss of your own needs no new kind: `create_train_state(..., loss=fn)` takes any hashable
    callable with this `__call__`'s contract, e.g. a frozen dataclass (see create_train_state).
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
            losses = sigmoid_mse(logits, targets)
        else:
            losses = optax.softmax_cross_entropy(logits, targets)
        return _masked_mean(losses, mask)


class TrainState(train_state.TrainState):
    """flax TrainState (params, tx, opt_state, step) plus the PRNG key for dropout/augmentation.

    Step t uses the key fold_in(rng, t), so a state alone determines the rest of training.
    `loss` is the training loss (a Loss, or your own: see create_train_state). With `ema_decay`,
    `ema_params` is the exponential moving average of the params after each step, and
    evaluation uses it (`eval_params`); else it is None.
    """

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
    """The initial state: params, optimizer state, and the key for dropout and augmentation.

    `model` is either a linen module, called as `model.apply(variables, images, train=bool,
    rngs=...)`, whose params are initialised from `rng` and `sample_input` (any batch, e.g.
    images[:1]); or an `nnx.Module` you wrote, whose own initialised weights are used:

    - `__call__(self, images, *, train: bool = False, rngs: nnx.Rngs | None = None)` returns the
      logits; `rngs` has the streams "dropout" and "augment" in training, None in inference;
    - dropout is `nnx.Dropout(rate)(x, deterministic=not train, rngs=rngs)`;
    - its nnx.Param weights become `params` (a copy, as a plain dict) and apply_fn (NnxApply)
      merges them back into the module; other state (BatchNorm statistics, an nnx.Rngs kept by
      a layer) raises ValueError. `sample_input` is unused, and every `rng` starts from the
      same weights.

    Either way `rng` seeds dropout and augmentation, and the state is a pure pytree (jit, vmap
    over seeds, meshes). `loss` is any hashable callable `(logits, labels, mask) -> scalar`,
    `mask` a bool[B] or None, that averages over the unmasked examples: a Loss, or your own
    (e.g. a frozen dataclass with `__call__`). train_step minimises and reports it; evaluate and
    eval_step still report the plain cross-entropy. With `ema_decay`, the average starts at the
    initial params. One compiled program: run eagerly, flax's init compiles each of its dozens
    of ops apart.
    """
    options = {"tx": tx, "loss": loss, "ema_decay": ema_decay}
    if _is_nnx(model):
        apply_fn, params = _split_nnx(model)
        init = functools.partial(_state_from_params, apply_fn=apply_fn, **options)
        return jax.jit(init)(jax.random.split(rng)[1], params)
    init = jax.jit(functools.partial(_initial_state, model=model, **options))
    return init(rng, sample_input)


@dataclasses.dataclass(frozen=True)
class NnxApply:
    """An NNX model's apply_fn: `(variables, images, train=False, rngs=None) -> logits`.

    Holds only the module's graphdef (its structure and static attributes, hashable, no
    arrays), so the state stays a pure pytree and jit does not retrace from step to step.
    """

    graphdef: nnx.GraphDef

    def __call__(self, variables, images, train: bool = False, rngs=None) -> jax.Array:
        from flax import nnx

        model = nnx.merge(self.graphdef, variables["params"])
        return model(images, train=train, rngs=None if rngs is None else nnx.Rngs(**rngs))


def _is_nnx(model: Any) -> bool:
    nnx = sys.modules.get("flax.nnx")  # an NNX model means its user imported flax.nnx
    return nnx is not None and isinstance(model, nnx.Module)


def _split_nnx(model: nnx.Module) -> tuple[NnxApply, dict[str, Any]]:
    """The apply function and weights of an NNX model; ValueError if it holds other state."""
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        paths = ", ".join(".".join(map(str, path)) for path, _ in nnx.to_flat_state(rest))
        raise ValueError(
            f"create_train_state keeps only the nnx.Param weights of an NNX model, but "
            f"{type(model).__name__} also holds {paths}: state such as BatchNorm statistics is "
            "not supported, and dropout takes its rngs at call time, "
            "nnx.Dropout(rate)(x, deterministic=not train, rngs=rngs), not in its constructor"
        )
    return NnxApply(graphdef), nnx.to_pure_dict(params)


def _initial_state(
    rng: jax.Array,
    sample_input: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss: Callable[..., jax.Array],
    ema_decay: float | None,
) -> TrainState:
    params_rng, dropout_rng = jax.random.split(rng)
    params = model.init(params_rng, sample_input, train=False)["params"]
    return _state_from_params(dropout_rng, params, model.apply, tx, loss, ema_decay)


def _state_from_params(
    dropout_rng: jax.Array,
    params: Any,
    apply_fn: Callable[..., jax.Array],
    tx: optax.GradientTransformation,
    loss: Callable[..., jax.Array],
    ema_decay: float | None,
) -> TrainState:
    # Copies, so that train_step's donation can never reach the caller's arrays (NNX weights).
    params = jax.tree.map(jnp.copy, params)
    ema_params = jax.tree.map(jnp.copy, params) if ema_decay is not None else None
    state = TrainState.create(
        apply_fn=apply_fn,
        params=params,
        tx=tx,
        rng=dropout_rng,
        ema_params=ema_params,
        loss=loss,
        ema_decay=ema_decay,
    )
    return state.replace(step=jnp.zeros((), jnp.int32))  # an array, so its type never changes


def eval_params(state: TrainState) -> Any:
    """The params to evaluate: the moving average with --ema, else the params themselves."""
    return state.params if state.ema_params is None else state.ema_params


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None):
    """Mean softmax cross-entropy over the real (unmasked) examples of a batch."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return _masked_mean(losses, mask)


def sigmoid_mse(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per example 1/2 sum_k (sigmoid(z_k) - y_k)^2: the TA deck's cost C = 1/2 sum (y^ - y)^2.

    Its gradient dC/dz_k = (y^_k - y_k) y^_k (1 - y^_k) vanishes when a sigmoid saturates, even
    on a wrong answer: why cross-entropy (dC/dz = softmax(z) - y) trains faster.
    """
    return 0.5 * jnp.sum(jnp.square(jax.nn.sigmoid(logits) - targets), axis=-1)


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jnp.mean(values)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1)


@functools.partial(jax.jit, donate_argnums=0)
def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    """One SGD step on a minibatch: forward, loss, backprop (jax.value_and_grad), optax update.

    Returns the new state and `{"loss", "accuracy", "count", "grad_norm"}` for this batch, measured
    in training mode (with dropout and augmentation) on the params before the update: the
    lectures' running loss, as `state.loss` defines it. With `state.ema_decay` d, the average
    becomes d * ema + (1 - d) * new params. The input state's buffers are donated: do not use it
    after the call.
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
    metrics = {
        "loss": loss,
        "accuracy": _masked_mean(correct, mask),
        "count": count.astype(jnp.int32),
        "grad_norm": optax.tree.norm(grads),
    }
    return state, metrics


@jax.jit
def eval_step(state: TrainState, batch: Batch) -> Metrics:
    """Per-example evaluation, vmapped over the batch: loss, correct and prediction, each [B].

    The loss is the cross-entropy whatever the training loss; with --ema the params are the
    average (`eval_params`).
    """

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
    [0, 1]), in inference mode (no dropout), with `eval_params` (the average with --ema). The
    model normalises them itself; no labels needed.
    """
    logits = state.apply_fn({"params": eval_params(state)}, images, train=False)
    return jax.nn.softmax(logits, axis=-1)


def _batch_indices(order: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array | None]:
    """Split index vector [N] into int32[steps, batch_size], padding the last batch.

    Returns the indices and a bool mask of the same shape (None when nothing was padded). Padding
    points at example `order[0]` so that the gather stays in bounds; its mask is False.
    """
    n = order.shape[0]
    steps = -(-n // batch_size)
    padding = steps * batch_size - n
    if padding == 0:
        return order.reshape(steps, batch_size), None
    indices = jnp.concatenate([order, jnp.full((padding,), order[0], order.dtype)])
    mask = jnp.arange(steps * batch_size) < n
    return indices.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def _split_over_devices(batch: Batch, sharding: jax.sharding.Sharding | None) -> Batch:
    """Data parallelism: each device computes on its slice of the batch (no-op without a sharding).

    The gather that built the batch reads a replicated train set, so each device gathers only its
    own rows and the one collective left is XLA's all-reduce of the gradient.
    """
    return batch if sharding is None else jax.lax.with_sharding_constraint(batch, sharding)


def default_unroll(batch_size: int) -> int:
    """How many scan steps train_epoch fuses per loop iteration when the caller does not say.

    Small batches are bound by per-step overhead (loop bookkeeping, copies of the carried params):
    on a 2-core CPU, unroll 4 ran batch 12 about 1.2x faster, while at batch 128 and 1024 it made
    no measurable difference (experiments/benchmark.py, README "Performance").
    """
    return 4 if batch_size <= 64 else 1


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

    images uint8[N, H, W, C] and labels int32[N] stay on the device; `key` orders the epoch
    (the loop passes fold_in(data_key, epoch)). If N is not a multiple of `batch_size`, the last
    batch holds the remaining N mod batch_size examples (the rest is masked padding), so every
    example is seen exactly once per epoch. Returns the example-weighted mean loss and accuracy,
    and `per_step_loss` float32[steps], each step's minibatch loss in order (for step-level logs).
    With `batch_sharding` (sharding.py), each gathered batch is split over the devices.
    `unroll` (default: `default_unroll(batch_size)`) is for speed: it leaves the params
    bit-identical (tested); the epoch's metrics may differ in their last bits.
    With `diagnostics`, the metrics add `grad_norm`, the mean over the steps of train_step's
    gradient norm; without, that norm is never computed (it costs ~15% of the epoch at batch 12)
    and the params are bit-identical (tested).
    """
    order = jax.random.permutation(key, images.shape[0])
    indices, masks = _batch_indices(order, batch_size)

    def body(state, xs):
        batch = {"image": images[xs["index"]], "label": labels[xs["index"]]}
        if "mask" in xs:
            batch["mask"] = xs["mask"]
        state, metrics = train_step(state, _split_over_devices(batch, batch_sharding))
        if not diagnostics:  # an output nobody reads: XLA drops the norm's computation
            del metrics["grad_norm"]
        return state, metrics

    xs = {"index": indices} if masks is None else {"index": indices, "mask": masks}
    unroll = default_unroll(batch_size) if unroll is None else unroll
    state, per_step = jax.lax.scan(body, state, xs, unroll=unroll)
    weights = per_step["count"] / jnp.sum(per_step["count"])
    metrics = {
        "train_loss": jnp.sum(per_step["loss"] * weights),
        "train_accuracy": jnp.sum(per_step["accuracy"] * weights),
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
    """Score a whole split in one compiled call; every example counts exactly once.

    Returns `loss` (the cross-entropy, whatever the training loss) and `accuracy` (means over the
    split, of `eval_params(state)`), `error_rate`, `count`, and
    `confusion` int32[C, C] with rows = true class and columns = predicted class.
    """
    n = images.shape[0]
    indices, masks = _batch_indices(jnp.arange(n), min(batch_size, n))
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
