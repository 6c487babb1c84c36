"""experiments/time_to_accuracy.py: it reads both CLIs' epoch lines and stops at the target."""

import importlib.util
import os
import subprocess
import sys

import pytest

from experiments.time_to_accuracy import ACCURACY, READY, run_once
from mlp_jax.report import format_epoch


def test_reads_the_test_accuracy_of_mlp_jax_torch_and_keras_recipe_lines():
    record = {
        "epoch": 3,
        "train_loss": 0.3,
        "train_accuracy": 0.9,
        "test_loss": 0.35,
        "test_accuracy": 0.8812,
        "lr": 0.01,
        "epoch_seconds": 1.0,
    }
    torch_line = "epoch 3/10  train loss 0.3000  test acc 88.12%  lr 0.01  1.00s"
    keras_line = "epoch 3/10  train loss 0.3000  test acc 88.12%  1.00s"
    for line in (format_epoch(record, 10), torch_line, keras_line):
        match = ACCURACY.match(line)
        assert match and (match[1], match[2]) == ("3", "88.12"), line
    assert ACCURACY.match(format_epoch({**record, "test_accuracy": None}, 10)) is None


def test_stops_at_the_first_epoch_that_reaches_the_target():
    lines = ["epoch 1/3  test acc 87.99%", "epoch 2/3  test acc 88.00%", "epoch 3/3  test acc 91%"]
    script = "".join(f"print({line!r}, flush=True)\n" for line in lines)
    result = run_once([sys.executable, "-c", script], 0.88, dict(os.environ))
    assert result["epoch"] == 2 and result["accuracies"] == pytest.approx([0.8799, 0.88])
    assert result["seconds"] > 0


def test_marks_the_phases_and_reports_their_medians():
    from experiments.time_to_accuracy import _phases

    lines = [
        "devices: cpu",
        "compiled the epoch and the evaluation in 0.5s",
        "epoch 1/3  test acc 80.00%",
        "epoch 2/3  test acc 88.50%",
    ]
    script = "import time\n" + "".join(
        f"print({line!r}, flush=True); time.sleep(0.2)\n" for line in lines
    )
    result = run_once([sys.executable, "-c", script], 0.88, dict(os.environ))
    first, ready, (epoch1, epoch2) = result["first_line"], result["ready"], result["epoch_lines"]
    assert 0 < first < ready < epoch1 < epoch2 == result["seconds"]
    assert ready - first == pytest.approx(0.2, abs=0.15)
    row = _phases("x", [result, result])
    assert row["ready to train"] == f"{ready:.1f}"
    assert row["s per later epoch"] == f"{epoch2 - epoch1:.2f}"


@pytest.mark.skipif(
    importlib.util.find_spec("keras") is None, reason="keras is the optional extra .[bench]"
)
def test_the_keras_recipe_prints_the_lines_the_timer_reads(tmp_path):
    from experiments.benchmark import write_idx_dir
    from mlp_jax.data import load_mnist_subset

    write_idx_dir(load_mnist_subset(), tmp_path / "idx")
    result = subprocess.run(
        [sys.executable, "-m", "experiments.keras_recipe", "--idx-dir", str(tmp_path / "idx")]
        + ["--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(READY)
    epochs = [ACCURACY.match(line) for line in lines[1:]]
    assert [m[1] for m in epochs if m] == ["1", "2"]
    assert float(epochs[-1][2]) > 80  # the 4,000-image subset, 2 epochs of the default recipe
