"""Backprop by hand: a Dense layer and a ReLU whose backward passes are the lectures' formulas.

Both are `jax.custom_vjp` functions, so JAX calls our backward pass instead of deriving its own.
`ManualMLP` is the ReLU `MLP` of model.py built from them: same parameter names, same init.
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


def _dense_forward(x, kernel, bias):
    return dense(x, kernel, bias), (x, kernel, bias is None)


def _dense_backward(saved, e):
    x, kernel, no_bias = saved
    # The lectures write Y = W X with examples as columns: dX = W^T E, dW = E X^T. With examples
    # as rows (Y = X W) the same formulas read:
    dx = e @ kernel.T  # dL/dX = E W^T
    dkernel = x.T @ e  # dL/dW = X^T E
    dbias = None if no_bias else jnp.sum(e, axis=0)  # dL/db = sum of E over the batch
    return dx, dkernel, dbias


dense.defvjp(_dense_forward, _dense_backward)


@jax.custom_vjp
def relu(x: jax.Array) -> jax.Array:
    """max(X, 0), elementwise."""
    return jnp.maximum(x, 0)


def _relu_forward(x):
    return relu(x), x


def _relu_backward(x, e):
    return (jnp.where(x > 0, e, 0.0),)  # dL/dX = step(X) . E (ReLU layer)


relu.defvjp(_relu_forward, _relu_backward)


class ManualDense(nn.Module):
    """flax's nn.Dense (same params, same init), with the backward pass of `dense`."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        bias = None
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return dense(x, kernel, bias)


class ManualMLP(nn.Module):
    """images -> logits like `MLP` with ReLU and no dropout, backpropagated by `dense` and `relu`.

    Its params have MLP's names and init, so a state built from it is interchangeable with one
    built from `MLP(hidden_sizes, num_classes, use_bias=..., mean=..., std=...)`.
    """

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
                f"ManualMLP has hand-written backprop for ReLU without dropout only; got "
                f"activation {model.activation!r}, dropout {model.dropout_rate}"
            )
        return cls(
            hidden_sizes=tuple(model.hidden_sizes),
            num_classes=model.num_classes,
            use_bias=model.use_bias,
            mean=model.mean,
            std=model.std,
        )
