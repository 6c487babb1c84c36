"""The MLP: layer sizes, parameter counts, input handling, dropout."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlp_jax import MLP, Config, count_params, mlp_from_config
from mlp_jax.model import summary


def _params(model, image_shape=(28, 28, 1)):
    return model.init(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape), jnp.uint8))["params"]


def _expected_count(sizes, bias=True):
    return sum(m * n + (n if bias else 0) for m, n in zip(sizes[:-1], sizes[1:], strict=True))


@pytest.mark.parametrize(
    "layers, hidden_sizes",
    [(1, ()), (2, (512,)), (3, (512, 256)), (4, (512, 256, 128)), (5, (512, 256, 128, 64))],
)
def test_default_widths_halve_from_512(layers, hidden_sizes):
    config = Config(layers=layers)
    assert config.hidden_sizes == hidden_sizes
    params = _params(mlp_from_config(config, num_classes=10))
    assert count_params(params) == _expected_count([784, *hidden_sizes, 10])
    kernels = [params[name]["kernel"].shape for name in params]
    assert len(kernels) == layers


def test_five_layer_net_has_575050_parameters():
    params = _params(mlp_from_config(Config(layers=5), num_classes=10))
    assert count_params(params) == 575_050  # 784-512-256-128-64-10, the lectures' 5-layer net


def test_custom_hidden_widths_without_bias():
    config = Config(layers=3, hidden=(1000, 1500), bias=False)
    params = _params(mlp_from_config(config, num_classes=10))
    assert count_params(params) == 784 * 1000 + 1000 * 1500 + 1500 * 10
    chex.assert_shape(params["hidden_1"]["kernel"], (1000, 1500))
    assert "bias" not in params["output"]


def test_flattens_any_image_shape_and_takes_num_classes():
    model = MLP(hidden_sizes=(32,), num_classes=7)
    params = _params(model, image_shape=(32, 32, 3))
    chex.assert_shape(params["hidden_0"]["kernel"], (32 * 32 * 3, 32))
    logits = model.apply({"params": params}, jnp.zeros((5, 32, 32, 3), jnp.uint8))
    chex.assert_shape(logits, (5, 7))
    chex.assert_type(logits, jnp.float32)


def test_uint8_images_are_scaled_then_standardised():
    model = MLP(hidden_sizes=(16,), num_classes=10, mean=0.2, std=0.5)
    params = _params(model)
    images_u8 = jax.random.randint(jax.random.PRNGKey(1), (4, 28, 28, 1), 0, 256).astype(jnp.uint8)
    from_u8 = model.apply({"params": params}, images_u8)
    from_float = model.apply({"params": params}, images_u8.astype(jnp.float32) / 255.0)
    chex.assert_trees_all_close(from_u8, from_float, atol=1e-5)
    manual = model.clone(mean=0.0, std=1.0).apply(
        {"params": params}, (images_u8.astype(jnp.float32) / 255.0 - 0.2) / 0.5
    )
    chex.assert_trees_all_close(from_u8, manual, atol=1e-5)


def test_dropout_is_random_in_training_and_off_in_evaluation():
    model = MLP(hidden_sizes=(64,), num_classes=10, dropout_rate=0.5)
    params = _params(model)
    images = jnp.full((2, 28, 28, 1), 128, jnp.uint8)
    train_a, train_b = (
        model.apply({"params": params}, images, train=True, rngs={"dropout": jax.random.PRNGKey(k)})
        for k in (1, 2)
    )
    assert not np.allclose(train_a, train_b)
    chex.assert_trees_all_equal(
        model.apply({"params": params}, images), model.apply({"params": params}, images)
    )


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
def test_every_activation_gives_finite_logits(activation):
    model = MLP(hidden_sizes=(8, 8), num_classes=3, activation=activation)
    logits = model.apply({"params": _params(model)}, jnp.ones((2, 28, 28, 1), jnp.uint8))
    chex.assert_tree_all_finite(logits)


def test_summary_lists_each_layer_with_its_shapes_and_parameter_count():
    model = MLP(hidden_sizes=(32, 16), num_classes=10)
    text = summary(model, (28, 28, 1))
    for line in ("hidden_0", "hidden_1", "output"):
        assert line in text
    assert "uint8[1,28,28,1]" in text and "float32[784,32]" in text and "float32[16,10]" in text
    assert "Total Parameters: 25,818" in text  # (784 + 1) * 32 + (32 + 1) * 16 + (16 + 1) * 10
    assert "\x1b[" not in text  # plain text, no terminal colours


def test_scale_normalisation_ignores_the_statistics_and_standardize_uses_them():
    scaled = mlp_from_config(Config(normalize="scale"), num_classes=10, mean=0.3, std=0.2)
    assert (scaled.mean, scaled.std) == (0.0, 1.0)
    standardised = mlp_from_config(Config(normalize="standardize"), 10, mean=0.3, std=0.2)
    assert (standardised.mean, standardised.std) == pytest.approx((0.3, 0.2))


def test_config_fields_reach_the_model():
    config = Config(layers=3, hidden=(7, 5), activation="tanh", dropout=0.25, bias=False)
    model = mlp_from_config(config, num_classes=4)
    assert (tuple(model.hidden_sizes), model.num_classes) == ((7, 5), 4)
    assert (model.activation, model.dropout_rate, model.use_bias) == ("tanh", 0.25, False)


def test_bfloat16_computes_the_dense_layers_in_bf16_and_keeps_params_and_logits_float32():
    model = MLP(hidden_sizes=(8,), num_classes=3, dtype="bfloat16")
    images = jnp.zeros((2, 4, 4, 1), jnp.uint8)
    params = model.init(jax.random.PRNGKey(0), images)["params"]
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    logits = model.apply({"params": params}, images)
    assert logits.dtype == jnp.float32
    jaxpr = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, images))(params))
    dots = [line for line in jaxpr.splitlines() if "dot_general" in line]
    assert len(dots) == 2 and all("bf16" in line for line in dots), dots


def test_a_bfloat16_run_tracks_the_float32_run_on_the_subset():
    from mlp_jax import train_and_evaluate
    from mlp_jax.data import load_mnist_subset

    dataset = load_mnist_subset()
    config = Config(dataset="mnist_subset", epochs=4)
    runs = {
        dtype: train_and_evaluate(config.replace(dtype=dtype), dataset, log=lambda line: None)
        for dtype in ("float32", "bfloat16")
    }
    for f32, bf16 in zip(runs["float32"].history, runs["bfloat16"].history, strict=True):
        # Stated tolerance: each epoch's mean train loss within 10% + 0.02 of float32's.
        assert abs(bf16["train_loss"] - f32["train_loss"]) <= 0.1 * f32["train_loss"] + 0.02
    assert bf16["train_loss"] != f32["train_loss"]  # really another precision
    assert abs(bf16["test_accuracy"] - f32["test_accuracy"]) <= 0.015
