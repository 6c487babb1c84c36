"""Data parallelism: 1, 4 and 8 fake CPU devices and 2 processes train the same model.

The multi-device runs happen in subprocesses (tests/scale_worker.py) with XLA_FLAGS set, so this
pytest process keeps seeing one device.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from mlp_jax import Config, ConfigError
from mlp_jax.sharding import (
    batch_sharding,
    check_batch_divides,
    make_mesh,
    process_rows,
    replicated,
    shard_batch,
)

WORKER = Path(__file__).with_name("scale_worker.py")
TIMEOUT = 300


def _env(devices: int) -> dict[str, str]:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _load(out: Path, name: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    params = dict(np.load(out / f"{name}.npz"))
    return params, json.loads((out / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One process with 8 fake devices: runs on 1, 4 and 8 of them, a sweep, an uneven batch."""
    out = tmp_path_factory.mktemp("devices")
    result = subprocess.run(
        [sys.executable, str(WORKER), str(out), "single"],
        env=_env(8),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_pytest_process_keeps_one_device():
    assert jax.device_count() == 1


def test_eight_devices_match_one_device_after_an_epoch(runs):
    one, _ = _load(runs, "devices1")
    eight, _ = _load(runs, "devices8")
    chex.assert_trees_all_close(eight, one, atol=1e-5, rtol=1e-5)


def test_sharded_evaluation_counts_every_example_once(runs):
    # 1000 test images in batches of 300 over 8 devices: padding and mask keep it exact.
    _, one = _load(runs, "devices1")
    for devices in ("4", "8"):
        _, metrics = _load(runs, f"devices{devices}")
        assert metrics["count"] == 1000
        assert metrics["accuracy"] == one["accuracy"]
        assert metrics["loss"] == pytest.approx(one["loss"], rel=1e-5)


def test_vmapped_seeds_on_eight_devices_match_a_single_run(runs):
    one, _ = _load(runs, "devices1")
    seed0, _ = _load(runs, "sweep8_seed0")
    chex.assert_trees_all_close(seed0, one, atol=1e-5, rtol=1e-5)


def test_train_step_on_a_batch_sharded_over_eight_devices_matches_one_device(runs):
    one, one_metrics = _load(runs, "host_fed1")
    eight, eight_metrics = _load(runs, "host_fed8")
    chex.assert_trees_all_close(eight, one, atol=1e-6, rtol=1e-6)
    assert eight_metrics["loss"] == pytest.approx(one_metrics["loss"], rel=1e-6)
    assert (runs / "host_fed8_shards.txt").read_text() == "8"
    assert (runs / "host_fed1_shards.txt").read_text() == "1"


def test_uneven_global_batch_names_the_nearest_valid_sizes(runs):
    message = (runs / "uneven_error.txt").read_text()
    assert message.startswith("batch_size: ") and "8 devices" in message and "96 or 104" in message


def test_batch_check_suggests_sizes_below_and_above():
    with pytest.raises(ConfigError, match="^batch_size: .*multiple of 8, e.g. 96 or 104"):
        check_batch_divides(100, 8)
    with pytest.raises(ConfigError, match="e.g. 8$"):
        check_batch_divides(5, 8)
    check_batch_divides(128, 8)


def test_devices_flag_is_checked_against_the_visible_devices():
    with pytest.raises(ConfigError, match="^devices: .*2 devices but 1"):
        make_mesh(Config(devices="2"))
    with pytest.raises(ConfigError, match="^devices: must be auto or a number"):
        Config(devices="two")
    assert make_mesh(Config(devices=1)).shape == {"data": 1}


def test_process_flags_are_validated():
    with pytest.raises(ConfigError, match="^coordinator: expected host:port"):
        Config(coordinator="localhost")
    with pytest.raises(ConfigError, match="^process_id: "):
        Config(num_processes=2, process_id=2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_two_processes_match_four_devices_and_only_process_0_reports(runs, tmp_path):
    # The same CLI flags as a single-process run, plus the three multi-process ones; the
    # workdir is shared by both processes, as on a shared filesystem.
    workdir = tmp_path / "workdir"
    args = [
        "--dataset",
        "mnist_subset",
        "--layers",
        "2",
        "--hidden",
        "32",
        "--batch-size",
        "64",
        "--dropout",
        "0.1",
        "--eval-batch-size",
        "300",
        "--workdir",
        str(workdir),
        "--num-processes",
        "2",
    ]

    def launch(epochs: int) -> list[tuple[str, str]]:
        coordinator = ["--coordinator", f"localhost:{_free_port()}", "--epochs", str(epochs)]
        command = [sys.executable, str(WORKER), str(tmp_path), "cli", *args, *coordinator]
        workers = [
            subprocess.Popen(
                [*command, "--process-id", str(rank)],
                env=_env(2),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for rank in (0, 1)
        ]
        try:
            outputs = [worker.communicate(timeout=TIMEOUT) for worker in workers]
        finally:
            for worker in workers:  # one that failed leaves the other waiting for it
                worker.kill()
        for worker, (_, stderr) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, stderr[-3000:]
        return outputs

    outputs = launch(epochs=1)
    assert "mesh data=4 over 4 cpu devices in 2 processes" in outputs[0][0]
    # Gloo's C++ log ("[Gloo] Rank 2 is connected to 3 peer ranks. ...") is not ours to silence;
    # its threads write concurrently, so a line can arrive split, without the "[Gloo]" prefix.
    gloo = ("[Gloo]", "peer ranks")
    # A split can also leave an empty line behind.
    lines = [line for line in outputs[1][0].splitlines() if line.strip()]
    ours = [line for line in lines if not any(g in line for g in gloo)]
    assert "epoch 1/1" in outputs[0][0] and ours == []
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 1
    assert (workdir / "checkpoints" / "1").is_dir()
    four, four_metrics = _load(runs, "devices4")
    two_processes, metrics = _load(tmp_path, "processes2")
    chex.assert_trees_all_close(two_processes, four, atol=1e-5, rtol=1e-5)
    assert metrics["count"] == 1000 and metrics["accuracy"] == four_metrics["accuracy"]

    # Both processes restore the checkpoint that process 0 saved, and train one more epoch.
    outputs = launch(epochs=2)
    assert "resuming from checkpoint" in outputs[0][0] and "epoch 2/2" in outputs[0][0]
    assert not any(line.startswith("epoch 1/2") for line in outputs[0][0].splitlines())
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2]
    assert (workdir / "checkpoints" / "2").is_dir()


def test_process_rows_are_each_process_own_block(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 4)
    blocks = []
    for index in range(4):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        blocks.append(process_rows(32))
    assert blocks == [slice(0, 8), slice(8, 16), slice(16, 24), slice(24, 32)]


def test_batch_sharding_splits_the_example_axis_and_replicated_splits_nothing():
    mesh = make_mesh(Config(devices=1))
    assert batch_sharding(mesh).spec == PartitionSpec("data")
    assert replicated(mesh).spec == PartitionSpec()
    batch = shard_batch({"image": np.zeros((4, 2), np.uint8)}, mesh)
    assert batch["image"].sharding.spec == PartitionSpec("data")
