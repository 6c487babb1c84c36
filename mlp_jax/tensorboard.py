"""TensorBoard event files of a run (`DIR/tensorboard/`), written with tensorboardX (no TensorFlow):
a metric writer (writers.py) that puts every value at the optimizer step reached, so epoch and
per-step curves share one x axis, and a resumed run purges what it redoes."""

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
from mlp_jax.report import Record
from mlp_jax.workdir import WorkdirError, reason
from mlp_jax.writers import MetricWriter

# A diverged model's NaN loss is a real value to log (the epoch line already says it diverged);
# tensorboardX would warn about it once per scalar, burying the run's own output.
logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)

# Config fields about where and how a run executes, not what it learns: left out of hparams.
NOT_HPARAMS = frozenset(
    "workdir data_dir manual_dir fresh coordinator num_processes process_id devices profile".split()
)

# The metrics the hparams dashboard shows next to the hyperparameters (the last value of each).
HPARAM_METRICS = ("test/accuracy", "test/loss", "val/accuracy", "val/loss", "train/loss")


class TensorBoardWriter(MetricWriter):
    """Writes `logdir`'s event files; a sweep's models get one sub-run each, named by their seed
    and peak lr (e.g. `seed0-lr0.05`). `purge_step` (a resume) drops what the interrupted run
    logged from that step on; `class_names` label the confusion matrix."""

    def __init__(self, logdir: str, class_names: Sequence[str], purge_step=None, shown=None):
        self.logdir, self.class_names, self.purge_step = logdir, tuple(class_names), purge_step
        self.shown = shown or logdir  # the folder as the user typed it, for messages
        self._runs: list[SummaryWriter] = []

    def write_hparams(self, hparams: Sequence[Record]) -> None:
        for record in hparams:
            name = f"seed{record['seed']}-lr{record['peak_lr']:g}" if len(hparams) > 1 else ""
            path, purge = os.path.join(self.logdir, name), self.purge_step
            # The default file name has whole seconds: a restart within one would overwrite it.
            try:
                run = SummaryWriter(path, purge_step=purge, filename_suffix=f".{time.time_ns()}")
            except OSError as error:  # e.g. a read-only folder
                raise WorkdirError(f"cannot write {self.shown}: {reason(error)}") from None
            metrics = dict.fromkeys(HPARAM_METRICS, 0.0)
            for summary in hparams_summaries(hparam_values(record), metrics):
                run.file_writer.add_summary(summary)
            self._runs.append(run)

    def write_scalars(self, step: int, scalars: Sequence[Record]) -> None:
        """Each model's numbers, tagged by `scalar_tag` (a sweep's seed and peak lr: hparams)."""
        for run, values in zip(self._runs, scalars, strict=True):
            for key, value in values.items():
                if isinstance(value, int | float) and key not in ("seed", "peak_lr"):
                    run.add_scalar(scalar_tag(key), value, step)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """A confusion matrix int[C, C] per model, drawn as a labelled heat map."""
        for name, matrices in images.items():
            for run, matrix in zip(self._runs, matrices, strict=True):
                figure = plot_confusion(matrix, self.class_names, f"test split, step {step}")
                canvas = FigureCanvasAgg(figure)
                canvas.draw()
                pixels = np.asarray(canvas.buffer_rgba())[..., :3]
                run.add_image(name, pixels, step, dataformats="HWC")

    def close(self) -> None:
        for run in self._runs:
            run.close()
        self._runs.clear()


def scalar_tag(key: str) -> str:
    """Record key -> TensorBoard tag: `test_accuracy` -> `test/accuracy`, `lr` -> `lr`,
    `train_loss_per_step` -> `train/loss_per_step`."""
    split, _, metric = key.partition("_")
    return f"{split}/{metric}" if split in ("train", "val", "test") and metric else key


def hparam_values(config: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The config as the hparams plugin takes it: scalars and strings ("512,256", "none")."""
    values = {name: value for name, value in config.items() if name not in NOT_HPARAMS}
    for name, value in values.items():
        if isinstance(value, list | tuple):
            values[name] = ",".join(map(str, value))
    return {name: "none" if value is None else value for name, value in values.items()}
