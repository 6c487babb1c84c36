"""The regularisers, the loss choice and --normalize none do what their flags claim."""

import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlp_jax import Config, ConfigError, evaluate
from mlp_jax.model import MLP, mlp_from_config
from mlp_jax.optim import make_optimizer, max_norm
from mlp_jax.steps import Loss, create_train_state, train_step


def _batch(n=64, seed=0, size=4):
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)),
        "label": jnp.asarray(rng.integers(0, 10, n), jnp.int32),
    }


def _copy(state):
    return jax.tree.map(jnp.copy, state)  # train_step donates its input


def _column_norms(kernel):
    return np.linalg.norm(np.asarray(kernel), axis=0)


def test_max_norm_holds_after_every_step():
    limit = 0.3
    config = Config(layers=3, hidden=(16, 16), lr=0.5, schedule="constant", max_norm=limit)
    model = MLP(hidden_sizes=(16, 16), num_classes=10)
    tx = make_optimizer(config, steps_per_epoch=10)
    state = create_train_state(jax.random.PRNGKey(0), model, tx, _batch()["image"][:1])
    at_the_bound = 0
    for step in range(5):
        state, _ = train_step(state, _batch(seed=step))
        for name, layer in state.params.items():
            norms = _column_norms(layer["kernel"])
            assert norms.max() <= limit * (1 + 1e-5), (step, name, norms.max())
            at_the_bound += int(np.sum(norms > limit * (1 - 1e-5)))
    assert at_the_bound > 0  # the constraint was active, not trivially satisfied


def test_max_norm_scales_long_columns_onto_the_sphere_and_leaves_short_ones_and_biases():
    params = {"kernel": jnp.array([[3.0, 0.1], [4.0, 0.2]]), "bias": jnp.array([10.0, -10.0])}
    updates = jax.tree.map(jnp.zeros_like, params)
    constrained, _ = max_norm(1.0).update(updates, max_norm(1.0).init(params), params)
    new = optax.apply_updates(params, constrained)
    np.testing.assert_allclose(new["kernel"], [[0.6, 0.1], [0.8, 0.2]], rtol=1e-6)
    np.testing.assert_array_equal(new["bias"], params["bias"])


def test_ema_params_equal_the_hand_computed_average():
    decay = 0.8
    model = MLP(hidden_sizes=(8,), num_classes=10)
    state = create_train_state(
        jax.random.PRNGKey(0), model, optax.sgd(0.5), _batch()["image"][:1], ema_decay=decay
    )
    average = jax.device_get(state.params)
    for step in range(4):
        state, _ = train_step(state, _batch(seed=step))
        params = jax.device_get(state.params)
        average = jax.tree.map(lambda a, p: decay * a + (1 - decay) * p, average, params)
        chex.assert_trees_all_close(state.ema_params, average, rtol=1e-6, atol=1e-7)
    assert not np.allclose(state.ema_params["output"]["kernel"], state.params["output"]["kernel"])
    # Evaluation scores the average, not the raw params.
    batch = _batch(n=50, seed=9)
    scored = evaluate(state, batch["image"], batch["label"])
    as_params = state.replace(params=state.ema_params, ema_params=None)
    chex.assert_trees_all_equal(scored, evaluate(as_params, batch["image"], batch["label"]))


def test_mse_loss_and_its_gradient_match_the_hand_derivation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 10)).astype(np.float32) * 3
    labels = rng.integers(0, 10, 6)
    y = np.eye(10, dtype=np.float32)[labels]
    s = 1 / (1 + np.exp(-logits))
    # C = 1/2 sum_k (s_k - y_k)^2, averaged over the batch; dC/dz_k = (s_k - y_k) s_k (1 - s_k) / B.
    expected_loss = np.mean(0.5 * np.sum((s - y) ** 2, axis=1))
    expected_grad = (s - y) * s * (1 - s) / len(labels)
    loss, grad = jax.value_and_grad(Loss("mse"))(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_label_smoothing_trains_on_the_smoothed_targets():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 5)
    alpha = 0.1
    targets = (1 - alpha) * np.eye(10)[labels] + alpha / 10
    log_softmax = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    expected = np.mean(-np.sum(targets * log_softmax, axis=1))
    got = Loss("cross_entropy", label_smoothing=alpha)(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    mask = jnp.array([True, True, False, True, False])
    masked = Loss("mse", label_smoothing=alpha)(jnp.asarray(logits), jnp.asarray(labels), mask)
    s = 1 / (1 + np.exp(-logits))
    per_example = 0.5 * np.sum((s - targets) ** 2, axis=1)
    np.testing.assert_allclose(masked, per_example[[0, 1, 3]].mean(), rtol=1e-6)


def _identity_net(**attributes):
    """A 16 -> 16 linear net (4x4 images): its logits are its normalised (dropped-out) inputs."""
    model = MLP(hidden_sizes=(), num_classes=16, use_bias=False, **attributes)
    return model, {"params": {"output": {"kernel": jnp.eye(16)}}}


def test_input_dropout_drops_pixels_to_black_in_training_only():
    model, variables = _identity_net(input_dropout_rate=0.5, mean=0.5, std=0.5)
    images = jnp.full((200, 4, 4, 1), 255, jnp.uint8)  # white: 1.0 before normalising
    out = np.asarray(
        model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(0)})
    )
    # Kept: (1 / (1 - 0.5) - 0.5) / 0.5 = 3; dropped to black: (0 - 0.5) / 0.5 = -1.
    assert set(np.unique(out)) == {-1.0, 3.0}
    assert 0.4 < np.mean(out == -1.0) < 0.6
    np.testing.assert_array_equal(model.apply(variables, images, train=False), 1.0)


