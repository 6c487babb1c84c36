"""Model selection on the host, between epochs: the monitored value, early stopping, the best epoch.

Its state is plain JSON: it travels in each checkpoint's record, so a resumed run stops exactly
where an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from flax.training.early_stopping import EarlyStopping

from mlp_jax.config import Config


def monitored_value(record: dict[str, Any], monitor: str) -> float | None:
    """The value of `monitor` in an epoch's record, as a loss (lower is better; accuracies are
    negated), or None if absent."""
    value = record.get(monitor)
    if value is None:
        return None
    return -float(value) if monitor.endswith("accuracy") else float(value)


@dataclasses.dataclass(frozen=True)
class Selection:
    """Where model selection stands after some epochs: flax's EarlyStopping plus the best epoch.
    Without --early-stopping the patience is infinite: `should_stop` is never set."""

    monitor: str
    early_stopping: EarlyStopping
    best_epoch: int | None = None

    def update(self, epoch: int, record: dict[str, Any]) -> Selection:
        """After `epoch`'s evaluation; epochs without the monitored value change nothing."""
        value = monitored_value(record, self.monitor)
        if value is None:
            return self
        stopper = self.early_stopping.update(value)
        best = epoch if stopper.has_improved else self.best_epoch
        return dataclasses.replace(self, early_stopping=stopper, best_epoch=best)

    @property
    def improved(self) -> bool:
        """Whether the last update set a new best (its epoch is then `best_epoch`)."""
        return bool(self.early_stopping.has_improved)

    @property
    def should_stop(self) -> bool:
        return bool(self.early_stopping.should_stop)

    def to_json(self) -> dict[str, Any]:
        """The state as JSON; `selection_from_json` reads it back."""
        stop, best = self.early_stopping, float(self.early_stopping.best_metric)
        return {
            "monitor": self.monitor,
            "best_epoch": self.best_epoch,
            "best_value": best if math.isfinite(best) else None,  # JSON has no inf (none seen yet)
            "patience_count": int(stop.patience_count),
            "should_stop": bool(stop.should_stop),
            "has_improved": bool(stop.has_improved),
        }


def new_selection(config: Config) -> Selection | None:
    """The selection state before epoch 1, or None when nothing is monitored. --early-stopping P
    stops after P evaluations in a row without improvement (Keras' patience); flax's
    EarlyStopping stops after its `patience` + 1 of them, so it gets P - 1."""
    if config.monitored is None:
        return None
    patience = math.inf if config.early_stopping is None else config.early_stopping - 1
    return Selection(config.monitored, EarlyStopping(min_delta=0.0, patience=patience))


def selection_from_json(
    config: Config, saved: dict[str, Any] | None, patience_changed: bool = False
) -> Selection | None:
    """The selection state a checkpoint recorded (see Selection.to_json), with today's patience;
    if that changed, whether to stop is decided again by it (a stopped run may train on)."""
    selection = new_selection(config)
    if selection is None or saved is None or saved.get("monitor") != selection.monitor:
        return selection
    best, count, stop = saved["best_value"], int(saved["patience_count"]), saved["should_stop"]
    if patience_changed:  # flax stops at the update that finds `patience` flat ones before it
        stop = count > selection.early_stopping.patience
    stopper = selection.early_stopping.replace(
        best_metric=math.inf if best is None else float(best),
        patience_count=count,
        should_stop=bool(stop),
        has_improved=bool(saved["has_improved"]),
    )
    return dataclasses.replace(selection, early_stopping=stopper, best_epoch=saved["best_epoch"])
