"""train_step, eval_step, train_epoch and evaluate: gradients, purity, epochs, exact evaluation."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from mlp_jax import (
    MLP,
    create_train_state,
    cross_entropy_loss,
    eval_step,
    evaluate,
    train_epoch,
    train_step,
)
from mlp_jax.steps import _batch_indices


def _images(n, seed=0, shape=(28, 28, 1)):
    return jax.random.randint(jax.random.PRNGKey(seed), (n, *shape), 0, 256).astype(jnp.uint8)


def _labels(n, seed=1, num_classes=10):
    return jax.random.randint(jax.random.PRNGKey(seed), (n,), 0, num_classes).astype(jnp.int32)


def _state(model=None, tx=None, seed=0):
    model = model or MLP(hidden_sizes=(32, 16), num_classes=10)
    return create_train_state(
        jax.random.PRNGKey(seed), model, tx or optax.sgd(0.1), jnp.zeros((1, 28, 28, 1), jnp.uint8)
    )


class TrainStepTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_same_result_with_and_without_jit(self):
        batch = {"image": _images(8), "label": _labels(8)}
        model = MLP(hidden_sizes=(32,), num_classes=10, dropout_rate=0.2)
        step = self.variant(train_step.__wrapped__)  # the undecorated, pure function
        new_state, metrics = step(_state(model), batch)
        reference_state, reference_metrics = train_step(_state(model), batch)
        chex.assert_trees_all_close(new_state.params, reference_state.params, atol=1e-6)
        chex.assert_trees_all_close(metrics, reference_metrics, atol=1e-6)
        assert int(new_state.step) == 1


def test_train_step_metrics_and_step_counter():
    state = _state()
    batch = {"image": _images(16), "label": _labels(16)}
    state, metrics = train_step(state, batch)
    assert set(metrics) >= {"loss", "accuracy"}
    chex.assert_rank([metrics["loss"], metrics["accuracy"]], 0)
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    assert int(state.step) == 1


def test_masked_examples_do_not_change_the_update():
    images, labels = _images(8), _labels(8)
    full, _ = train_step(_state(), {"image": images[:5], "label": labels[:5]})
    mask = jnp.arange(8) < 5
    padded, metrics = train_step(_state(), {"image": images, "label": labels, "mask": mask})
    chex.assert_trees_all_close(full.params, padded.params, atol=1e-6)
    assert int(metrics["count"]) == 5


def test_train_step_works_under_vmap_over_states_and_lax_scan():
    states = jax.vmap(lambda seed: _state(seed=seed))(jnp.arange(3))
    batch = {"image": _images(8), "label": _labels(8)}
    vmapped, metrics = jax.vmap(train_step, in_axes=(0, None))(states, batch)
    chex.assert_shape(metrics["loss"], (3,))
    single, _ = train_step(_state(seed=1), batch)
    chex.assert_trees_all_close(
        jax.tree.map(lambda leaf: leaf[1], vmapped.params), single.params, atol=1e-6
    )

    batches = {"image": _images(24).reshape(3, 8, 28, 28, 1), "label": _labels(24).reshape(3, 8)}
    scanned, per_step = jax.lax.scan(train_step, _state(), batches)
    looped = _state()
    for i in range(3):
        looped, _ = train_step(looped, jax.tree.map(lambda x, i=i: x[i], batches))
    chex.assert_trees_all_close(scanned.params, looped.params, atol=1e-6)
    chex.assert_shape(per_step["loss"], (3,))


# ----------------------------------------------------------------------------- backprop by hand


def _float_batch(n, features, seed=0):
    images = jax.random.uniform(jax.random.PRNGKey(seed), (n, features))
    return images, _labels(n, seed + 1)


def test_one_layer_softmax_gradient_is_lecture_formula():
    # Lecture 3: E = P_target - P, update W += lr E X^T; in batch form dL/dW = -X^T E / B.
    model = MLP(hidden_sizes=(), num_classes=10)
    images, labels = _float_batch(32, 20)
    params = model.init(jax.random.PRNGKey(0), images)["params"]
    grads = jax.grad(lambda p: cross_entropy_loss(model.apply({"params": p}, images), labels))(
        params
    )
    probabilities = jax.nn.softmax(images @ params["output"]["kernel"] + params["output"]["bias"])
    errors = jax.nn.one_hot(labels, 10) - probabilities  # E = Y - P
    chex.assert_trees_all_close(grads["output"]["kernel"], -images.T @ errors / 32, atol=1e-6)
    chex.assert_trees_all_close(grads["output"]["bias"], -errors.sum(0) / 32, atol=1e-6)


def test_two_layer_tanh_gradient_is_assignment_formula():
    # The assignment's hand-derived backprop: dh = E2 W2^T * (1 - a^2), dW1 = X^T dh.
    model = MLP(hidden_sizes=(12,), num_classes=10, activation="tanh")
    images, labels = _float_batch(16, 20, seed=3)
    params = model.init(jax.random.PRNGKey(4), images)["params"]
    grads = jax.grad(lambda p: cross_entropy_loss(model.apply({"params": p}, images), labels))(
        params
    )
    w1, b1 = params["hidden_0"]["kernel"], params["hidden_0"]["bias"]
    w2, b2 = params["output"]["kernel"], params["output"]["bias"]
    hidden = jnp.tanh(images @ w1 + b1)
    output_error = (jax.nn.softmax(hidden @ w2 + b2) - jax.nn.one_hot(labels, 10)) / 16
    hidden_error = (output_error @ w2.T) * (1 - hidden**2)
    expected = {
        "hidden_0": {"kernel": images.T @ hidden_error, "bias": hidden_error.sum(0)},
        "output": {"kernel": hidden.T @ output_error, "bias": output_error.sum(0)},
    }
    chex.assert_trees_all_close(grads, expected, atol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_mlp_gradients_pass_numerical_check(activation):
    with jax.enable_x64(True):
        model = MLP(hidden_sizes=(8, 6), num_classes=4, activation=activation)
        images = jax.random.uniform(jax.random.PRNGKey(0), (5, 10), jnp.float64)
        labels = jnp.array([0, 1, 2, 3, 1])
        params = model.init(jax.random.PRNGKey(1), images)["params"]
        params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), params)

        def loss(p):
            return cross_entropy_loss(model.apply({"params": p}, images), labels)

        check_grads(loss, (params,), order=1, modes=("rev",))


def test_training_overfits_a_tiny_batch():
    batch = {"image": _images(32), "label": _labels(32)}
    state = _state(MLP(hidden_sizes=(64,), num_classes=10), tx=optax.adam(1e-2))
    for _ in range(100):
        state, metrics = train_step(state, batch)
    final = evaluate(state, batch["image"], batch["label"], batch_size=32)
    assert float(final["accuracy"]) == 1.0
    assert float(metrics["loss"]) < 0.05


# ----------------------------------------------------------------------------- epochs


@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (7, 7), (5, 1)])
def test_epoch_batches_visit_every_example_once(n, batch_size):
    order = jax.random.permutation(jax.random.PRNGKey(n), n)
    indices, mask = _batch_indices(order, batch_size)
    chex.assert_shape(indices, (-(-n // batch_size), batch_size))
    used = np.asarray(indices).ravel() if mask is None else np.asarray(indices)[np.asarray(mask)]
    assert sorted(used.tolist()) == list(range(n))


@pytest.mark.parametrize("batch_size", [1, 7, 50, 100])
def test_train_epoch_counts_every_example_for_any_batch_size(batch_size):
    images, labels = _images(100), _labels(100)
    state, metrics = train_epoch(_state(), images, labels, jax.random.PRNGKey(0), batch_size)
    assert int(metrics["examples"]) == 100
    assert int(state.step) == -(-100 // batch_size)
    chex.assert_tree_all_finite(metrics)


def test_epochs_use_fresh_permutations():
    images, labels = _images(64), _labels(64)
    first, _ = train_epoch(_state(), images, labels, jax.random.PRNGKey(1), 8)
    second, _ = train_epoch(_state(), images, labels, jax.random.PRNGKey(2), 8)
    again, _ = train_epoch(_state(), images, labels, jax.random.PRNGKey(1), 8)
    chex.assert_trees_all_equal(first.params, again.params)
    assert not np.allclose(first.params["output"]["kernel"], second.params["output"]["kernel"])


@pytest.mark.parametrize("batch_size", [8, 12])  # 12 leaves a padded, masked last batch
def test_unrolling_the_epoch_does_not_change_the_training(batch_size):
    images, labels = _images(60), _labels(60)
    key = jax.random.PRNGKey(3)
    rolled, rolled_metrics = train_epoch(_state(), images, labels, key, batch_size, unroll=1)
    for unroll in (None, 3):
        state, metrics = train_epoch(_state(), images, labels, key, batch_size, unroll=unroll)
        chex.assert_trees_all_equal(state.params, rolled.params)
        chex.assert_trees_all_close(metrics, rolled_metrics, rtol=1e-6)  # sums may reassociate


@pytest.mark.parametrize("batch_size", [8, 12])  # 60 % 8 leaves a padded, masked last batch
def test_diagnostics_add_the_grad_norm_without_changing_the_training(batch_size):
    images, labels = _images(60), _labels(60)
    key = jax.random.PRNGKey(4)
    plain, plain_metrics = train_epoch(_state(), images, labels, key, batch_size)
    state, metrics = train_epoch(_state(), images, labels, key, batch_size, diagnostics=True)
    chex.assert_trees_all_equal(state.params, plain.params)
    assert "grad_norm" not in plain_metrics
    chex.assert_trees_all_close(
        {name: metrics[name] for name in plain_metrics}, plain_metrics, rtol=1e-6
    )
    # The mean of train_step's per-step grad_norm, over the same batches.
    order = jax.random.permutation(key, 60)
    step_state, norms = _state(), []
    for start in range(0, 60, batch_size):
        index = order[start : start + batch_size]
        step_state, step_metrics = train_step(
            step_state, {"image": images[index], "label": labels[index]}
        )
        norms.append(step_metrics["grad_norm"])
    chex.assert_trees_all_close(metrics["grad_norm"], np.mean(norms), rtol=1e-5)


def test_no_retracing_across_epochs():
    counted_epoch = jax.jit(
        chex.assert_max_traces(train_epoch.__wrapped__, n=1),
        static_argnames=("batch_size", "unroll"),
        donate_argnums=0,
    )
    images, labels = _images(40), _labels(40)
    state = _state(tx=optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9))
    for epoch in range(4):
        state, _ = counted_epoch(state, images, labels, jax.random.PRNGKey(epoch), batch_size=16)
    assert int(state.step) == 12


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("batch_size", [1, 7, 25, 100, 1000])
def test_evaluate_counts_every_example_exactly_once(batch_size):
    images, labels = _images(100, seed=5), _labels(100, seed=6, num_classes=10)
    state = _state()
    result = evaluate(state, images, labels, batch_size=batch_size)
    logits = state.apply_fn({"params": state.params}, images)
    expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    expected_accuracy = np.mean(np.argmax(logits, -1) == np.asarray(labels))
    assert int(result["count"]) == 100
    chex.assert_trees_all_close(result["loss"], expected_loss, atol=1e-5)
    chex.assert_trees_all_close(result["accuracy"], expected_accuracy, atol=1e-6)
    chex.assert_trees_all_close(result["error_rate"], 1 - expected_accuracy, atol=1e-6)
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (np.asarray(labels), np.argmax(logits, -1)), 1)
    chex.assert_trees_all_equal(np.asarray(result["confusion"]), confusion)


def test_eval_step_is_per_example():
    state = _state()
    images, labels = _images(6), _labels(6)
    batched = jax.jit(functools.partial(state.apply_fn, train=False))(
        {"params": state.params}, images
    )
    out = eval_step(state, {"image": images, "label": labels})
    chex.assert_shape([out["loss"], out["correct"], out["prediction"]], (6,))
    chex.assert_trees_all_equal(np.asarray(out["prediction"]), np.argmax(batched, -1))
