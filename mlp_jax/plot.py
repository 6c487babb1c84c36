"""Figures of a run: learning curves, confusion matrix, weight templates, test predictions.

`python -m mlp_jax.plot --workdir DIR` draws the curves and the confusion matrix (from the newest
checkpoint) of a `python -m mlp_jax.train --workdir DIR` run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the object API needs no pyplot and no display backend

from mlp_jax.workdir import CONFIG, FIX, METRICS, RunFileError, Workdir
from mlp_jax.writers import print_line, stdout_error

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def class_names(dataset_name: str, num_classes: int) -> tuple[str, ...]:
    """Fashion-MNIST's article names when the dataset is Fashion-MNIST, else "0", "1", ..."""
    if "fashion" in dataset_name.lower() and num_classes == len(FASHION_MNIST_CLASSES):
        return FASHION_MNIST_CLASSES
    return tuple(str(i) for i in range(num_classes))


def dataset_title(dataset_name: str) -> str:
    """A readable dataset name for figure titles: "idx:fashion-mnist" -> "Fashion-MNIST"."""
    name = dataset_name.removeprefix("idx:").lower().replace("_", "-")
    return {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "mnist-subset": "mnist_subset"}.get(
        name, dataset_name
    )


def plot_curves(history: Sequence[dict[str, Any]], title: str) -> Figure:
    """Train, validation and test loss (left) and error rate (right) against the epoch.

    Train values are the running means over each epoch (training mode); validation (with
    --validation-split) and test values are measured after the epoch, at the epochs where the run
    evaluated. A --seeds/--lr-sweep run's records
    (one per model and epoch) give one pair of lines per model.
    """
    models = split_models(history)
    figure = Figure(figsize=(10, 4))
    loss_axes, error_axes = figure.subplots(1, 2)
    for name, records in models.items():
        epochs = [r["epoch"] for r in records]
        tested = [r for r in records if r.get("test_accuracy") is not None]
        test_epochs = [r["epoch"] for r in tested]
        prefix = f"{name}: " if name and len(models) > 1 else ""
        style = {"alpha": 0.8} if len(models) > 1 else {}
        loss_axes.plot(
            epochs, [r["train_loss"] for r in records], "o-", label=prefix + "train (running)",
            **style,
        )  # fmt: skip
        loss_axes.plot(
            test_epochs, [r["test_loss"] for r in tested], "s-", label=prefix + "test", **style
        )
        error_axes.plot(
            epochs, [100 * (1 - r["train_accuracy"]) for r in records], "o-",
            label=prefix + "train (running)", **style,
        )  # fmt: skip
        error_axes.plot(
            test_epochs, [100 * (1 - r["test_accuracy"]) for r in tested], "s-",
            label=prefix + "test", **style,
        )  # fmt: skip
        validated = [r for r in records if r.get("val_accuracy") is not None]
        if validated:  # with --validation-split: what model selection looked at
            val_epochs = [r["epoch"] for r in validated]
            loss_axes.plot(
                val_epochs, [r["val_loss"] for r in validated], "^--",
                label=prefix + "validation", **style,
            )  # fmt: skip
            error_axes.plot(
                val_epochs, [100 * (1 - r["val_accuracy"]) for r in validated], "^--",
                label=prefix + "validation", **style,
            )  # fmt: skip
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    error_axes.set(xlabel="epoch", ylabel="error rate (%)", title="error")
    for axes in (loss_axes, error_axes):
        axes.legend(fontsize=8 if len(models) > 1 else None)
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def split_models(history: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records per model: {"": all} for one run, {"seed 0 lr 0.1": [...], ...} for a sweep."""
    models: dict[str, list[dict[str, Any]]] = {}
    for record in history:
        name = (
            f"seed {record['seed']} lr {record['peak_lr']:g}"
            if "seed" in record and "peak_lr" in record
            else ""
        )
        models.setdefault(name, []).append(record)
    return models


def plot_confusion(confusion: np.ndarray, names: Sequence[str], title: str) -> Figure:
    """Counts of int[C, C] confusion (rows: true class, columns: predicted), diagonal included."""
    confusion = np.asarray(confusion)
    figure = Figure(figsize=(7.5, 6.5))
    axes = figure.subplots()
    image = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axes, label="test images")
    ticks = np.arange(len(names))
    axes.set_xticks(ticks, names, rotation=45, ha="right")
    axes.set_yticks(ticks, names)
    axes.set(xlabel="predicted class", ylabel="true class", title=title)
    threshold = confusion.max() / 2
    for (row, column), count in np.ndenumerate(confusion):
        color = "white" if count > threshold else "black"
        axes.text(column, row, str(count), ha="center", va="center", fontsize=7, color=color)
    figure.tight_layout()
    return figure


def plot_templates(
    kernel: np.ndarray, image_shape: Sequence[int], names: Sequence[str], title: str
) -> Figure:
    """Columns of a one-layer kernel float[H*W, C] as H x W images: one template per class.

    Red pixels raise the class score, blue ones lower it (a shared, symmetric colour scale).
    """
    kernel = np.asarray(kernel)
    height, width = image_shape[:2]
    limit = np.abs(kernel).max()
    columns = min(5, kernel.shape[1])
    rows = -(-kernel.shape[1] // columns)
    figure = Figure(figsize=(2.2 * columns + 1.2, 2.4 * rows + 0.6))
    grid = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    for column, axes in enumerate(grid):
        axes.set_xticks([])
        axes.set_yticks([])
        if column >= kernel.shape[1]:
            axes.set_axis_off()
            continue
        image = axes.imshow(
            kernel[:, column].reshape(height, width), cmap="bwr", vmin=-limit, vmax=limit
        )
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
    rows = -(-len(images) // columns)
    figure = Figure(figsize=(1.6 * columns, 1.9 * rows))
    grid = np.atleast_2d(figure.subplots(rows, columns))
    for index, axes in enumerate(grid.flat):
        axes.set_xticks([])
        axes.set_yticks([])
        if index >= len(images):
            axes.set_axis_off()
            continue
        wrong = predictions[index] != labels[index]
        axes.imshow(images[index, ..., 0], cmap="gray_r")
        axes.set_title(
            f"{names[labels[index]]}\n-> {names[predictions[index]]}",
            fontsize=8,
            color="red" if wrong else "black",
        )
        if wrong:  # a red frame, so misclassified images stand out at a glance
            for spine in axes.spines.values():
                spine.set(color="red", linewidth=2.5)
    figure.suptitle(title + "  (true -> predicted; red: misclassified)")
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------------------------
# The command line: figures of a finished run's workdir.


def read_run(workdir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config.json as a dict, metrics.jsonl as a list of per-epoch records) of a workdir.

    Works while the run is training (a torn last line is left out). Raises FileNotFoundError
    if either file is missing, RunFileError naming the line of one that is not a run's.
    """
    run = Workdir.of(workdir)
    for name in (CONFIG, METRICS):
        if not os.path.isfile(run.file(name)):
            raise FileNotFoundError(2, "not found", run.show(name))
    info = run.read_config(FIX, for_resume=False)
    records, _ = run.read_metrics(FIX)
    return info, records


def plot_workdir(workdir: str | Path, out_dir: str | Path | None = None, log=print) -> list[Path]:
    """Write curves.png, and confusion.png when the run left a checkpoint; return the paths."""
    workdir = Path(workdir)
    out_dir = Path(out_dir) if out_dir is not None else workdir
    info, history = read_run(workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = info["dataset"]
    sizes = "-".join(map(str, info.get("layer_sizes", [])))
    epochs = len({r["epoch"] for r in history})
    models = len(split_models(history))
    several = f", {models} models" if models > 1 else ""
    title = f"{dataset_title(dataset['name'])}: {sizes} MLP, {epochs} epochs{several}"
    written = [out_dir / "curves.png"]
    plot_curves(history, title).savefig(written[0], dpi=110)
    confusion, reason = confusion_from_checkpoint(workdir)
    if confusion is None:
        log(f"no confusion matrix: {reason}")
        return written
    names = class_names(dataset["name"], dataset["num_classes"])
    accuracy = np.trace(confusion) / confusion.sum()
    figure = plot_confusion(confusion, names, f"{title}\ntest accuracy {100 * accuracy:.2f}%")
    written.append(out_dir / "confusion.png")
    figure.savefig(written[-1], dpi=110)
    return written


def confusion_from_checkpoint(workdir: str | Path) -> tuple[np.ndarray | None, str]:
    """(int[C, C] test confusion of the newest checkpoint, "") or (None, why there is none)."""
    # Imported here: orbax and the data loaders are needed only when there is a model to score.
    from mlp_jax.checkpoint import NoCheckpointError, restore_checkpoint
    from mlp_jax.data import load_dataset
    from mlp_jax.steps import evaluate

    try:
        checkpoint = restore_checkpoint(str(workdir))
    except NoCheckpointError as error:
        return None, str(error)
    if getattr(checkpoint.config, "num_models", 1) != 1:
        return None, "the run trained several models at once (--seeds/--lr-sweep)"
    dataset = load_dataset(checkpoint.config)
    test = evaluate(checkpoint.state, dataset.test_images, dataset.test_labels)
    return np.asarray(test["confusion"]), ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlp_jax.plot",
        description="Draw the learning curves and confusion matrix of a finished training run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workdir", required=True, help="the --workdir of a finished run")
    parser.add_argument("--out", default=None, help="where to write the PNGs (default: --workdir)")
    args = parser.parse_args(argv)
    try:
        paths = plot_workdir(args.workdir, args.out, log=print_line)
    except FileNotFoundError as error:
        if args.out is not None and str(error.filename).startswith(args.out):
            return _out_error(args.out, error)
        print(
            f"mlp_jax.plot: error: {error.filename} not found; is --workdir a run's workdir?",
            file=sys.stderr,
        )
        return 2
    except RunFileError as error:
        print(f"mlp_jax.plot: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # --out is a file, under a file, read-only, on a full disk
        return _out_error(args.out if args.out is not None else args.workdir, error)
    for path in paths:
        print_line(f"wrote {path}")
    if stdout_error() is not None:
        return 1
    return 0


def _out_error(out: str, error: OSError) -> int:
    reason = error.strerror or str(error)
    print(
        f"mlp_jax.plot: error: --out: cannot write the figures to {out} ({reason}); "
        "give a writable directory",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
