"""Backprop by hand: a Dense layer and a ReLU whose backward passes are the lectures' formulas.

Both are `jax.custom_vjp` functions, so JAX calls our backward pass instead of deriving its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlp_jax.model import MLP


@jax.custom_vjp
def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """Y = X W + b for x float[B, in], kernel float[in, out], bias float[out] or None."""
    y = x @ kernel
    return y if bias is None else y + bias


def _dense_backward(saved, e):
    x, kernel, no_bias = saved
    # The lectures write Y = W X with examples as columns: dX = W^T E, dW = E X^T. With examples
    # as rows (Y = X W) the same formulas read:
    dx = e @ kernel.T  # dL/dX = E W^T
    dkernel = x.T @ e  # dL/dW = X^T E
    dbias = None if no_bias else jnp.sum(e, axis=0)  # dL/db = sum of E over the batch
    return dx, dkernel, dbias


dense.defvjp(lambda x, w, b: (dense(x, w, b), (x, w, b is None)), _dense_backward)


@jax.custom_vjp
def relu(x: jax.Array) -> jax.Array:
    """max(X, 0), elementwise."""
    return jnp.maximum(x, 0)


# dL/dX = step(X) . E (ReLU layer)
relu.defvjp(lambda x: (relu(x), x), lambda x, e: (jnp.where(x > 0, e, 0.0),))


class ManualDense(nn.Module):
    """flax's nn.Dense (same params, same init), with the backward pass of `dense`."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers
        kernel = self.param("kernel", init.lecun_normal(), (x.shape[-1], self.features))
        bias = self.param("bias", init.zeros_init(), (self.features,)) if self.use_bias else None
        return dense(x, kernel, bias)


class ManualMLP(nn.Module):
    """The ReLU `MLP` of model.py without dropout, backpropagated by `dense` and `relu`: same
    parameter names and init, so its states are interchangeable with MLP's."""

    hidden_sizes: Sequence[int]
    num_classes: int
    use_bias: bool = True
    mean: float = 0.0
    std: float = 1.0

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        x = images.reshape((images.shape[0], -1))
        if jnp.issubdtype(x.dtype, jnp.integer):
            x = x.astype(jnp.float32) / 255.0
        x = (x - self.mean) / self.std
        for i, width in enumerate(self.hidden_sizes):
            x = relu(ManualDense(width, self.use_bias, name=f"hidden_{i}")(x))
        return ManualDense(self.num_classes, self.use_bias, name="output")(x)

    @classmethod
    def like(cls, model: MLP) -> ManualMLP:
        """The ManualMLP that computes what `model` computes; only ReLU without dropout."""
        if model.activation != "relu" or model.dropout_rate > 0:
            raise ValueError(
                f"ManualMLP backpropagates ReLU without dropout only; got {model.activation!r}, "
                f"dropout {model.dropout_rate}"
            )
        m = model
        return cls(tuple(m.hidden_sizes), m.num_classes, m.use_bias, m.mean, m.std)
