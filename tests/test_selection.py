"""Model selection: early stopping on a scripted sequence and in a run, the best checkpoint,
the plateau schedule, resume, and the flags' errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import chex
import numpy as np
import pytest

from mlp_jax.config import Config, ConfigError
from mlp_jax.data import load_mnist_subset
from mlp_jax.loop import train_and_evaluate
from mlp_jax.resume import restore_checkpoint
from mlp_jax.selection import monitored_value, new_selection, selection_from_json

# val_loss per evaluation: best at evaluation 3 (0.5), then 4 evaluations without improvement.
VAL_LOSSES = [0.9, 0.7, 0.5, 0.6, 0.5, 0.55, 0.8, 0.4]


def run(selection, values, start=1):
    """Feed values as epochs start, start+1, ...; return (selection, epoch it stopped at)."""
    for epoch, value in enumerate(values, start):
        selection = selection.update(epoch, {"epoch": epoch, "val_loss": value})
        if selection.should_stop:
            return selection, epoch
    return selection, None


@pytest.mark.parametrize(
    "patience, stop_epoch, best_epoch", [(1, 4, 3), (2, 5, 3), (3, 6, 3), (4, 7, 3), (5, None, 8)]
)
def test_early_stopping_stops_after_patience_evaluations_without_improvement(
    patience, stop_epoch, best_epoch
):
    config = Config(validation_split=0.1, early_stopping=patience)
    selection, stopped = run(new_selection(config), VAL_LOSSES)
    assert stopped == stop_epoch
    assert selection.best_epoch == best_epoch  # 0.5 at epoch 5 is no strict improvement


def test_early_stopping_resumed_from_its_saved_state_stops_at_the_same_evaluation():
    config = Config(validation_split=0.1, early_stopping=3)
    _, uninterrupted = run(new_selection(config), VAL_LOSSES)
    for kill_after in range(1, 6):
        before, stopped = run(new_selection(config), VAL_LOSSES[:kill_after])
        assert stopped is None
        resumed = selection_from_json(config, before.to_json())
        after, stopped = run(resumed, VAL_LOSSES[kill_after:], start=kill_after + 1)
        assert stopped == uninterrupted == 6
        assert after.best_epoch == 3


def test_epochs_without_the_monitored_value_change_nothing():
    selection = new_selection(Config(validation_split=0.1, early_stopping=1))
    selection = selection.update(1, {"epoch": 1, "val_loss": 1.0})
    assert selection.update(2, {"epoch": 2, "val_loss": None}) == selection


def test_accuracy_is_monitored_as_higher_is_better():
    assert monitored_value({"val_accuracy": 0.9}, "val_accuracy") == -0.9
    assert monitored_value({"train_loss": 0.3}, "train_loss") == 0.3
    selection = new_selection(Config(validation_split=0.1, monitor="val_accuracy"))
    for epoch, accuracy in enumerate([0.8, 0.9, 0.85], 1):
        selection = selection.update(epoch, {"val_accuracy": accuracy})
    assert selection.best_epoch == 2 and not selection.should_stop


def test_monitor_defaults_to_val_loss_only_with_a_split():
    assert Config(validation_split=0.1).monitored == "val_loss"
    assert Config().monitored is None and new_selection(Config()) is None
    assert Config(monitor="train_loss").monitored == "train_loss"


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"early_stopping": 3}, "early_stopping"),
        ({"monitor": "val_loss"}, "monitor"),
        ({"monitor": "val_accuracy", "early_stopping": 2}, "monitor"),
        ({"schedule": "plateau"}, "schedule"),
        ({"validation_split": 0.1, "early_stopping": 0}, "early_stopping"),
        ({"validation_split": 0.1, "plateau_factor": 1.0}, "plateau_factor"),
    ],
)
def test_selection_without_anything_to_monitor_is_refused(fields, field):
    with pytest.raises(ConfigError, match=f"^{field}: ") as raised:
        Config(**fields)
    assert raised.value.argument == field


# ------------------------------------------------------------------ in the loop and the CLI


ROOT = Path(__file__).resolve().parents[1]
# A small net on half of the subset's train split with a large constant lr: the validation loss
# turns up after a few epochs, so early stopping ends the run well before --epochs.
STOPPING = [
    "--dataset",
    "mnist_subset",
    "--layers",
    "2",
    "--hidden",
    "64",
    "--lr",
    "0.3",
    "--schedule",
    "constant",
    "--validation-split",
    "0.5",
    "--early-stopping",
    "2",
]


def cli(cwd, module, *argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def records_without_timings(workdir):
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [
        {
            k: v
            for k, v in json.loads(line).items()
            if k not in ("epoch_seconds", "examples_per_second")
        }
        for line in lines
    ]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """`python -m mlp_jax.train ... --early-stopping 2 --epochs 30 --workdir run` in a temp cwd."""
    cwd = tmp_path_factory.mktemp("stopping")
    result = cli(cwd, "mlp_jax.train", *STOPPING, "--epochs", "30", "--workdir", "run")
    assert result.returncode == 0, result.stderr
    return cwd, result.stdout


def selected_line(out):
    """(selected epoch, its test accuracy %) from the run's `selected epoch ...` line."""
    line = next(line for line in out.splitlines() if line.startswith("selected epoch"))
    match = re.match(r"selected epoch (\d+) .*test accuracy ([\d.]+)%", line)
    return int(match.group(1)), match.group(2)


