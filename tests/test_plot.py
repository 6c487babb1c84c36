"""mlp_jax.plot: the figures, and `python -m mlp_jax.plot --workdir DIR` on a run's workdir."""

import json

import numpy as np
import pytest

from mlp_jax import Config
from mlp_jax.data import class_names
from mlp_jax.figures import (
    plot_confusion,
    plot_curves,
    plot_predictions,
    plot_templates,
)
from mlp_jax.loop import train_and_evaluate
from mlp_jax.plot import main

HISTORY = [
    {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.6, "test_loss": 0.8, "test_accuracy": 0.7},
    {
        "epoch": 2,
        "train_loss": 0.5,
        "train_accuracy": 0.8,
        "test_loss": None,
        "test_accuracy": None,
    },
    {"epoch": 3, "train_loss": 0.3, "train_accuracy": 0.9, "test_loss": 0.4, "test_accuracy": 0.85},
]


def _write_run(workdir, history=HISTORY):
    workdir.mkdir()
    info = {"dataset": {"name": "idx:fashion-mnist", "num_classes": 10}, "layer_sizes": [784, 10]}
    (workdir / "config.json").write_text(json.dumps(info))
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))


def test_curves_skip_epochs_without_evaluation_and_label_both_axes():
    figure = plot_curves(HISTORY, "a run")
    loss_axes, error_axes = figure.axes
    train, test = error_axes.get_lines()
    np.testing.assert_allclose(train.get_ydata(), [40, 20, 10])
    np.testing.assert_array_equal(test.get_xdata(), [1, 3])  # epoch 2 was not evaluated
    assert loss_axes.get_xlabel() == "epoch" and "loss" in loss_axes.get_ylabel()
    assert error_axes.get_ylabel() == "error rate (%)"


def test_confusion_templates_and_predictions_are_labelled():
    names = class_names("idx:fashion-mnist", 10)
    assert names[0] == "T-shirt/top" and class_names("mnist_subset", 10)[3] == "3"
    confusion = plot_confusion(np.eye(10, dtype=int) * 7, names, "confusion").axes[0]
    assert (confusion.get_xlabel(), confusion.get_ylabel()) == ("predicted class", "true class")
    templates = plot_templates(
        np.random.default_rng(0).normal(size=(784, 10)), (28, 28), names, "t"
    )
    assert [axes.get_title() for axes in templates.axes[:10]] == list(names)
    labels, predictions = np.arange(10) % 3, np.array([0, 1, 2, 0, 1, 2, 0, 0, 0, 0])
    images = np.zeros((10, 28, 28, 1), np.uint8)
    grid = plot_predictions(images, labels, predictions, names, "p", columns=5)
    red = [axes.title.get_color() == "red" for axes in grid.axes]
    assert red == list(labels != predictions)  # exactly the misclassified ones are highlighted


def test_cli_draws_curves_of_a_workdir_without_checkpoints(tmp_path, capsys):
    _write_run(tmp_path / "run")
    assert main(["--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "figures")]) == 0
    assert (tmp_path / "figures" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "figures" / "confusion.png").exists()
    assert "no confusion matrix" in capsys.readouterr().out


def test_cli_draws_the_confusion_matrix_of_the_newest_checkpoint(tmp_path, capsys):
    workdir = tmp_path / "run"
    config = Config(dataset="mnist_subset", layers=2, hidden=(16,), epochs=2, workdir=str(workdir))
    result = train_and_evaluate(config, log=lambda line: None)
    assert main(["--workdir", str(workdir)]) == 0
    assert (workdir / "curves.png").exists() and (workdir / "confusion.png").exists()
    correct = int(np.trace(result.test["confusion"]))
    assert (
        f"confusion matrix of epoch 2: {correct} of 1000 test images right"
        in capsys.readouterr().out
    )


@pytest.mark.parametrize("where, problem", [("", "holds no run"), ("no", "does not exist")])
def test_cli_rejects_a_folder_that_holds_no_run(tmp_path, capsys, where, problem):
    assert main(["--workdir", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp_jax.plot: error: --workdir: ") and problem in err, err


def test_sweep_curves_are_one_mean_line_and_one_band_per_lr():
    history = [
        {
            "epoch": epoch,
            "seed": seed,
            "peak_lr": lr,
            "train_loss": 1.0 / epoch,
            "train_accuracy": 0.5,
            "val_loss": 0.5,
            "val_accuracy": 0.8 + 0.01 * seed,
            "test_loss": 0.6,
            "test_accuracy": 0.7 + 0.1 * seed,
        }
        for epoch in (1, 2, 3)
        for lr in (0.1, 0.01)
        for seed in (0, 1)
    ]
    _, error_axes = plot_curves(history, "sweep").axes
    lines = error_axes.get_lines()
    assert len(lines) == 2 * 3  # per lr: train, validation, test
    for line in lines:
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
    validation = [line for line in lines if line.get_label().endswith("validation")]
    assert [line.get_label() for line in validation] == [
        "lr 0.1: validation",
        "lr 0.01: validation",
    ]
    assert [round(float(line.get_ydata()[0]), 6) for line in validation] == [19.5, 19.5]  # means
    bands = error_axes.collections  # the range over seeds, one per lr and split
    assert len(bands) == 6
    val_band = bands[1].get_paths()[0].vertices[:, 1]
    assert round(val_band.min(), 6) == 19 and round(val_band.max(), 6) == 20
    single = plot_curves([r for r in history if r["seed"] == 0 and r["peak_lr"] == 0.1], "one")
    labels = [line.get_label() for line in single.axes[1].get_lines()]
    assert labels == ["train (running)", "validation", "test"]
