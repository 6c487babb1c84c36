"""optax.MultiSteps over k micro-batches equals one step on the k-times-larger batch."""

import chex
import jax
import numpy as np
import optax

from experiments.accumulation import accumulated_sgd
from mlp_jax import (
    MLP,
    Config,
    create_train_state,
    make_optimizer,
    train_and_evaluate,
    train_step,
)
from mlp_jax.data import load_mnist_subset


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


def test_the_grad_accum_flag_makes_n_batches_one_update_of_the_n_times_larger_batch():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (2 * 96, 4, 4, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, 2 * 96).astype(np.int32)
    plain = Config(optimizer="sgd", schedule="constant", lr=0.1)
    big, small = _states(make_optimizer(plain, 10), make_optimizer(plain.replace(grad_accum=3), 10))
    for update in range(2):
        rows = slice(96 * update, 96 * (update + 1))
        big, _ = train_step(big, {"image": images[rows], "label": labels[rows]})
        for k in range(3):
            micro = slice(96 * update + 32 * k, 96 * update + 32 * (k + 1))
            small, _ = train_step(small, {"image": images[micro], "label": labels[micro]})
        chex.assert_trees_all_close(small.params, big.params, atol=1e-6)


def test_the_schedule_counts_accumulated_updates():
    # 10 batches per epoch are 5 updates with --grad-accum 2: the cosine reaches 0 after them, so
    # a sixth update moves nothing (counted in batches, it would be halfway down the cosine).
    config = Config(optimizer="sgd", schedule="cosine", lr=1.0, epochs=1, grad_accum=2)
    state, _ = _states(make_optimizer(config, 10), optax.sgd(0.0))
    rng = np.random.default_rng(3)
    batch = {
        "image": rng.integers(0, 256, (4, 4, 4, 1), dtype=np.uint8),
        "label": rng.integers(0, 3, 4).astype(np.int32),
    }
    for _ in range(10):
        state, _ = train_step(state, batch)
    assert int(state.opt_state.inner_state.gradient_step) == 5  # optax.MultiSteps' updates
    before = jax.tree.map(np.asarray, state.params)
    for _ in range(2):
        state, _ = train_step(state, batch)
    chex.assert_trees_all_equal(state.params, before)


def test_a_grad_accum_run_resumes_bit_exactly_across_an_unfinished_accumulation(tmp_path):
    # 4,000 images in batches of 128: 32 batches per epoch, so with N = 3 an accumulation is
    # unfinished at each epoch's end; the checkpoint must carry it.
    dataset = load_mnist_subset()
    config = Config(
        dataset="mnist_subset", layers=2, hidden=(16,), schedule="constant", grad_accum=3
    )
    whole = train_and_evaluate(
        config.replace(epochs=3, workdir=str(tmp_path / "a")), dataset, log=lambda line: None
    )
    resumed_dir = str(tmp_path / "b")
    train_and_evaluate(config.replace(epochs=2, workdir=resumed_dir), dataset, log=lambda _: None)
    lines = []
    resumed = train_and_evaluate(
        config.replace(epochs=3, workdir=resumed_dir), dataset, lines.append
    )
    assert any(line.startswith("resuming from checkpoint") for line in lines)
    chex.assert_trees_all_equal(resumed.state.params, whole.state.params)
    chex.assert_trees_all_equal(resumed.state.opt_state, whole.state.opt_state)
    assert resumed.history[-1]["test_loss"] == whole.history[-1]["test_loss"]
