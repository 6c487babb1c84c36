"""Optimizers and schedules come from optax, configured as the Config says."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlp_jax import Config, make_optimizer, make_schedule

STEPS_PER_EPOCH = 10


def test_step_schedule_is_pytorch_steplr():
    config = Config(lr=0.1, schedule="step", step_every=2, gamma=0.5, epochs=6)
    schedule = make_schedule(config, STEPS_PER_EPOCH)
    for epoch in range(6):
        expected = 0.1 * 0.5 ** (epoch // 2)
        for step in (epoch * STEPS_PER_EPOCH, epoch * STEPS_PER_EPOCH + 9):
            np.testing.assert_allclose(schedule(step), expected, rtol=1e-6)


def test_exponential_schedule_decays_by_gamma_per_epoch():
    schedule = make_schedule(Config(lr=0.1, schedule="exponential", gamma=0.9), STEPS_PER_EPOCH)
    np.testing.assert_allclose(schedule(3 * STEPS_PER_EPOCH), 0.1 * 0.9**3, rtol=1e-6)


def test_cosine_schedules_end_at_zero_and_warm_up():
    config = Config(lr=0.2, schedule="warmup_cosine", warmup_epochs=1, epochs=5)
    schedule = make_schedule(config, STEPS_PER_EPOCH)
    np.testing.assert_allclose(schedule(0), 0.0)
    np.testing.assert_allclose(schedule(5), 0.1, rtol=1e-6)
    np.testing.assert_allclose(schedule(STEPS_PER_EPOCH), 0.2, rtol=1e-6)
    cosine = make_schedule(Config(lr=0.2, schedule="cosine", epochs=5), STEPS_PER_EPOCH)
    np.testing.assert_allclose(cosine(0), 0.2)
    np.testing.assert_allclose(cosine(5 * STEPS_PER_EPOCH), 0.0, atol=1e-7)


def test_constant_schedule_is_the_lecture_recipe():
    config = Config(optimizer="sgd", lr=0.01, schedule="constant")
    assert float(make_schedule(config, STEPS_PER_EPOCH)(12345)) == pytest.approx(0.01)


def _updates(tx, params, grads, steps=3):
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


PARAMS = {"w": jnp.array([1.0, -2.0, 3.0])}
GRADS = {"w": jnp.array([0.5, 0.25, -1.0])}


@pytest.mark.parametrize(
    "config, reference",
    [
        (Config(optimizer="sgd", lr=0.1, schedule="constant"), optax.sgd(0.1)),
        (
            Config(optimizer="momentum", lr=0.1, momentum=0.8, schedule="constant"),
            optax.sgd(0.1, momentum=0.8),
        ),
        (
            Config(optimizer="nesterov", lr=0.1, momentum=0.8, schedule="constant"),
            optax.sgd(0.1, momentum=0.8, nesterov=True),
        ),
        (Config(optimizer="rmsprop", lr=0.01, schedule="constant"), optax.rmsprop(0.01)),
        (Config(optimizer="adam", lr=0.01, schedule="constant"), optax.adam(0.01)),
        (
            Config(optimizer="adamw", lr=0.01, weight_decay=0.1, schedule="constant"),
            optax.adamw(0.01, weight_decay=0.1),
        ),
        (
            Config(optimizer="sgd", lr=0.1, weight_decay=0.01, clip_norm=0.5, schedule="constant"),
            optax.chain(
                optax.clip_by_global_norm(0.5), optax.add_decayed_weights(0.01), optax.sgd(0.1)
            ),
        ),
    ],
)
def test_optimizer_matches_the_optax_reference(config, reference):
    ours, _ = _updates(make_optimizer(config, STEPS_PER_EPOCH), PARAMS, GRADS)
    expected, _ = _updates(reference, PARAMS, GRADS)
    chex.assert_trees_all_close(ours, expected, rtol=1e-6)


def test_peak_learning_rate_lives_in_the_optimizer_state():
    config = Config(optimizer="sgd", lr=0.1, schedule="constant")
    tx = make_optimizer(config, STEPS_PER_EPOCH)
    state = tx.init(PARAMS)
    np.testing.assert_allclose(state.hyperparams["learning_rate"], 0.1)
    # Doubling the injected peak doubles the step: a learning-rate sweep can vmap over it.
    state.hyperparams["learning_rate"] = jnp.asarray(0.2)
    updates, _ = tx.update(GRADS, state, PARAMS)
    chex.assert_trees_all_close(updates, jax.tree.map(lambda g: -0.2 * g, GRADS), rtol=1e-6)


# The schedules at steps inside an epoch and near the end, against the formulas they implement:
# a check only at epoch boundaries passes when a schedule is staircased or off by one step.


def test_exponential_schedule_decays_smoothly_within_an_epoch():
    schedule = make_schedule(Config(lr=0.1, schedule="exponential", gamma=0.9), STEPS_PER_EPOCH)
    for step in (0, 1, 5, 13, 37):
        np.testing.assert_allclose(schedule(step), 0.1 * 0.9 ** (step / STEPS_PER_EPOCH), rtol=1e-6)


@pytest.mark.parametrize("step", [0, 1, 17, 25, 49, 50])
def test_cosine_schedule_is_the_half_cosine_over_all_steps(step):
    schedule = make_schedule(Config(lr=0.2, schedule="cosine", epochs=5), STEPS_PER_EPOCH)
    expected = 0.2 * 0.5 * (1 + np.cos(np.pi * min(step, 50) / 50))
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("warmup_epochs, step", [(1, 3), (1, 10), (1, 30), (0.5, 2), (0.5, 5)])
def test_warmup_cosine_is_linear_then_half_cosine(warmup_epochs, step):
    config = Config(lr=0.2, schedule="warmup_cosine", warmup_epochs=warmup_epochs, epochs=5)
    warmup, total = round(warmup_epochs * STEPS_PER_EPOCH), 5 * STEPS_PER_EPOCH
    if step < warmup:
        expected = 0.2 * step / warmup
    else:
        expected = 0.2 * 0.5 * (1 + np.cos(np.pi * (step - warmup) / (total - warmup)))
    np.testing.assert_allclose(make_schedule(config, STEPS_PER_EPOCH)(step), expected, rtol=1e-5)


@pytest.mark.parametrize("schedule", ["step", "exponential", "cosine", "warmup_cosine"])
def test_update_k_uses_the_schedules_lr_at_step_k(schedule):
    # Plain sgd: update k is exactly -lr(k) * grad, so the optimizer's clock is the schedule's.
    config = Config(
        optimizer="sgd",
        lr=0.1,
        schedule=schedule,
        epochs=3,
        step_every=1,
        gamma=0.5,
        warmup_epochs=1,
    )
    lr = make_schedule(config, STEPS_PER_EPOCH)
    tx = make_optimizer(config, STEPS_PER_EPOCH)
    state = tx.init(PARAMS)
    for step in range(3 * STEPS_PER_EPOCH):
        updates, state = tx.update(GRADS, state, PARAMS)
        expected = jax.tree.map(lambda g, step=step: -lr(step) * g, GRADS)
        chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-8)


def test_plateau_schedule_cuts_the_lr_after_the_patience_runs_out():
    from mlp_jax.optim import plateau_scale, step_plateau

    config = Config(
        optimizer="sgd",
        lr=0.1,
        schedule="plateau",
        monitor="train_loss",
        plateau_factor=0.5,
        plateau_patience=2,
        plateau_cooldown=1,
    )
    tx = make_optimizer(config, STEPS_PER_EPOCH)
    params = {"w": jnp.ones(3)}
    opt_state = tx.init(params)
    step = jax.jit(lambda opt_state, value: step_plateau(config, opt_state, value))
    # 1.0 and 0.9 improve; 2 evaluations without improvement -> x0.5; 1 of cooldown (ignored);
    # then 2 more without improvement -> x0.25.
    scales = []
    for value in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95]:
        opt_state = step(opt_state, value)
        scales.append(float(plateau_scale(opt_state)))
    assert scales == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    # the training step applies the scale to the lr (plain SGD: update = -lr * scale * grad)
    updates, _ = tx.update({"w": jnp.ones(3)}, opt_state, params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.25, rtol=1e-6)


def test_step_plateau_leaves_other_schedules_alone():
    from mlp_jax.optim import plateau_scale, step_plateau

    config = Config(schedule="cosine")
    opt_state = make_optimizer(config, STEPS_PER_EPOCH).init({"w": jnp.ones(3)})
    assert step_plateau(config, opt_state, 1.0) is opt_state
    assert plateau_scale(opt_state) == 1.0
