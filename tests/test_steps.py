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
from mlp_jax.steps import batch_indices


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
    indices, mask = batch_indices(order, batch_size)
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


# ----------------------------------------------------------------------------- properties that
# make results correct, with fixtures where a mistake changes a number: 37 examples (a prime), batch
# 10 (a last batch of 7), eval batch 16 (11 padded slots).


def _dropout_state(rate=0.5):
    return _state(MLP(hidden_sizes=(32,), num_classes=10, dropout_rate=rate))


def test_step_t_draws_dropout_from_fold_in_of_the_state_key_and_t():
    batch = {"image": _images(8), "label": _labels(8)}
    state = _dropout_state()

    def loss_with(key, params):
        logits = state.apply_fn(
            {"params": params}, batch["image"], train=True, rngs={"dropout": key}
        )
        return cross_entropy_loss(logits, batch["label"])

    losses = []
    for step in (0, 1, 5):
        at_step = state.replace(step=jnp.asarray(step, jnp.int32))
        expected = loss_with(jax.random.fold_in(state.rng, step), state.params)
        _, metrics = train_step(jax.tree.map(jnp.copy, at_step), batch)  # donated: pass a copy
        chex.assert_trees_all_close(metrics["loss"], expected, atol=1e-6)
        losses.append(float(metrics["loss"]))
    # Same params, same batch, another step: another dropout mask, another loss.
    assert len(set(losses)) == 3, losses


def test_params_and_dropout_keys_are_split_from_the_seed_key():
    model = MLP(hidden_sizes=(16,), num_classes=10, dropout_rate=0.5)
    key = jax.random.PRNGKey(7)
    state = create_train_state(key, model, optax.sgd(0.1), jnp.zeros((1, 28, 28, 1), jnp.uint8))
    params_key, dropout_key = jax.random.split(key)
    expected = model.init(params_key, jnp.zeros((1, 28, 28, 1), jnp.uint8))["params"]
    chex.assert_trees_all_equal(state.params, expected)
    chex.assert_trees_all_equal(state.rng, dropout_key)
    assert not np.array_equal(np.asarray(state.rng), np.asarray(key))


def _reference_epoch(state, images, labels, key, batch_size):
    """train_epoch written as a plain Python loop: the permutation, then unpadded batches."""
    order = np.asarray(jax.random.permutation(key, images.shape[0]))
    losses, accuracies, counts = [], [], []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        state, metrics = train_step(state, {"image": images[rows], "label": labels[rows]})
        losses.append(float(metrics["loss"]))
        accuracies.append(float(metrics["accuracy"]))
        counts.append(len(rows))
    counts = np.asarray(counts, np.float64)
    return state, {
        "train_loss": np.dot(losses, counts) / counts.sum(),
        "train_accuracy": np.dot(accuracies, counts) / counts.sum(),
        "per_step_accuracy": accuracies,
        "per_step_loss": losses,
    }