def test_run_stops_early_and_reports_last_and_selected_epoch(stopped_run):
    cwd, out = stopped_run
    records = records_without_timings(cwd / "run")
    last = records[-1]["epoch"]
    assert f"early stopping after epoch {last}:" in out and last < 30
    best, accuracy = selected_line(out)
    # the selected epoch is the one of the lowest val_loss, and the run stopped 2 evaluations on
    val_losses = [r["val_loss"] for r in records]
    assert best == 1 + int(np.argmin(val_losses)) and last == best + 2
    assert accuracy == f"{100 * records[best - 1]['test_accuracy']:.2f}"
    assert f"last epoch {last}: " in out
    saved = json.loads((cwd / "run" / "selection.json").read_text())
    assert saved["selected"]["epoch"] == best and saved["last"]["epoch"] == last
    assert saved["stopped_early"] is True
    split = json.loads((cwd / "run" / "config.json").read_text())["dataset"]["validation"]
    assert split["num_validation"] == 2000 and split["num_train"] == 2000
    assert "seed" in split["drawn"]  # says it does not depend on --seed


def test_best_and_newest_checkpoints_are_kept_and_evaluate_best_scores_the_best(stopped_run):
    cwd, out = stopped_run
    best, accuracy = selected_line(out)
    last = records_without_timings(cwd / "run")[-1]["epoch"]
    kept = sorted(int(p.name) for p in (cwd / "run" / "checkpoints").iterdir())
    assert best in kept and last in kept and best != last
    result = cli(cwd, "mlp_jax.evaluate", "--workdir", "run", "--best")
    assert result.returncode == 0, result.stderr
    assert f"(epoch {best}, " in result.stdout and "selected by val_loss" in result.stdout
    assert f"accuracy {accuracy}%" in result.stdout and "(identical)" in result.stdout
    assert restore_checkpoint(str(cwd / "run"), best=True).epoch == best
    assert restore_checkpoint(str(cwd / "run")).epoch == last


def test_early_stopping_resumed_after_a_stop_stops_at_the_same_epoch(stopped_run, tmp_path):
    """Stopped after epoch best+1 (one evaluation before early stopping would end it), the run
    resumes with its early-stopping state and stops where the uninterrupted run did."""
    cwd, out = stopped_run
    best, _ = selected_line(out)
    first = cli(tmp_path, "mlp_jax.train", *STOPPING, "--epochs", str(best + 1), "--workdir", "r")
    assert first.returncode == 0, first.stderr and "early stopping" not in first.stdout
    resumed = cli(tmp_path, "mlp_jax.train", *STOPPING, "--epochs", "30", "--workdir", "r")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoint" in resumed.stdout
    assert records_without_timings(tmp_path / "r") == records_without_timings(cwd / "run")
    assert selected_line(resumed.stdout) == selected_line(out)
    # the split is the same on resume
    split = [
        json.loads((d / "config.json").read_text())["dataset"]["validation"]
        for d in (tmp_path / "r", cwd / "run")
    ]
    assert split[0] == split[1]


def test_plateau_cuts_the_lr_and_resumes_bit_exactly(tmp_path):
    full = load_mnist_subset()
    dataset = full._replace(
        train_images=full.train_images[:600], train_labels=full.train_labels[:600]
    )
    config = Config(
        dataset="mnist_subset",
        layers=2,
        hidden=(16,),
        epochs=6,
        lr=0.5,
        validation_split=0.5,
        schedule="plateau",
        plateau_patience=1,
        plateau_factor=0.5,
        dropout=0.1,
    )
    quiet = {"log": lambda line: None}
    whole = train_and_evaluate(config.replace(workdir=str(tmp_path / "whole")), dataset, **quiet)
    lrs = [r["lr"] for r in whole.history]
    assert lrs[0] == 0.5 and min(lrs) < 0.5  # the plateau schedule did cut the lr
    val_losses = [r["val_loss"] for r in whole.history]
    for epoch in range(1, 6):  # a cut follows each evaluation without a new best (patience 1)
        improved = val_losses[epoch - 1] < min(val_losses[: epoch - 1], default=np.inf)
        assert lrs[epoch] == (lrs[epoch - 1] if improved else lrs[epoch - 1] * 0.5)
    split = tmp_path / "split"
    train_and_evaluate(config.replace(epochs=3, workdir=str(split)), dataset, **quiet)
    resumed = train_and_evaluate(config.replace(workdir=str(split)), dataset, **quiet)
    chex.assert_trees_all_equal(resumed.state.params, whole.state.params)
    chex.assert_trees_all_equal(resumed.state.opt_state, whole.state.opt_state)
    assert [r["lr"] for r in resumed.history] == lrs


BAD_SELECTION = [
    (["--validation-split", "1"], "--validation-split"),
    (["--validation-split", "-0.2"], "--validation-split"),
    (["--validation-split", "0.0001"], "--validation-split"),  # no class gets a val image
    (["--early-stopping", "3"], "--early-stopping"),
    (["--monitor", "val_accuracy"], "--monitor"),
    (["--schedule", "plateau"], "--schedule"),
]


@pytest.mark.parametrize("argv, flag", BAD_SELECTION, ids=[" ".join(a) for a, _ in BAD_SELECTION])
def test_bad_selection_input_is_one_line_exit_2_and_saves_nothing(argv, flag, tmp_path):
    result = cli(tmp_path, "mlp_jax.train", "--dataset", "mnist_subset", *argv, "--workdir", "w")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mlp_jax.train: error:")
    assert flag in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "w" / "checkpoints").exists()
