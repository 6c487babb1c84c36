"""--profile A:B (writers.Profiler): a jax.profiler trace of those epochs in DIR/profile/, and
the run's results unchanged by it."""

import json

import pytest

from mlp_jax import Config, ConfigError


def _records(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    timing = ("epoch_seconds", "examples_per_second")
    return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]


def test_a_profiled_run_writes_a_trace_and_trains_the_same(tmp_path):
    from mlp_jax import train_and_evaluate

    config = Config(dataset="mnist_subset", layers=2, hidden=(16,), batch_size=100, epochs=3)
    for name, profile in (("plain", None), ("profiled", "2:3")):
        run = config.replace(workdir=str(tmp_path / name), profile=profile)
        train_and_evaluate(run, log=lambda line: None)
    assert _records(tmp_path / "profiled") == _records(tmp_path / "plain")
    traces = list((tmp_path / "profiled" / "profile").rglob("*.trace.json.gz"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000
    assert list((tmp_path / "profiled" / "profile").rglob("*.xplane.pb"))
    assert not (tmp_path / "plain" / "profile").exists()


def test_profile_spells_epochs_within_the_run():
    assert Config(workdir="w", profile="2:3", epochs=3).profiled_epochs == (2, 3)
    assert Config(workdir="w", profile="1").profiled_epochs == (1, 1)
    assert Config().profiled_epochs is None
    for bad in ("0", "3:2", "11", "1:2:3", "a", "1:"):
        with pytest.raises(ConfigError, match="^profile: must be A:B or A"):
            Config(workdir="w", profile=bad)
    with pytest.raises(ConfigError, match="^profile: needs --workdir"):
        Config(profile="1")
