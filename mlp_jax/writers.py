"""One way for metrics to leave the loop, as CLU's metric writers: the loop hands each epoch's
records to every writer; the console line, the progress bar and metrics.jsonl are writers.

A record is a flat dict of JSON values: `epoch`, `train_loss`, `train_accuracy`, `test_loss`,
`test_accuracy` (None in epochs without evaluation), `lr`, `epoch_seconds`,
`examples_per_second`, and whatever else the loop adds (e.g. `val_loss`, `seed`, `peak_lr`).
Writers show the keys that are present and skip the rest.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm import tqdm

from mlp_jax.workdir import Workdir

Record = dict[str, Any]


class MetricWriter(Protocol):
    """Receives each epoch's records: one per model (a single run has one)."""

    def write_epoch(self, records: Sequence[Record]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ArrayWriter(Protocol):
    """A writer that also shows arrays (TensorBoard): the loop hands it a single model's
    `per_step_loss` float[steps] and the test split's `confusion` int[C, C] (None in epochs
    without evaluation) before each `write_epoch`."""

    def write_arrays(self, epoch: int, arrays: Mapping[str, Any]) -> None: ...


_stdout_error: list[OSError] = []  # the first failed write to stdout, if any


def print_line(line: str) -> None:
    """Print one line to stdout, above the progress bar when there is one.

    If stdout fails (a pager quit: EPIPE; a full disk: ENOSPC), the line and all later ones
    are dropped, fd 1 is pointed at /dev/null (so no exit-time flush fails either), and
    `stdout_error()` says why: the loop then saves a checkpoint and stops.
    """
    if _stdout_error:
        return
    try:
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
    except OSError as error:
        _stdout_error.append(error)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def stdout_error() -> OSError | None:
    """Why stdout could not be written, or None while it works."""
    return _stdout_error[0] if _stdout_error else None


class ConsoleWriter:
    """One line per epoch through `log`: the record's values, or mean ± std over many models."""

    def __init__(self, epochs: int, log: Callable[[str], None] = print_line):
        self.epochs, self.log = epochs, log

    def write_epoch(self, records: Sequence[Record]) -> None:
        if len(records) == 1:
            self.log(format_epoch(records[0], self.epochs))
        else:
            self.log(format_models_epoch(records, self.epochs))

    def close(self) -> None:
        pass


class ProgressBar:
    """A tqdm bar over the epochs, shown only when stdout is a terminal."""

    def __init__(self, epochs: int, done: int = 0):
        self._bar = tqdm(desc="epochs", initial=done, total=epochs, disable=not sys.stdout.isatty())

    def write_epoch(self, records: Sequence[Record]) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


class MetricsFileWriter:
    """DIR/metrics.jsonl: one line per record, fsynced before the epoch's checkpoint is saved."""

    def __init__(self, workdir: Workdir):
        self.workdir = workdir

    def write_epoch(self, records: Sequence[Record]) -> None:
        self.workdir.append_metrics(records)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- formatting

# (prefix, label) of the loss/accuracy pairs a record may hold, in the order they are shown.
_SPLITS = (("train", "train"), ("val", "val"), ("test", "test"))


def format_epoch(record: Record, epochs: int) -> str:
    """`epoch 3/10  train loss 0.2 err 5.00%  [val ...]  test loss 0.1 acc 97.00%  lr ...  1.2s`"""
    parts = [f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}"]
    for prefix, label in _SPLITS:
        loss, accuracy = record.get(f"{prefix}_loss"), record.get(f"{prefix}_accuracy")
        if loss is None and accuracy is None:
            continue
        text = label
        if loss is not None:
            text += f" loss {loss:.4f}"
        if accuracy is not None:  # training shows the error rate, as the lectures do
            text += (
                f" err {100 * (1 - accuracy):5.2f}%"
                if prefix == "train"
                else f" acc {100 * accuracy:5.2f}%"
            )
        parts.append(text)
    if record.get("grad_norm") is not None:  # only with --diagnostics
        parts.append(f"grad norm {record['grad_norm']:.3g}")
    if record.get("lr") is not None:
        parts.append(f"lr {record['lr']:.4g}")
    if record.get("epoch_seconds") is not None:
        speed = record.get("examples_per_second")
        parts.append(
            f"{record['epoch_seconds']:.2f}s" + (f" {speed:,.0f} ex/s" if speed is not None else "")
        )
    return "  ".join(parts)


def format_models_epoch(records: Sequence[Record], epochs: int) -> str:
    """One line per epoch for many models: per peak learning rate, mean ± std over its seeds
    (sample std, as SweepResult.summary; models of different learning rates are never pooled).
    """
    from mlp_jax.sweep import sample_std  # the one std convention; JAX only when sweeping

    first = records[0]
    groups: dict[Any, list[Record]] = {}
    for record in records:
        groups.setdefault(record.get("peak_lr"), []).append(record)
    parts = [f"epoch {first['epoch']:>{len(str(epochs))}}/{epochs}"]
    for lr, members in groups.items():
        loss = np.array([r["train_loss"] for r in members])
        text = f"lr {lr:g}: " if lr is not None and len(groups) > 1 else ""
        text += f"train loss {np.mean(loss):.4f} ± {sample_std(loss):.4f}"
        for split in ("val", "test"):
            if members[0].get(f"{split}_accuracy") is not None:
                accuracy = 100 * np.array([r[f"{split}_accuracy"] for r in members])
                text += f" {split} acc {np.mean(accuracy):.2f} ± {sample_std(accuracy):.2f}%"
        parts.append(text)
    total = len(records) * first["examples_per_second"]
    parts.append(f"{first['epoch_seconds']:.2f}s {total:,.0f} ex/s ({len(records)} models)")
    return "  ".join(parts)
