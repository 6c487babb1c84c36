"""optax.MultiSteps over k micro-batches equals one step on the k-times-larger batch."""

import chex
import jax
import numpy as np
import optax

from experiments.accumulation import accumulated_sgd
from mlp_jax import MLP, create_train_state, train_step


def _states(tx_big, tx_small):
    model = MLP(hidden_sizes=(16,), num_classes=3)
    sample = np.zeros((1, 4, 4, 1), np.uint8)
    key = jax.random.PRNGKey(0)
    return create_train_state(key, model, tx_big, sample), create_train_state(
        key, model, tx_small, sample
    )


def test_four_accumulated_batches_of_8_make_the_update_of_one_batch_of_32():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3 * 32, 4, 4, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, 3 * 32).astype(np.int32)
    big, small = _states(optax.sgd(0.1), accumulated_sgd(0.1, 4))
    for update in range(3):
        batch = {
            "image": images[32 * update : 32 * (update + 1)],
            "label": labels[32 * update : 32 * (update + 1)],
        }
        big, _ = train_step(big, batch)
        for k in range(4):
            small, _ = train_step(small, {key: v[8 * k : 8 * (k + 1)] for key, v in batch.items()})
        chex.assert_trees_all_close(small.params, big.params, atol=1e-6)


def test_between_accumulation_boundaries_the_params_do_not_move():
    rng = np.random.default_rng(1)
    batch = {
        "image": rng.integers(0, 256, (8, 4, 4, 1), dtype=np.uint8),
        "label": rng.integers(0, 3, 8).astype(np.int32),
    }
    _, small = _states(optax.sgd(0.1), accumulated_sgd(0.1, 4))
    before = jax.tree.map(np.array, small.params)  # train_step donates its input state
    for _ in range(3):
        small, _ = train_step(small, batch)
    chex.assert_trees_all_equal(small.params, before)
    small, _ = train_step(small, batch)  # the 4th micro-batch applies the mean gradient
    assert not np.allclose(small.params["output"]["kernel"], before["output"]["kernel"])
