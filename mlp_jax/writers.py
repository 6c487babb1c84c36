"""How metrics leave the loop, as CLU's metric writers (`write_scalars`, `write_images`,
`write_hparams`): the console line and progress bar, metrics.jsonl, TensorBoard and the profiler
are writers that `write_epoch` feeds; and `print_line`: stdout that may fail (a pager quit)."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from mlp_jax import report
from mlp_jax.report import Log, Record
from mlp_jax.workdir import CheckpointError, WorkdirError


class MetricWriter:
    """CLU's metric-writer interface with a model axis: one value per model (K >= 1). `step` is
    the optimizer step reached. Records hold JSON values; writers skip the keys they lack. A
    writer of whole epochs overrides `write_epoch`; a new logger is a new writer."""

    def write_scalars(self, step: int, scalars: Sequence[Record]) -> None:
        """One mapping per model: an epoch's record (it has `epoch`), or `train_loss_per_step`."""
        if "epoch" in scalars[0]:
            self.write_epoch(scalars)

    def write_epoch(self, records: Sequence[Record]) -> None:
        """One epoch's metrics.jsonl record per model."""

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """`test/confusion_matrix` int[K, C, C] (rows: true class), at the run's last epoch."""

    def write_hparams(self, hparams: Sequence[Record]) -> None:
        """Once, before epoch 1: each model's hyperparameters (the config, with its seed and lr)."""

    def close(self) -> None:
        """Flush and let go of what the writer holds."""


def write_epoch(
    writers: Sequence[MetricWriter],
    step: int,
    records: Sequence[Record],
    per_step_loss: np.ndarray,
    confusion: np.ndarray | None,
    log_every: int,
) -> None:
    """An epoch that ends at `step` to every writer: every `log_every`-th step's train loss
    (from float[K, steps]; 0: none), the records, then the test confusion matrices if given."""
    first = step - per_step_loss.shape[1]  # the steps this epoch took are first + 1 .. step
    logged = range((-first - 1) % log_every, per_step_loss.shape[1], log_every) if log_every else ()
    for i in logged:  # column i: the loss of the batch that step first + i + 1 trained on
        values = [{"train_loss_per_step": float(loss)} for loss in per_step_loss[:, i]]
        for writer in writers:
            writer.write_scalars(first + i + 1, values)
    for writer in writers:  # metrics.jsonl first: a kill before the checkpoint leaves a line
        writer.write_scalars(step, records)  # that resume drops
    for writer in writers if confusion is not None else ():
        writer.write_images(step, {"test/confusion_matrix": confusion})


def close_all(closers: Sequence[Any]) -> None:
    """Close each; while an error is on its way out (e.g. a full disk), a failing close adds
    nothing to it; otherwise the first failure is raised after all are closed."""
    failures = []
    for closer in closers:
        try:
            closer.close()
        except Exception as error:
            failures.append(error)
    if failures and sys.exc_info()[1] is None:
        if isinstance(failures[0], WorkdirError | CheckpointError):  # already one clear line
            raise failures[0]
        raise WorkdirError(f"cannot finish writing the run: {failures[0]}") from None


class CallbackWriter(MetricWriter):
    """`on_epoch(epoch, records)` as a writer (train_many's hook; metrics.jsonl's lines)."""

    def __init__(self, on_epoch: Callable[[int, list[Record]], None]):
        self.on_epoch = on_epoch

    def write_epoch(self, records: Sequence[Record]) -> None:
        self.on_epoch(records[0]["epoch"], list(records))


_stdout_error: list[OSError] = []  # the first failed write to stdout, if any


def print_line(line: str) -> None:
    """Print one line to stdout, above the progress bar when there is one. If stdout fails (a
    pager quit: EPIPE; a full disk: ENOSPC), this and later lines are dropped, fd 1 becomes
    /dev/null (no exit-time flush fails) and `stdout_error()` says why: the loop saves and stops."""
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


def adopt_closed_stdout() -> None:
    """A process started with stdout closed (`>&-`) has sys.stdout None: give it /dev/null
    and record the failure, so that it is handled as a pager that quit (saved, then stopped)."""
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        _stdout_error.append(OSError(errno.EBADF, "stdout is closed"))


def stdout_error() -> OSError | None:
    """Why stdout could not be written, or None while it works."""
    return _stdout_error[0] if _stdout_error else None


class ConsoleWriter(MetricWriter):
    """One line per epoch through `log` (the record's values, or mean ± std over many models),
    under a tqdm bar over the epochs when stdout is a terminal."""

    def __init__(self, epochs: int, log: Log = print_line, done: int = 0):
        self.epochs, self.log = epochs, log
        self.bar = tqdm(desc="epochs", initial=done, total=epochs, disable=not sys.stdout.isatty())

    def write_epoch(self, records: Sequence[Record]) -> None:
        if len(records) == 1:
            self.log(report.format_epoch(records[0], self.epochs))
        else:
            self.log(report.format_models_epoch(records, self.epochs))
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class Profiler(MetricWriter):
    """--profile A:B: a jax.profiler trace into `folder`, from the end of epoch A-1's line (the
    run's start for A = 1) to the end of epoch B's: an epoch is one compiled program, the finest
    unit. A resumed run traces only the epochs it still runs."""

    def __init__(self, folder: str, first: int, last: int, done: int):
        self.folder, self.first, self.last, self.active = folder, first, last, False
        self._trace(first <= done + 1 <= last)

    def write_epoch(self, records: Sequence[Record]) -> None:
        epoch = records[0]["epoch"]
        if epoch in (self.first - 1, self.last):
            self._trace(epoch == self.first - 1)

    def close(self) -> None:
        self._trace(False)

    def _trace(self, on: bool) -> None:
        import jax  # not at the top: writers.py loads before JAX (train's first line)

        if on and not self.active:
            jax.profiler.start_trace(self.folder)
        elif self.active and not on:
            jax.profiler.stop_trace()
        self.active = on