def test_normalize_none_feeds_the_raw_pixel_values():
    model = mlp_from_config(Config(normalize="none", layers=1, bias=False), num_classes=16)
    _, variables = _identity_net()
    images = jnp.arange(0, 256, 16, dtype=jnp.uint8).reshape(1, 4, 4, 1)
    logits = model.apply(variables, images)
    np.testing.assert_allclose(logits[0], np.arange(0, 256, 16), rtol=1e-6)
    scaled = mlp_from_config(Config(normalize="scale", layers=1, bias=False), num_classes=16)
    np.testing.assert_allclose(scaled.apply(variables, images)[0], np.arange(0, 256, 16) / 255)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"input_dropout": 1.0}, "^input_dropout: must be in"),
        ({"max_norm": 0.0}, "^max_norm: must be > 0"),
        ({"label_smoothing": 1.0}, "^label_smoothing: must be in"),
        ({"ema": 1.0}, "^ema: must be in"),
        ({"loss": "l1"}, "^loss: unknown 'l1'; allowed: cross_entropy, mse"),
    ],
)
def test_bad_regulariser_values_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        Config(**changes)


def test_cli_refuses_a_bad_augmentation_in_one_line(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "mlp_jax.train", "--augment", "shift:2,rotate", "--workdir", "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        "mlp_jax.train: error: --augment: unknown 'rotate' in 'shift:2,rotate'; allowed: "
        "shift:K (K = 1..8), flip, erase:K (K = 1..16), elastic:ALPHA:SIGMA"
    ]
    assert not (tmp_path / "run").exists()


def test_preset_sets_its_fields_and_flags_given_win(tmp_path):
    from mlp_jax.config import PRESETS
    from mlp_jax.train import config_from_args

    config = config_from_args(["--preset", "best", "--epochs", "3"])
    for name, value in PRESETS["best"].items():
        assert getattr(config, name) == (3 if name == "epochs" else value)
    assert config_from_args([]) == Config()
    # --layers alone overrides the preset's depth, so its widths (for its own depth) go too.
    deeper = config_from_args(["--preset", "best", "--layers", "2"])
    assert (deeper.layers, deeper.hidden, deeper.dropout) == (2, None, PRESETS["best"]["dropout"])
    both = config_from_args(["--preset", "best", "--layers", "2", "--hidden", "64"])
    assert (both.layers, both.hidden) == (2, (64,))


def test_predict_and_export_use_the_average_that_evaluation_scores():
    from mlp_jax.artifact import logits_fn
    from mlp_jax.steps import predict

    model = MLP(hidden_sizes=(8,), num_classes=10)
    state = create_train_state(
        jax.random.PRNGKey(0), model, optax.sgd(0.5), _batch()["image"][:1], ema_decay=0.5
    )
    state, _ = train_step(state, _batch())
    images = _batch(seed=3)["image"]
    averaged = model.apply({"params": state.ema_params}, images)
    raw = model.apply({"params": state.params}, images)
    assert not np.allclose(averaged, raw)
    np.testing.assert_allclose(predict(state, images), jax.nn.softmax(averaged), rtol=1e-6)
    np.testing.assert_allclose(logits_fn(state)(images), averaged, rtol=1e-6)


def test_predict_and_export_score_the_mirror_average_with_tta_flip():
    from mlp_jax.artifact import logits_fn
    from mlp_jax.steps import predict

    plain = MLP(hidden_sizes=(8,), num_classes=10)
    state = create_train_state(
        jax.random.PRNGKey(0), plain.clone(test_flip=True), optax.sgd(0.5), _batch()["image"][:1]
    )
    images = _batch(seed=3)["image"]
    variables = {"params": state.params}
    averaged = (plain.apply(variables, images) + plain.apply(variables, images[:, :, ::-1])) / 2
    assert not np.allclose(averaged, plain.apply(variables, images))
    np.testing.assert_allclose(predict(state, images), jax.nn.softmax(averaged), rtol=1e-5)
    np.testing.assert_allclose(logits_fn(state)(images), averaged, rtol=1e-5, atol=1e-6)
    labels = _batch(seed=3)["label"]
    expected = optax.softmax_cross_entropy_with_integer_labels(averaged, labels).mean()
    np.testing.assert_allclose(evaluate(state, images, labels)["loss"], expected, rtol=1e-5)
