"""Fixtures shared by the test files of the entry points that use a trained run."""

import pytest

from mlp_jax import Config
from mlp_jax.data import load_mnist_subset
from mlp_jax.loop import train_and_evaluate


@pytest.fixture(scope="session")
def subset():
    return load_mnist_subset()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, subset):
    """A small MLP trained 2 epochs on the MNIST subset with --workdir: (workdir, RunResult)."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    config = Config(
        dataset="mnist_subset",
        layers=2,
        hidden=(64,),
        epochs=2,
        batch_size=100,
        workdir=str(workdir),
    )
    result = train_and_evaluate(config, subset, log=lambda line: None)
    return workdir, result


from tests.faults import run_copy, trained  # noqa: E402, F401 (fixtures of test_faults_*.py)