def test_train_epoch_is_the_permuted_loop_with_example_weighted_metrics():
    # 37 examples in batches of 10: steps of 10, 10, 10 and 7 (the last one padded and masked).
    images, labels = _images(37, seed=11), _labels(37, seed=12)
    key = jax.random.PRNGKey(5)
    tx = optax.sgd(0.5)
    state, metrics = train_epoch(_state(tx=tx), images, labels, key, 10)
    expected_state, expected = _reference_epoch(_state(tx=tx), images, labels, key, 10)
    assert int(state.step) == 4 and int(metrics["examples"]) == 37
    chex.assert_trees_all_close(state.params, expected_state.params, atol=1e-5)
    # An unweighted mean of the 4 steps would give the 7-example batch the weight of 10.
    np.testing.assert_allclose(metrics["train_loss"], expected["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics["train_accuracy"], expected["train_accuracy"], rtol=1e-5)
    unweighted = np.mean(expected["per_step_accuracy"])
    assert abs(float(metrics["train_accuracy"]) - unweighted) > 1e-4, "fixture too symmetric"
    unweighted = np.mean(expected["per_step_loss"])
    assert abs(float(metrics["train_loss"]) - unweighted) > 1e-4, "fixture too symmetric"


def test_epoch_order_is_the_keys_permutation_not_the_stored_order():
    # One example per step: with sgd the order of the updates changes the params.
    images, labels = _images(9, seed=2), _labels(9, seed=3)
    key = jax.random.PRNGKey(4)
    shuffled, _ = train_epoch(_state(), images, labels, key, 1)
    in_order = _state()
    for i in range(9):
        in_order, _ = train_step(in_order, {"image": images[i : i + 1], "label": labels[i : i + 1]})
    expected, _ = _reference_epoch(_state(), images, labels, key, 1)
    chex.assert_trees_all_close(shuffled.params, expected.params, atol=1e-6)
    assert not np.allclose(shuffled.params["output"]["kernel"], in_order.params["output"]["kernel"])


def test_masked_mean_divides_by_the_real_examples_only():
    mask = jnp.array([True, True, True, False])
    logits = jnp.array([[0.0, 0.0, 0.0]] * 3 + [[50.0, 0.0, 0.0]])  # padding: loss 50, not ln 3
    labels = jnp.array([0, 1, 2, 1])
    np.testing.assert_allclose(cross_entropy_loss(logits, labels, mask), np.log(3), rtol=1e-6)
    # Real examples 0..2 predicted wrong, the padded slot right: counting it would give 1/4.
    images = _images(4)
    predictions = np.argmax(np.asarray(_state().apply_fn({"params": _state().params}, images)), -1)
    labels = jnp.asarray(np.where(np.arange(4) < 3, (predictions + 1) % 10, predictions), jnp.int32)
    _, metrics = train_step(_state(), {"image": images, "label": labels, "mask": mask})
    reference = train_step(_state(), {"image": images[:3], "label": labels[:3]})[1]
    np.testing.assert_allclose(metrics["loss"], reference["loss"], rtol=1e-6)
    assert float(metrics["accuracy"]) == float(reference["accuracy"]) == 0.0
    assert int(metrics["count"]) == 3


def _labels_half_right(state, images, num_classes=10):
    """Labels that the state predicts right for examples 0, 2, 3, 5, 6, ... and wrong otherwise.

    Example 0, which evaluate's padding repeats, is predicted right and has a positive loss: any
    padding that counts moves the accuracy, the loss, the count and the confusion matrix.
    """
    predictions = np.argmax(np.asarray(state.apply_fn({"params": state.params}, images)), -1)
    wrong = np.arange(len(images)) % 3 == 1
    return jnp.asarray(np.where(wrong, (predictions + 1) % num_classes, predictions), jnp.int32)


@pytest.mark.parametrize("batch_size", [16, 10, 36])
def test_evaluate_padding_changes_nothing_it_reports(batch_size):
    images = _images(37, seed=21)
    state = _state()
    labels = _labels_half_right(state, images)
    result = evaluate(state, images, labels, batch_size=batch_size)
    logits = np.asarray(state.apply_fn({"params": state.params}, images))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = np.argmax(logits, -1) == np.asarray(labels)
    assert int(result["count"]) == 37
    assert float(result["accuracy"]) == pytest.approx(correct.sum() / 37, abs=1e-7)
    assert float(result["accuracy"]) == pytest.approx(25 / 37, abs=1e-7)  # 12 of 37 made wrong
    np.testing.assert_allclose(result["loss"], losses.mean(), rtol=1e-5)
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (np.asarray(labels), np.argmax(logits, -1)), 1)
    chex.assert_trees_all_equal(np.asarray(result["confusion"]), confusion)


def test_confusion_rows_are_true_classes_and_columns_predictions():
    images = _images(20, seed=8)
    state = _state()
    predictions = np.argmax(np.asarray(state.apply_fn({"params": state.params}, images)), -1)
    truth = (predictions + 3) % 10  # every example wrong, true class = predicted + 3
    confusion = np.asarray(evaluate(state, images, jnp.asarray(truth, jnp.int32), 8)["confusion"])
    np.testing.assert_array_equal(confusion.sum(1), np.bincount(truth, minlength=10))
    np.testing.assert_array_equal(confusion.sum(0), np.bincount(predictions, minlength=10))
    assert np.trace(confusion) == 0


def test_create_train_state_is_one_compilation_that_matches_eager_init(caplog):
    # A size no other test uses, so that nothing is in JAX's in-memory caches yet.
    model = MLP(hidden_sizes=(37, 23), num_classes=10, mean=0.1, std=0.3, dropout_rate=0.1)
    tx = optax.adam(1e-3)
    rng = jax.random.PRNGKey(7)
    sample = _images(1)

    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level("WARNING"):
            compiled = create_train_state(rng, model, tx, sample)
    finally:
        jax.config.update("jax_log_compiles", False)
    params_rng, dropout_rng = jax.random.split(rng)  # one half inits params, one drives dropout
    params = model.init(params_rng, sample, train=False)["params"]  # eager: no jit around it
    eager = (params, tx.init(params), dropout_rng)

    compilations = [r for r in caplog.records if r.getMessage().startswith("Compiling ")]
    assert len(compilations) == 1, [r.getMessage()[:60] for r in compilations]
    state = (compiled.params, compiled.opt_state, compiled.rng)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(eager), strict=True):
        np.testing.assert_array_equal(a, b)  # bit for bit: the same params for the same seed
        assert a.dtype == b.dtype


def test_an_epoch_with_every_example_right_has_train_accuracy_exactly_one():
    # 4000 examples in batches of 128 (31 of 128, then 32): float32 weights 128/4000 sum above 1,
    # so a weighted mean of per-batch accuracies of 1 printed "err -0.00%".
    images, labels = jnp.zeros((4000, 1, 1, 1), jnp.uint8), jnp.zeros((4000,), jnp.int32)
    model = MLP(hidden_sizes=(), num_classes=10)
    state = create_train_state(jax.random.PRNGKey(0), model, optax.sgd(0.5), images[:1])
    for epoch in range(3):
        state, metrics = train_epoch(state, images, labels, jax.random.PRNGKey(epoch), 128)
    assert float(metrics["train_accuracy"]) == 1.0


def test_batch_indices_pad_with_the_orders_first_example_and_mask_it():
    indices, mask = batch_indices(jnp.array([5, 3, 4], jnp.int32), 2)
    np.testing.assert_array_equal(indices, [[5, 3], [4, 5]])  # in bounds for any order
    np.testing.assert_array_equal(mask, [[True, True], [True, False]])
    indices, mask = batch_indices(jnp.array([2, 0, 1, 3], jnp.int32), 2)
    assert mask is None and indices.shape == (2, 2)
