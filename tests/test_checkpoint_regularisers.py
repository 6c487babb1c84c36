"""Resuming stays bit-exact with augmentation and every regulariser on; their flags must match."""

import chex
import pytest

from mlp_jax import Config, ConfigError, restore_checkpoint, train_and_evaluate
from mlp_jax.data import load_mnist_subset

EVERYTHING = {
    "dataset": "mnist_subset",
    "layers": 2,
    "hidden": (32,),
    "dropout": 0.1,
    "augment": "flip,shift:2,erase:3",
    "input_dropout": 0.1,
    "max_norm": 1.0,
    "label_smoothing": 0.1,
    "ema": 0.9,
    "loss": "mse",
    "schedule": "constant",  # so that 1 epoch, then --epochs 2, is the 2-epoch run's schedule
}


def _quiet(line):
    pass


def test_resume_with_every_feature_on_matches_the_uninterrupted_run(tmp_path):
    dataset = load_mnist_subset()
    config = Config(**EVERYTHING, epochs=2)
    straight = train_and_evaluate(config.replace(workdir=str(tmp_path / "a")), dataset, log=_quiet)
    resumed_dir = str(tmp_path / "b")
    train_and_evaluate(config.replace(epochs=1, workdir=resumed_dir), dataset, log=_quiet)
    lines = []
    resumed = train_and_evaluate(config.replace(workdir=resumed_dir), dataset, log=lines.append)
    assert any(line.startswith("resuming from checkpoint") for line in lines)
    chex.assert_trees_all_equal(resumed.state.params, straight.state.params)
    chex.assert_trees_all_equal(resumed.state.ema_params, straight.state.ema_params)
    chex.assert_trees_all_equal(resumed.state.opt_state, straight.state.opt_state)
    chex.assert_trees_all_equal(resumed.test, straight.test)  # scored on the average
    # A checkpoint restored without a dataset rebuilds the state with its average and loss.
    restored = restore_checkpoint(resumed_dir).state
    chex.assert_trees_all_equal(restored.ema_params, straight.state.ema_params)
    assert restored.loss == straight.state.loss and restored.ema_decay == 0.9

    for changes in ({"ema": 0.99}, {"augment": "flip"}, {"loss": "cross_entropy"}):
        with pytest.raises(ConfigError, match=f"different config .*{next(iter(changes))}"):
            train_and_evaluate(config.replace(epochs=3, workdir=resumed_dir, **changes), dataset)
