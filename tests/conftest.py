"""Fixtures shared by the test files of the entry points that use a trained run."""

import signal

import pytest

from mlp_jax import Config
from mlp_jax.data import load_mnist_subset
from mlp_jax.loop import train_and_evaluate

# A suite started in the background (`cmd &`, nohup) inherits SIGINT ignored, and so would every
# command it starts, which keeps an ignored SIGINT ignored: the Ctrl-C tests would then test
# nothing (or hang). They stand for a user's foreground terminal, where SIGINT is live.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
