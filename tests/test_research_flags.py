"""--grad-accum, --dtype, --overfit-batches, --fast-dev-run and --profile: each works for one model
and for a sweep (K = 1 and K = 2, the one loop), with a workdir, and resumes bit-exactly."""

import json
import math

import chex
import pytest

from mlp_jax import Config, train_and_evaluate
from mlp_jax.data import load_mnist_subset

BASE = Config(
    dataset="mnist_subset", layers=2, hidden=(16,), batch_size=100, schedule="constant", workdir="."
)  # every run gets its own --workdir (_run); --profile needs one
FLAGS = {
    "grad_accum": {"grad_accum": 3},
    "bfloat16": {"dtype": "bfloat16"},
    "overfit_batches": {"overfit_batches": 2},
    "profile": {"profile": "2:2"},
}


def _quiet(line):
    pass


@pytest.fixture(scope="module")
def subset():
    return load_mnist_subset()


def _run(config, subset, workdir, **changes):
    return train_and_evaluate(config.replace(workdir=str(workdir), **changes), subset, log=_quiet)


def _lines(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("num_models", [1, 2], ids=["K=1", "K=2"])
@pytest.mark.parametrize("flag", FLAGS)
def test_each_flag_trains_one_model_and_a_sweep_and_resumes_bit_exactly(
    subset, tmp_path, flag, num_models
):
    config = BASE.replace(seeds=num_models, **FLAGS[flag])
    whole = _run(config, subset, tmp_path / "whole", epochs=3)
    records = _lines(tmp_path / "whole")
    assert len(records) == 3 * num_models
    assert all(math.isfinite(r["train_loss"]) and r["test_accuracy"] > 0.3 for r in records)
    _run(config, subset, tmp_path / "resumed", epochs=2, profile=None)
    resumed = _run(config, subset, tmp_path / "resumed", epochs=3)
    states = [(r.states if num_models > 1 else r.state) for r in (whole, resumed)]
    chex.assert_trees_all_equal(states[1].params, states[0].params)
    chex.assert_trees_all_equal(states[1].opt_state, states[0].opt_state)


@pytest.mark.parametrize("num_models", [1, 2], ids=["K=1", "K=2"])
def test_fast_dev_run_touches_every_phase_once_and_exits(subset, tmp_path, num_models):
    config = BASE.replace(
        fast_dev_run=True, epochs=50, seeds=num_models, eval_batch_size=64, validation_split=0.1
    )
    assert (config.epochs, config.overfit_batches) == (1, 1)
    result = _run(config, subset, tmp_path / "run")
    dataset = result.dataset
    assert (dataset.num_train, dataset.num_val, dataset.num_test) == (100, 64, 64)
    records = _lines(tmp_path / "run")
    assert len(records) == num_models and {r["epoch"] for r in records} == {1}
    assert all(r["val_accuracy"] is not None and r["test_accuracy"] is not None for r in records)
    assert (tmp_path / "run" / "checkpoints" / "1").is_dir()
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
