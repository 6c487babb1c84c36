"""mlp_jax.manual: the hand-written backward passes agree with jax.grad, and so does training."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlp_jax import MLP, create_train_state, cross_entropy_loss, train_epoch
from mlp_jax.manual import ManualMLP, dense, relu


def _random(shape, seed):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_backward_matches_autodiff_of_x_times_w_plus_b(use_bias):
    x, kernel, bias = _random((5, 7), 0), _random((7, 3), 1), _random((3,), 2) if use_bias else None
    weights = _random((5, 3), 3)  # an arbitrary output gradient E

    def loss(f):
        return lambda x, kernel, bias: jnp.sum(weights * f(x, kernel, bias))

    def reference(x, kernel, bias):
        return x @ kernel + (0.0 if bias is None else bias)

    argnums = (0, 1, 2) if use_bias else (0, 1)
    manual = jax.grad(loss(dense), argnums)(x, kernel, bias)
    chex.assert_trees_all_close(manual, jax.grad(loss(reference), argnums)(x, kernel, bias))
    # The lecture's formulas, written out: dX = E W^T, dW = X^T E, db = sum of E.
    chex.assert_trees_all_close(manual[:2], (weights @ kernel.T, x.T @ weights), rtol=1e-6)


def test_relu_backward_is_step_times_error():
    x = jnp.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    e = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
    _, backward = jax.vjp(relu, x)
    np.testing.assert_array_equal(backward(e)[0], jnp.array([0.0, 0.0, 0.0, 4.0, 5.0]))
    np.testing.assert_array_equal(relu(x), jax.nn.relu(x))


def _models(use_bias=True):
    model = MLP(hidden_sizes=(32, 16), num_classes=10, use_bias=use_bias, mean=0.1, std=0.3)
    return model, ManualMLP.like(model)


def _data(n=256):
    images = jax.random.randint(jax.random.PRNGKey(5), (n, 28, 28, 1), 0, 256).astype(jnp.uint8)
    labels = jax.random.randint(jax.random.PRNGKey(6), (n,), 0, 10).astype(jnp.int32)
    return images, labels


@pytest.mark.parametrize("use_bias", [True, False])
def test_manual_mlp_has_mlps_params_and_gradients(use_bias):
    model, manual = _models(use_bias)
    images, labels = _data(64)
    params = model.init(jax.random.PRNGKey(0), images[:1])["params"]
    chex.assert_trees_all_equal(params, manual.init(jax.random.PRNGKey(0), images[:1])["params"])

    def loss(module):
        return lambda p: cross_entropy_loss(module.apply({"params": p}, images), labels)

    chex.assert_trees_all_close(
        jax.grad(loss(manual))(params), jax.grad(loss(model))(params), rtol=1e-5, atol=1e-6
    )


def test_training_with_manual_backprop_gives_the_params_of_jax_grad():
    model, manual = _models()
    images, labels = _data()
    tx = optax.sgd(0.05, momentum=0.9)
    states = [create_train_state(jax.random.PRNGKey(0), m, tx, images[:1]) for m in (model, manual)]
    for epoch in range(3):  # 3 epochs of 16 momentum-SGD steps, in the package's compiled epoch
        key = jax.random.PRNGKey(100 + epoch)
        states = [train_epoch(s, images, labels, key, batch_size=16)[0] for s in states]
    automatic, by_hand = states
    assert not np.allclose(
        automatic.params["output"]["kernel"],
        model.init(jax.random.PRNGKey(0), images[:1])["params"]["output"]["kernel"],
    )
    chex.assert_trees_all_close(by_hand.params, automatic.params, rtol=1e-4, atol=1e-5)


def test_manual_mlp_refuses_what_it_has_no_backward_pass_for():
    with pytest.raises(ValueError, match="ReLU without dropout"):
        ManualMLP.like(MLP(hidden_sizes=(8,), num_classes=10, activation="tanh"))
