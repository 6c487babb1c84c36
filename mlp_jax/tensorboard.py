"""TensorBoard event files of a run (`DIR/tensorboard/`), written with tensorboardX (no TensorFlow).

A metric writer (writers.py): each epoch's record becomes scalars, e.g. `train/loss`,
`test/accuracy`, `lr`, `examples_per_second`; the per-step train loss, the confusion matrix (the
loop sends it at the run's last epoch) and the hyperparameters come too. Every scalar is placed
at the optimizer step the state has reached, so epoch curves and per-step curves share one x
axis, and a resumed run purges what it redoes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams as hparams_summaries

from mlp_jax.figures import plot_confusion

# A diverged model's NaN loss is a real value to log (the epoch line already says it diverged);
# tensorboardX would warn about it once per scalar, burying the run's own output.
logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)

Record = dict[str, Any]
SPLITS = ("train", "val", "test")  # record keys `<split>_<metric>` become tags `<split>/<metric>`
NOT_SCALARS = ("seed", "peak_lr")  # per-model constants of a sweep: they are hyperparameters
# Config fields about where and how a run executes, not what it learns: left out of hparams.
NOT_HPARAMS = frozenset(
    "workdir data_dir manual_dir fresh coordinator num_processes process_id devices profile".split()
)
# The metrics the hparams dashboard shows next to the hyperparameters (the last value of each).
HPARAM_METRICS = ("test/accuracy", "test/loss", "val/accuracy", "val/loss", "train/loss")


class TensorBoardWriter:
    """Writes `logdir`'s event files; several models (a sweep) get one sub-run each.

    `steps_per_epoch` converts epochs to optimizer steps. `log_every` N > 0 writes the train
    loss of every N-th step (from the epoch's `per_step_loss`); 0 writes only epoch values.
    `done_epochs` > 0 (a resume) purges anything logged after that epoch by the interrupted run.
    """

    def __init__(
        self,
        logdir: str,
        config: Mapping[str, Any],
        steps_per_epoch: int,
        class_names: Sequence[str],
        log_every: int = 10,
        done_epochs: int = 0,
        models: Sequence[Record] = ({},),
    ):
        self.logdir = logdir
        self.config = dict(config)
        self.steps_per_epoch = steps_per_epoch
        self.class_names = tuple(class_names)
        self.log_every = log_every
        self.done_epochs = done_epochs
        self.models = [dict(model) for model in models]  # a sweep's: {"seed", "peak_lr"} each
        self._runs: dict[int, SummaryWriter] = {}

    def write_epoch(
        self, records: Sequence[Record], arrays: Mapping[str, Any] | None = None
    ) -> None:
        """Each model's arrays (see writers.MetricWriter), then each numeric value of its record
        at the step reached after its epoch (so steps stay in order)."""
        for k, record in enumerate(records):
            if arrays is not None:
                self.write_arrays(
                    record["epoch"], {n: a[k] for n, a in arrays.items() if a is not None}, k
                )
            run = self._run(k)
            step = record["epoch"] * self.steps_per_epoch
            for key, value in record.items():
                if key in NOT_SCALARS or isinstance(value, bool) or value is None:
                    continue
                if isinstance(value, int | float):
                    run.add_scalar(scalar_tag(key), value, step)

    def write_arrays(self, epoch: int, arrays: Mapping[str, np.ndarray], k: int = 0) -> None:
        """Model k's arrays of an epoch: `per_step_loss` float[steps] and `confusion` int[C, C]
        (rows: true class), the test split's confusion matrix when the loop sends it."""
        run = self._run(k)
        per_step_loss = arrays.get("per_step_loss")
        if per_step_loss is not None and self.log_every > 0:
            first = (epoch - 1) * self.steps_per_epoch
            for i, loss in enumerate(np.asarray(per_step_loss)):
                step = first + i + 1  # the loss of the batch that step `step` trained on
                if step % self.log_every == 0:
                    run.add_scalar("train/loss_per_step", float(loss), step)
        confusion = arrays.get("confusion")
        if confusion is not None:
            figure = plot_confusion(confusion, self.class_names, f"test split, epoch {epoch}")
            canvas = FigureCanvasAgg(figure)
            canvas.draw()
            pixels = np.asarray(canvas.buffer_rgba())[..., :3]
            run.add_image(
                "test/confusion_matrix", pixels, epoch * self.steps_per_epoch, dataformats="HWC"
            )

    def close(self) -> None:
        for run in self._runs.values():
            run.close()
        self._runs.clear()

    def _run(self, k: int) -> SummaryWriter:
        if k not in self._runs:
            record = self.models[k] if k < len(self.models) else {}
            name = run_name(record) if len(self.models) > 1 else ""
            purge = self.done_epochs * self.steps_per_epoch + 1 if self.done_epochs else None
            # The default file name has whole seconds: a restart within one would overwrite it.
            run = SummaryWriter(
                os.path.join(self.logdir, name),
                purge_step=purge,
                filename_suffix=f".{time.time_ns()}",
            )
            values = hparam_values(self.config)
            for key in NOT_SCALARS:  # a sweep's model: its own seed and peak lr
                if key in record:
                    values[key] = record[key]
            for summary in hparams_summaries(values, dict.fromkeys(HPARAM_METRICS, 0.0)):
                run.file_writer.add_summary(summary)
            self._runs[k] = run
        return self._runs[k]


def scalar_tag(key: str) -> str:
    """Record key -> TensorBoard tag: `test_accuracy` -> `test/accuracy`, `lr` -> `lr`."""
    split, _, metric = key.partition("_")
    return f"{split}/{metric}" if split in SPLITS and metric else key


def run_name(record: Record) -> str:
    """A sweep model's sub-run: `seed0-lr0.05`."""
    return f"seed{record.get('seed', 0)}-lr{record.get('peak_lr', record.get('lr', 0)):g}"


def hparam_values(config: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The config as the hparams plugin takes it: scalars and strings ("512,256", "none")."""
    values = {}
    for name, value in config.items():
        if name in NOT_HPARAMS:
            continue
        if value is None:
            value = "none"
        elif isinstance(value, list | tuple):
            value = ",".join(map(str, value))
        values[name] = value
    return values
