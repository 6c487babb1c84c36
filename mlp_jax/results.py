"""What a training run returns: `RunResult` for one model, `SweepResult` for K models (--seeds,
--lr-sweep), with the statistics over seeds that the reports print."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from mlp_jax.data import Dataset
from mlp_jax.report import Record, sample_std
from mlp_jax.selection import Selection
from mlp_jax.steps import TrainState


@dataclasses.dataclass
class RunResult:
    """One model's run: its final state, one metrics.jsonl record per epoch, the final test."""

    state: TrainState
    history: list[Record]
    test: dict[str, Any]  # evaluate() of the final state, as numpy
    dataset: Dataset
    selection: Selection | None = None  # with something monitored: the best epoch, stopping
    selected: Record | None = None  # the record of the epoch that validation selected


@dataclasses.dataclass
class SweepResult:
    """K models; model k was trained with seeds[k] and peak learning rate lrs[k]."""

    seeds: list[int]
    lrs: list[float]
    states: TrainState  # stacked: every leaf has a leading axis of length K
    history: list[list[Record]]  # history[k][e]: model k's metrics.jsonl record for epoch e+1
    test: list[dict[str, Any]]  # evaluate() of each final model, as numpy
    dataset: Dataset
    compile_seconds: float  # compiling the epoch and the evaluation, before epoch 1
    selections: list[Selection] | None = None  # per model: its best epoch by the monitor

    def state(self, k: int) -> TrainState:
        """Model k's train state, unstacked."""
        return jax.tree.map(lambda leaf: leaf[k], self.states)

    def single(self) -> RunResult:
        """Model 0 as a RunResult (what a run of one model returns)."""
        selection = self.selections[0] if self.selections else None
        selected = self.selected(0) if selection and selection.best_epoch else None
        run = (self.state(0), self.history[0], self.test[0], self.dataset)
        return RunResult(*run, selection, selected)

    def picked_model(self) -> int | None:
        """The model with the best monitored value at its selected epoch (None: no selection)."""
        return picked_model([s.to_json() for s in self.selections or []])

    def selected(self, k: int) -> Record | None:
        """Model k's record of the epoch validation selected (its last epoch if none was); None
        when metrics.jsonl lacks it (a line deleted by hand)."""
        best = self.selections[k].best_epoch if self.selections else None
        records = [r for r in self.history[k] if best is None or r["epoch"] == best]
        return records[-1] if records else None

    def summary(self) -> list[Record]:
        """Per peak lr: mean and `sample_std` over seeds of the final test accuracy and loss and,
        with a validation split, of each model's selected epoch's val and test accuracy. Diverged
        models (non-finite train loss) are counted in `diverged`, not averaged."""
        rows = []
        for lr in dict.fromkeys(self.lrs):  # first-seen order
            members = [k for k, model_lr in enumerate(self.lrs) if model_lr == lr]
            # The last train loss (the final test loss if metrics.jsonl lost every record).
            history, test = self.history, self.test
            loss = [
                history[k][-1]["train_loss"] if history[k] else test[k]["loss"] for k in members
            ]
            finite = [k for k, value in zip(members, loss, strict=True) if np.isfinite(value)]
            row = {"lr": lr, "seeds": [self.seeds[k] for k in members]}
            row["diverged"] = len(members) - len(finite)
            for key in ("accuracy", "loss"):
                row.update(_mean_std(f"test_{key}", [self.test[k][key] for k in finite]))
            if self.dataset.val_labels is not None:
                selected = [r for r in map(self.selected, finite) if r is not None]
                row["selected_epochs"] = [record["epoch"] for record in selected]
                for key in ("val_loss", "val_accuracy", "test_accuracy"):
                    row.update(_mean_std(f"selected_{key}", [record[key] for record in selected]))
            rows.append(row)
        return rows

    def pick(self) -> Record | None:
        """The summary row of the lr with the best mean val accuracy at the selected epochs;
        None without a validation split: a sweep never picks on test."""
        mean = "selected_val_accuracy_mean"  # absent without a validation split
        rows = [row for row in self.summary() if np.isfinite(row.get(mean, np.nan))]
        return max(rows, key=lambda row: row[mean], default=None)


def _mean_std(name: str, values: Sequence[float | None]) -> Record:
    """{name_mean, name_std}: sample std (ddof=1; 0 for one value); NaN for no value."""
    array = np.array([v for v in values if v is not None], np.float64)
    mean, std = (float(array.mean()), sample_std(array)) if len(array) else (np.nan, np.nan)
    return {f"{name}_mean": mean, f"{name}_std": std}


def picked_model(selections: Sequence[dict[str, Any] | None]) -> int | None:
    """Index of the model whose selection (Selection.to_json) has the lowest best value."""
    best = [s.get("best_value") if s else None for s in selections]
    values = [(value, k) for k, value in enumerate(best) if value is not None]
    return min(values)[1] if values else None


def per_model(metrics: dict[str, Any], num_models: int) -> dict[str, np.ndarray]:
    """Host metrics with a leading model axis (K = 1 gets one)."""
    return {k: np.asarray([v] if num_models == 1 else v) for k, v in metrics.items()}
