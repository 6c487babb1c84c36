"""lr_find.py: a log grid of learning rates trained as one vmapped program, scored on validation,
with a suggestion by a stated rule (the lowest validation loss), a figure, and one-line errors."""

import math
import re

import pytest

from mlp_jax.config import ConfigError
from mlp_jax.lr_find import lr_grid, suggest
from tests.faults import TINY, command, one_line


def test_the_grid_is_log_spaced_from_min_to_max():
    assert lr_grid(1e-4, 1.0, 5) == (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    assert lr_grid(0.01, 0.01, 1) == (0.01,)
    for low, high in [(0.0, 1.0), (1.0, 0.1), (-1.0, 1.0), (1e-3, math.inf)]:
        with pytest.raises(ConfigError, match="--min-lr"):
            lr_grid(low, high, 3)


def test_the_suggestion_is_the_lowest_finite_validation_loss():
    rows = [
        {"lr": 0.01, "val_loss": 0.9, "val_accuracy": 0.7},
        {"lr": 0.1, "val_loss": 0.3, "val_accuracy": 0.88},
        {"lr": 1.0, "val_loss": math.nan, "val_accuracy": 0.1},
    ]
    assert suggest(rows)["lr"] == 0.1
    assert suggest(rows[2:]) is None


def test_the_command_prints_each_lr_suggests_the_lowest_val_loss_and_draws(tmp_path):
    code, out, err = command(
        tmp_path, "lr_find", *TINY, "--epochs", "1", "--num-lrs", "4", "--out", "figs/lr.png"
    )
    assert code == 0, err
    rows = re.findall(r"^lr (\S+) +train loss \S+  val loss (\S+)", out, re.MULTILINE)
    assert [float(lr) for lr, _ in rows] == [1e-4, 0.002154, 0.04642, 1.0]
    losses = {float(lr): float(loss) for lr, loss in rows}
    finite = {lr: loss for lr, loss in losses.items() if math.isfinite(loss)}
    suggested = float(re.search(r"^suggested lr (\S+) ", out, re.MULTILINE).group(1))
    assert suggested == min(finite, key=finite.get)
    assert "test" not in out.lower()  # chosen on validation: the test split is not shown
    assert (tmp_path / "figs" / "lr.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--min-lr", "0"], "--min-lr"),
        (["--min-lr", "1", "--max-lr", "0.1"], "--min-lr"),
        (["--num-lrs", "0"], "--num-lrs"),
        (["--validation-split", "0"], "--validation-split"),
        (["--workdir", "runs/a"], "--workdir"),  # lr_find saves no run: not ignored silently
        (["--seeds", "3"], "--seeds"),
        (["--lr-sweep", "0.1,0.2"], "--lr-sweep"),
    ],
)
def test_bad_grids_are_one_line_errors(tmp_path, args, flag):
    code, out, err = command(tmp_path, "lr_find", *TINY, "--epochs", "1", *args)
    assert code == 2
    one_line(err, flag)
    assert not (tmp_path / "lr_find.png").exists()
