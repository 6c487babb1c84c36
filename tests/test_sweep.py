"""Many models in one program: --seeds and --lr-sweep equal the separate runs they replace."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_data import tiny_dataset

from mlp_jax import Config, ConfigError
from mlp_jax.data import load_mnist_subset
from mlp_jax.loop import train_and_evaluate, train_many
from mlp_jax.model import MLP
from mlp_jax.optim import make_optimizer
from mlp_jax.state import epoch_key, epoch_keys, sweep_models, with_learning_rate
from mlp_jax.steps import create_train_state
from mlp_jax.train import config_from_args

# Dropout makes the per-model keys matter; 1,000 examples keep the epoch short.
CONFIG = Config(
    dataset="mnist_subset",
    layers=2,
    hidden=(16,),
    epochs=1,
    batch_size=128,
    dropout=0.1,
    eval_batch_size=500,
)


@pytest.fixture(scope="module")
def data():
    full = load_mnist_subset()
    return full._replace(
        train_images=full.train_images[:1000], train_labels=full.train_labels[:1000]
    )


@pytest.fixture(scope="module")
def separate_run(data):
    """train_and_evaluate for one (seed, lr), each computed once for the whole module."""
    cache = {}

    def run(seed: int, lr: float):
        if (seed, lr) not in cache:
            config = CONFIG.replace(seed=seed, lr=lr)
            cache[seed, lr] = train_and_evaluate(config, data, log=lambda line: None)
        return cache[seed, lr]

    return run


def test_seeds_4_equals_4_separate_runs(data, separate_run):
    lines = []
    many = train_and_evaluate(CONFIG.replace(seeds=4), data, log=lines.append)
    assert many.seeds == [0, 1, 2, 3] and many.lrs == [CONFIG.lr] * 4
    for k, seed in enumerate(many.seeds):
        alone = separate_run(seed, CONFIG.lr)
        chex.assert_trees_all_close(many.state(k).params, alone.state.params, atol=1e-5, rtol=1e-5)
        assert many.test[k]["loss"] == pytest.approx(float(alone.test["loss"]), rel=1e-5)
        assert many.history[k][0]["train_loss"] == pytest.approx(
            alone.history[0]["train_loss"], rel=1e-5
        )
    accuracies = [float(separate_run(seed, CONFIG.lr).test["accuracy"]) for seed in many.seeds]
    (row,) = many.summary()
    assert row["test_accuracy_mean"] == pytest.approx(np.mean(accuracies), abs=1e-6)
    assert row["test_accuracy_std"] == pytest.approx(np.std(accuracies, ddof=1), abs=1e-6)
    assert any("± " in line and "mean ± std over 4 seeds" in line for line in lines)


def test_lr_sweep_equals_separate_runs(data, separate_run):
    lrs = (0.01, CONFIG.lr, 0.2)
    many = train_and_evaluate(CONFIG.replace(lr_sweep=lrs), data, log=lambda line: None)
    assert many.lrs == list(lrs) and many.seeds == [0, 0, 0]
    for k, lr in enumerate(lrs):
        alone = separate_run(0, lr)
        chex.assert_trees_all_close(many.state(k).params, alone.state.params, atol=1e-5, rtol=1e-5)
        assert float(many.state(k).opt_state.hyperparams["learning_rate"]) == pytest.approx(lr)
        assert many.history[k][0]["lr"] == pytest.approx(alone.history[0]["lr"])


def test_seeds_times_lrs_gives_one_model_per_pair():
    config = CONFIG.replace(seed=1, seeds=2, lr_sweep=(0.1, 0.01))
    assert config.num_models == 4
    assert sweep_models(config) == ([1, 2, 1, 2], [0.1, 0.1, 0.01, 0.01])
    assert sweep_models(config, seeds=[7], lrs=[0.5]) == ([7], [0.5])


def test_with_learning_rate_changes_only_the_injected_peak(data):
    tx = make_optimizer(CONFIG, steps_per_epoch=8)
    model = MLP(hidden_sizes=(4,), num_classes=10)
    state = create_train_state(jax.random.PRNGKey(0), model, tx, data.train_images[:1])
    changed = with_learning_rate(state, 0.3)
    assert float(changed.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.3)
    chex.assert_trees_all_equal(changed.params, state.params)


def test_cli_parses_seeds_and_lr_sweep():
    config = config_from_args(["--seeds", "4", "--lr-sweep", "0.001,0.01,0.1"])
    assert config.seeds == 4 and config.lr_sweep == (0.001, 0.01, 0.1)


def test_bad_sweep_flags_name_the_flag():
    with pytest.raises(ConfigError, match="^seeds: must be 1 .. "):
        Config(seeds=0)
    with pytest.raises(ConfigError, match="^lr_sweep: must be a finite number > 0"):
        Config(lr_sweep=(0.1, -1.0))


def test_one_lr_sweep_value_trains_at_that_lr(data, separate_run):
    many = train_and_evaluate(CONFIG.replace(lr_sweep=(0.2,)), data, log=lambda line: None)
    alone = separate_run(0, 0.2)
    chex.assert_trees_all_equal(many.state.params, alone.state.params)
    assert float(many.state.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.2)


def test_epoch_keys_are_each_seeds_single_run_key_and_change_every_epoch():
    seeds = [0, 3, 5]
    for epoch in (1, 2, 7):
        keys = np.asarray(epoch_keys(jnp.asarray(seeds), epoch))
        for k, seed in enumerate(seeds):
            np.testing.assert_array_equal(keys[k], epoch_key(CONFIG.replace(seed=seed), epoch))
    first, second = (np.asarray(epoch_keys(jnp.asarray(seeds), e)) for e in (1, 2))
    assert not np.any(np.all(first == second, axis=-1))


def test_two_epochs_of_a_sweep_equal_the_separate_two_epoch_runs():
    # The second epoch must use the second epoch's keys; one epoch cannot tell.
    tiny = tiny_dataset()
    config = Config(
        layers=2,
        hidden=(8,),
        batch_size=10,
        eval_batch_size=16,
        epochs=2,
        dropout=0.2,
        lr=0.3,
        schedule="exponential",
        seeds=2,
    )
    many = train_many(config, tiny)
    for k, seed in enumerate(many.seeds):
        alone = train_and_evaluate(config.replace(seed=seed, seeds=1), tiny, log=lambda line: None)
        chex.assert_trees_all_close(many.state(k).params, alone.state.params, atol=1e-5)
        for ours, reference in zip(many.history[k], alone.history, strict=True):
            assert ours["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
            assert ours["lr"] == pytest.approx(reference["lr"])
        assert float(many.test[k]["accuracy"]) == pytest.approx(float(alone.test["accuracy"]))


def test_sweep_with_a_validation_split_picks_the_lr_on_validation_never_on_test(data):
    """Per lr: mean ± std (ddof=1) over seeds of each model's selected epoch's val and test
    accuracy; the pick is the best mean val accuracy, whatever test says."""
    config = CONFIG.replace(seeds=2, lr_sweep=(0.003, 0.1), epochs=3, validation_split=0.2)
    lines = []
    many = train_and_evaluate(config, data, log=lines.append)
    assert many.dataset.num_val == 200 and "val_accuracy" in many.history[0][0]
    rows = many.summary()
    for row in rows:
        members = [k for k, lr in enumerate(many.lrs) if lr == row["lr"]]
        best = [min(many.history[k], key=lambda r: r["val_loss"]) for k in members]  # monitor
        assert row["selected_epochs"] == [r["epoch"] for r in best]
        val = [r["val_accuracy"] for r in best]
        assert row["selected_val_accuracy_mean"] == pytest.approx(np.mean(val))
        assert row["selected_val_accuracy_std"] == pytest.approx(np.std(val, ddof=1))
        test = [r["test_accuracy"] for r in best]
        assert row["selected_test_accuracy_mean"] == pytest.approx(np.mean(test))
    picked = max(rows, key=lambda row: row["selected_val_accuracy_mean"])
    assert many.pick()["lr"] == picked["lr"]
    assert any(line.startswith(f"validation picks lr {picked['lr']:g} ") for line in lines)
    assert any("ddof=1" in line for line in lines)


def test_a_sweep_without_a_validation_split_picks_nothing(data):
    lines = []
    many = train_and_evaluate(CONFIG.replace(lr_sweep=(0.01, 0.1)), data, log=lines.append)
    assert many.pick() is None and not any("picks" in line for line in lines)
