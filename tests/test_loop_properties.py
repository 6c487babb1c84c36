"""What the epoch loop and resume must keep, checked through the public entry points.

train_and_evaluate must equal init_state followed by one train_epoch per epoch key, log the lr the
epoch started with, and evaluate every test example once; a resumed run must continue with the
next epoch's key and the optimizer's step, so it equals the uninterrupted run. The fixture is
tiny: 37 train examples in batches of 10 (a short last batch), 23 test examples in batches of 16.
"""

import chex
import jax
import numpy as np
import pytest
from tiny_data import tiny_dataset

from mlp_jax import Config, ConfigError, Dataset, restore_checkpoint
from mlp_jax.data import train_mean_std
from mlp_jax.loop import train_and_evaluate
from mlp_jax.optim import make_schedule
from mlp_jax.state import build_model, epoch_key, init_state
from mlp_jax.steps import evaluate, train_epoch

CONFIG = Config(
    layers=2,
    hidden=(8,),
    batch_size=10,
    eval_batch_size=16,
    epochs=3,
    optimizer="momentum",
    lr=0.3,
    schedule="exponential",
    gamma=0.5,
    dropout=0.2,
)
STEPS_PER_EPOCH = 4  # ceil(37 / 10)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return tiny_dataset()


@pytest.fixture(scope="module")
def uninterrupted(dataset):
    return train_and_evaluate(CONFIG, dataset, log=lambda line: None)


@pytest.fixture(scope="module")
def resumed(dataset, tmp_path_factory):
    """One epoch into a workdir, then the same command with --epochs 3 resumes it."""
    workdir = str(tmp_path_factory.mktemp("loop") / "run")
    train_and_evaluate(CONFIG.replace(epochs=1, workdir=workdir), dataset, log=lambda line: None)
    result = train_and_evaluate(CONFIG.replace(workdir=workdir), dataset, log=lambda line: None)
    return workdir, result


def test_loop_is_init_state_then_one_train_epoch_per_epoch_key(dataset, uninterrupted):
    state = init_state(CONFIG, dataset, build_model(CONFIG, dataset))
    schedule = make_schedule(CONFIG, STEPS_PER_EPOCH)
    for epoch, record in enumerate(uninterrupted.history, start=1):
        assert record["epoch"] == epoch
        # The lr the epoch started with: 0.3, 0.15, 0.075 (exponential, gamma 0.5 per epoch).
        assert record["lr"] == pytest.approx(float(schedule((epoch - 1) * STEPS_PER_EPOCH)))
        assert record["lr"] == pytest.approx(0.3 * 0.5 ** (epoch - 1))
        key = epoch_key(CONFIG, epoch)
        state, metrics = train_epoch(state, dataset.train_images, dataset.train_labels, key, 10)
        assert record["train_loss"] == pytest.approx(float(metrics["train_loss"]), rel=1e-5)
        assert record["train_accuracy"] == pytest.approx(float(metrics["train_accuracy"]), abs=1e-6)
    assert len(uninterrupted.history) == 3 and int(uninterrupted.state.step) == 12
    chex.assert_trees_all_close(uninterrupted.state.params, state.params, atol=1e-5, rtol=1e-5)
    test = evaluate(state, dataset.test_images, dataset.test_labels, batch_size=16)
    assert int(uninterrupted.test["count"]) == 23
    assert float(uninterrupted.test["accuracy"]) == pytest.approx(float(test["accuracy"]))
    assert uninterrupted.history[-1]["test_loss"] == pytest.approx(float(test["loss"]), rel=1e-5)


def test_epochs_differ_in_their_order(dataset):
    # Same params at the start of two epochs: their keys must give different updates.
    state = init_state(CONFIG, dataset, build_model(CONFIG, dataset))
    after = [
        train_epoch(
            jax.tree.map(np.copy, state),
            dataset.train_images,
            dataset.train_labels,
            epoch_key(CONFIG, epoch),
            10,
        )[0].params
        for epoch in (1, 2)
    ]
    assert not np.allclose(after[0]["output"]["kernel"], after[1]["output"]["kernel"])


def test_resume_continues_with_the_next_epoch_and_equals_the_uninterrupted_run(
    resumed, uninterrupted
):
    workdir, result = resumed
    assert [record["epoch"] for record in result.history] == [1, 2, 3]
    assert int(result.state.step) == 12
    for ours, reference in zip(result.history, uninterrupted.history, strict=True):
        assert ours["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6)
        assert ours["lr"] == pytest.approx(reference["lr"])
    chex.assert_trees_all_close(result.state.params, uninterrupted.state.params, atol=1e-6)
    checkpoint = restore_checkpoint(workdir)
    assert checkpoint.epoch == 3 and int(checkpoint.state.step) == 12
    chex.assert_trees_all_close(checkpoint.state.params, uninterrupted.state.params, atol=1e-6)


def test_checkpoint_keeps_the_train_split_normalisation(dataset, resumed, uninterrupted):
    workdir, _ = resumed
    checkpoint = restore_checkpoint(workdir)
    mean, std = train_mean_std(dataset.train_images)
    assert checkpoint.info["mean"] == pytest.approx(mean)
    assert checkpoint.info["std"] == pytest.approx(std)
    test = evaluate(checkpoint.state, dataset.test_images, dataset.test_labels, batch_size=16)
    assert float(test["loss"]) == pytest.approx(float(uninterrupted.test["loss"]), rel=1e-5)


@pytest.mark.parametrize("change", [{"seed": 1}, {"batch_size": 8}, {"dropout": 0.3}])
def test_resume_refuses_a_config_that_changes_the_run(dataset, resumed, change):
    workdir, _ = resumed
    name = next(iter(change))
    with pytest.raises(ConfigError, match=f"^workdir: .*{name}"):  # the CLI says --workdir
        train_and_evaluate(
            CONFIG.replace(workdir=workdir, epochs=4, **change), dataset, log=lambda line: None
        )
