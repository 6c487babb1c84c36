"""Study 2 (lecture: serial vs mini-batch vs full batch): batch 1, 12, 128, 1000 and the whole set.

python -m experiments.batch_size [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
Momentum SGD at a constant lr of 0.05 * min(1, batch / 128): the linear-scaling rule below 128,
so that the small batches stay stable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from experiments.common import (
    Study,
    curve_rows,
    final,
    make_parser,
    mean_curve,
    pm,
    print_table,
)

BATCH_SIZES = (1, 12, 128, 1000, None)  # None: the whole training set (full-batch GD)
QUICK_BATCH_SIZES = (16, None)
BASE_LR, BASE_BATCH = 0.05, 128


def lr_for(batch_size: int) -> float:
    """Linear scaling below BASE_BATCH: the step per example stays the same."""
    return BASE_LR * min(1.0, batch_size / BASE_BATCH)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0]).parse_args(argv)
    study = Study("batch_size", args)
    rows, table, curves = [], [], {}
    for batch_size in QUICK_BATCH_SIZES if study.quick else BATCH_SIZES:
        batch_size = batch_size or study.dataset.num_train
        config = study.base.replace(
            batch_size=batch_size, lr=lr_for(batch_size), schedule="constant"
        )
        name = (
            "full batch"
            if batch_size == study.dataset.num_train
            else "serial"
            if batch_size == 1
            else "mini-batch"
        )
        label = f"{name} {batch_size}"
        # Separate runs, not one vmapped program: the wall-seconds axis is one model's own time.
        results = study.run_each(config, label)
        for seed, result in enumerate(results):
            rows += curve_rows(label, seed, result, batch_size=batch_size, base_lr=config.lr)
        seconds = [sum(r["epoch_seconds"] for r in res.history) for res in results]
        curves[label] = (
            mean_curve(results, "test_accuracy"),
            np.cumsum(mean_curve(results, "epoch_seconds")),
        )
        table.append(
            {
                "regime": label,
                "lr": f"{config.lr:.3g}",
                "steps/epoch": -(-study.dataset.num_train // batch_size),
                "test accuracy (%)": pm(final(results)),
                "train seconds": f"{np.mean(seconds):.1f}",
                "examples/s": f"{np.mean(mean_curve(results, 'examples_per_second')):,.0f}",
            }
        )
    print_table(
        f"Batch regimes: {study.title}, {study.seeds} seed(s), {study.base.epochs} epochs", table
    )
    study.save(rows, _figure(study, curves))
    return 0


def _figure(study: Study, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Top: every regime on the full scale; bottom: the same axes zoomed on the mini-batches, so
    the full batch's low curve does not squash them. One colour per regime in all four panels."""
    figure = Figure(figsize=(13, 8.5))
    (by_epoch, by_second), (zoom_epoch, zoom_second) = figure.subplots(2, 2)
    colors = {label: f"C{index}" for index, label in enumerate(curves)}
    mini = [acc for label, (acc, _) in curves.items() if not label.startswith("full")]
    low = min(float(np.min(acc[1:])) if len(acc) > 1 else float(acc[0]) for acc in mini)
    for label, (accuracy, seconds) in curves.items():
        epochs = np.arange(1, len(accuracy) + 1)
        for axes in (by_epoch, zoom_epoch):
            axes.plot(epochs, 100 * accuracy, "o-", ms=4, color=colors[label], label=label)
        for axes in (by_second, zoom_second):
            axes.plot(seconds, 100 * accuracy, "o-", ms=4, color=colors[label], label=label)
    by_epoch.set(ylabel="test accuracy (%)", title="per epoch (same data seen)", ylim=(0, 100))
    by_second.set(title="per wall-clock second", ylim=(0, 100))
    zoom_epoch.set(ylabel="test accuracy (%), zoomed", ylim=(100 * low - 1, None))
    zoom_second.set(ylim=(100 * low - 1, None))
    for axes in (by_epoch, zoom_epoch):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in (by_second, zoom_second):
        axes.set(xlabel="training seconds (log scale, compile excluded)", xscale="log")
    for axes in (by_epoch, by_second, zoom_epoch, zoom_second):
        axes.grid(alpha=0.3)
    by_epoch.legend(title="batch size", loc="lower right")
    figure.suptitle(
        f"{study.title}: serial vs mini-batch vs full batch "
        f"({study.base.layers}-layer MLP, momentum SGD, constant lr 0.05·min(1, B/128), "
        f"mean of {study.seeds} seed(s))"
    )
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
