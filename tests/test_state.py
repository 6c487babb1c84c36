"""state.py: the keys of a seed, the model's normalisation, the initial train state of a Config.

The fixture's splits have different pixel statistics, so statistics from the wrong split show.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tiny_data import tiny_dataset

from mlp_jax import Config
from mlp_jax.config import ConfigError
from mlp_jax.data import train_mean_std
from mlp_jax.state import (
    MAX_STEPS,
    build_model,
    check_fits,
    data_key,
    epoch_key,
    init_key,
    init_state,
)
from mlp_jax.steps import create_train_state, steps_per_epoch

CONFIG = Config(
    layers=2,
    hidden=(8,),
    batch_size=10,
    epochs=2,
    optimizer="sgd",
    lr=0.5,
    schedule="cosine",
    dropout=0.2,
)


def _key(key) -> np.ndarray:
    return np.asarray(
        jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    )


def test_init_and_data_keys_differ_within_and_across_seeds():
    keys = {
        name: [_key(fn(seed)).tobytes() for seed in range(3)]
        for name, fn in (("init", init_key), ("data", data_key))
    }
    everything = keys["init"] + keys["data"]
    assert len(set(everything)) == 6  # init_key(s) != data_key(s), and seeds differ
    # What the docstrings promise, so runs stay comparable across versions.
    np.testing.assert_array_equal(
        _key(init_key(3)), _key(jax.random.fold_in(jax.random.PRNGKey(3), 0))
    )
    np.testing.assert_array_equal(
        _key(data_key(3)), _key(jax.random.fold_in(jax.random.PRNGKey(3), 1))
    )


def test_every_epoch_has_its_own_key_folded_from_the_data_key():
    keys = [_key(epoch_key(CONFIG, epoch)).tobytes() for epoch in range(1, 6)]
    assert len(set(keys)) == 5
    for epoch in (1, 4):
        np.testing.assert_array_equal(
            _key(epoch_key(CONFIG, epoch)), _key(jax.random.fold_in(data_key(CONFIG.seed), epoch))
        )
    assert (
        _key(epoch_key(CONFIG, 1)).tobytes() != _key(epoch_key(CONFIG.replace(seed=1), 1)).tobytes()
    )
    # Distinct keys give distinct orders (what the keys are for).
    orders = {
        tuple(np.asarray(jax.random.permutation(epoch_key(CONFIG, e), 37))) for e in (1, 2, 3)
    }
    assert len(orders) == 3


def test_model_standardises_with_the_train_split_statistics():
    dataset = tiny_dataset()
    model = build_model(CONFIG.replace(normalize="standardize"), dataset)
    train_mean, train_std = train_mean_std(dataset.train_images)
    test_mean, _ = train_mean_std(dataset.test_images)
    assert abs(train_mean - test_mean) > 0.2  # the fixture makes the wrong split visible
    assert model.mean == pytest.approx(train_mean) and model.std == pytest.approx(train_std)
    images = jnp.asarray(dataset.train_images, jnp.float32) / 255.0
    standardised = (images - model.mean) / model.std
    assert float(jnp.mean(standardised)) == pytest.approx(0.0, abs=1e-5)
    assert float(jnp.std(standardised)) == pytest.approx(1.0, abs=1e-4)


def test_a_batch_or_epochs_that_do_not_fit_name_the_config_field_not_a_flag():
    dataset = tiny_dataset()  # 37 train examples: 4 steps per epoch at batch size 10
    most = MAX_STEPS // 4
    check_fits(CONFIG.replace(epochs=most), dataset)
    with pytest.raises(ConfigError, match=r"must be 1 \.\. 37") as batch:
        check_fits(CONFIG.replace(batch_size=38), dataset)
    with pytest.raises(ConfigError, match=f"at most {most} epochs at batch size 10") as epochs:
        check_fits(CONFIG.replace(epochs=most + 1), dataset)
    # The CLI names the flags of these fields.
    assert (batch.value.argument, epochs.value.argument) == ("batch_size", "epochs")
    assert "--" not in str(batch.value) + str(epochs.value)


def test_init_state_is_the_seeds_init_key_and_differs_between_seeds():
    dataset = tiny_dataset()
    model = build_model(CONFIG, dataset)
    state = init_state(CONFIG.replace(seed=3), dataset, model)
    expected = create_train_state(init_key(3), model, optax.sgd(0.5), dataset.train_images[:1])
    chex.assert_trees_all_equal(state.params, expected.params)
    chex.assert_trees_all_equal(_key(state.rng), _key(expected.rng))
    other = init_state(CONFIG.replace(seed=4), dataset, model)
    assert not np.allclose(state.params["output"]["kernel"], other.params["output"]["kernel"])


def test_init_states_optimizer_follows_the_schedule_over_the_train_split():
    # 37 train examples in batches of 10: 4 steps per epoch, 8 in all; the cosine reaches 0 there.
    dataset = tiny_dataset()
    config = CONFIG.replace(dropout=0.0)
    state = init_state(config, dataset, build_model(config, dataset))
    batches = steps_per_epoch(dataset.num_train, config.batch_size)
    assert batches == 4
    schedule = optax.cosine_decay_schedule(config.lr, config.epochs * batches)
    grads = jax.tree.map(jnp.ones_like, state.params)
    opt_state, params = state.opt_state, state.params
    for step in range(config.epochs * batches):
        updates, opt_state = state.tx.update(grads, opt_state, params)
        np.testing.assert_allclose(updates["output"]["bias"], -schedule(step), rtol=1e-5, atol=1e-7)
