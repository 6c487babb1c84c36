"""Figures of a run, drawn with matplotlib's object API (no pyplot, no display): learning curves,
the confusion matrix, weight templates, test predictions. `python -m mlp_jax.plot` draws a
workdir's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the object API needs no pyplot and no display backend
from matplotlib.ticker import MaxNLocator

from mlp_jax.config import ConfigError

TITLES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "mnist-subset": "mnist_subset"}
CURVES = (("train", "o-", "train (running)"), ("val", "^--", "validation"), ("test", "s-", "test"))


def dataset_title(dataset_name: str) -> str:
    """A readable dataset name for figure titles: "idx:fashion-mnist" -> "Fashion-MNIST"."""
    name = dataset_name.removeprefix("idx:").lower().replace("_", "-")
    return TITLES.get(name, dataset_name)


def save_figure(figure: Figure, path: Path, flag: str) -> None:
    """figure.savefig(path); a folder that cannot be written is a ConfigError naming `flag`."""
    try:
        figure.savefig(path, dpi=110)
    except OSError as error:
        raise ConfigError(
            flag, f"cannot write {path} ({error.strerror}); give a writable folder"
        ) from None


def plot_curves(history: Sequence[dict[str, Any]], title: str) -> Figure:
    """Train (running means over each epoch), validation and test loss (left) and error rate
    (right) against the epoch, at the epochs where each was measured. A --seeds/--lr-sweep run's
    records give, per peak lr, the mean over seeds as a line and their range as a band."""
    groups: dict[str, dict[Any, list[dict[str, Any]]]] = {}  # peak lr -> seed -> its records
    for record in history:
        name = f"lr {record['peak_lr']:g}" if "peak_lr" in record else ""
        groups.setdefault(name, {}).setdefault(record.get("seed"), []).append(record)
    figure = Figure(figsize=(10, 4))
    loss_axes, error_axes = figure.subplots(1, 2)
    for name, seeds in groups.items():
        prefix = f"{name}: " if len(groups) > 1 else ""
        for split, style, label in CURVES:
            # per model, its records of the epochs where `split` was scored
            scored = [
                {r["epoch"]: r for r in rs if r.get(f"{split}_accuracy") is not None}
                for rs in seeds.values()
            ]
            epochs = sorted(set.intersection(*map(set, scored)))  # those of every model
            if not epochs:
                continue
            table = [[by_epoch[e] for e in epochs] for by_epoch in scored]  # [models][epochs]
            loss = np.array([[r[f"{split}_loss"] for r in row] for row in table])
            error = 100 * (1 - np.array([[r[f"{split}_accuracy"] for r in row] for row in table]))
            for axes, values in ((loss_axes, loss), (error_axes, error)):
                (line,) = axes.plot(epochs, values.mean(0), style, label=prefix + label)
                if len(seeds) > 1:  # the spread over seeds
                    axes.fill_between(
                        epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.2
                    )
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    error_axes.set(xlabel="epoch", ylabel="error rate (%)", title="error")
    for axes in (loss_axes, error_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        axes.legend(fontsize=8 if len(groups) > 1 else None)
        axes.grid(alpha=0.3)
    several = any(len(seeds) > 1 for seeds in groups.values())
    figure.suptitle(title + ("\n(lines: mean over seeds; bands: their range)" if several else ""))
    figure.tight_layout()
    return figure


def plot_confusion(confusion: np.ndarray, names: Sequence[str], title: str) -> Figure:
    """Counts of int[C, C] confusion (rows: true class, columns: predicted), diagonal included."""
    confusion = np.asarray(confusion)
    figure = Figure(figsize=(7.5, 6.5))
    axes = figure.subplots()
    figure.colorbar(axes.imshow(confusion, cmap="Blues"), ax=axes, label="test images")
    ticks = np.arange(len(names))
    axes.set_xticks(ticks, names, rotation=45, ha="right")
    axes.set_yticks(ticks, names)
    axes.set(xlabel="predicted class", ylabel="true class", title=title)
    for (row, column), count in np.ndenumerate(confusion):
        color = "white" if count > confusion.max() / 2 else "black"
        axes.text(column, row, str(count), ha="center", va="center", fontsize=7, color=color)
    figure.tight_layout()
    return figure


def plot_templates(
    kernel: np.ndarray, image_shape: Sequence[int], names: Sequence[str], title: str
) -> Figure:
    """Columns of a one-layer kernel float[H*W, C] as H x W images, one template per class: red
    pixels raise the class score, blue ones lower it (a shared, symmetric colour scale)."""
    kernel = np.asarray(kernel)
    limit, classes = np.abs(kernel).max(), kernel.shape[1]
    figure, grid = _image_grid(classes, min(5, classes), (2.2, 2.4), (1.2, 0.6))
    for column, axes in enumerate(grid[:classes]):
        template = kernel[:, column].reshape(image_shape[:2])
        image = axes.imshow(template, cmap="bwr", vmin=-limit, vmax=limit)
        axes.set_title(names[column], fontsize=10)
    figure.colorbar(image, ax=list(grid), shrink=0.8, label="weight (red: evidence for the class)")
    figure.suptitle(title)
    return figure


def plot_predictions(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    names: Sequence[str],
    title: str,
    columns: int = 8,
) -> Figure:
    """A grid of images uint8[N, H, W, 1] titled "true -> predicted"; misclassified ones in red."""
    figure, grid = _image_grid(len(images), columns, (1.6, 1.9))
    for image, label, predicted, axes in zip(images, labels, predictions, grid, strict=False):
        axes.imshow(image[..., 0], cmap="gray_r")
        color = "red" if predicted != label else "black"
        axes.set_title(f"{names[label]}\n-> {names[predicted]}", fontsize=8, color=color)
        if predicted != label:  # a red frame, so misclassified images stand out at a glance
            for spine in axes.spines.values():
                spine.set(color="red", linewidth=2.5)
    figure.suptitle(title + "  (true -> predicted; red: misclassified)")
    figure.tight_layout()
    return figure


def _image_grid(count: int, columns: int, cell: tuple, margin=(0, 0)) -> tuple[Figure, np.ndarray]:
    """A figure of `count` tick-less axes, `columns` per row, each `cell` inches (plus `margin`):
    the axes flat, with those after the first `count` hidden."""
    rows = -(-count // columns)
    figure = Figure(figsize=(cell[0] * columns + margin[0], cell[1] * rows + margin[1]))
    grid = figure.subplots(rows, columns, squeeze=False, subplot_kw={"xticks": [], "yticks": []})
    for axes in grid.ravel()[count:]:
        axes.set_axis_off()
    return figure, grid.ravel()


def plot_lr_find(rows: Sequence[dict], suggested: float, title: str) -> Figure:
    """lr_find's figure: validation loss and accuracy against the peak lr (log axis), the
    suggestion marked; `rows` hold "lr", "val_loss", "val_accuracy" (NaN where diverged)."""
    figure = Figure(figsize=(9, 3.8))
    loss, accuracy = figure.subplots(1, 2)
    lrs = [row["lr"] for row in rows]
    loss.plot(lrs, [row["val_loss"] for row in rows], "o-")
    accuracy.plot(lrs, [100 * row["val_accuracy"] for row in rows], "o-")
    for axes, label in ((loss, "validation loss"), (accuracy, "validation accuracy (%)")):
        axes.set(xscale="log", xlabel="peak learning rate", ylabel=label)
        axes.axvline(suggested, color="C3", linestyle="--", label=f"suggested {suggested:.3g}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
