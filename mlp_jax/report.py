"""Every line of text a run prints about its results: the epoch line (one model, or mean ± std
over many), the selection and sweep reports at the end, and the confusion matrix as text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # report.py imports numpy only: train's first line prints before JAX loads
    from mlp_jax.results import SweepResult

Record = dict[str, Any]  # one metrics.jsonl line
Log = Callable[[str], None]


def describe_dataset(dataset: Any, fraction: float, seconds: float | None) -> list[str]:
    """The lines a run logs about its data (`seconds`: loading time, None when given)."""
    took = f" (loaded in {seconds:.2f}s)" if seconds is not None else ""
    lines = [dataset.note] if dataset.note else []
    lines.append(
        f"dataset: {dataset.name} ({dataset.source}): {dataset.num_train} train / "
        f"{dataset.num_test} test, images {dataset.image_shape} uint8, "
        f"{dataset.num_classes} classes{took}"
    )
    if dataset.validation is not None:
        lines.append(
            f"validation: {dataset.num_val} train images held out ({fraction:g}, "
            "stratified, the same for every seed); the test split is only reported"
        )
    return lines


def describe_models(
    config: Any, sizes: Sequence[int], lrs: Sequence[float], num_params: int, seconds: float
) -> str:
    """The line a run logs about its model (e.g. "model: 784-16-10 MLP, 12,730 parameters ...")
    or, for several, their shape, seeds and peak lrs."""
    shape, peaks = "-".join(map(str, sizes)), ", ".join(f"{lr:g}" for lr in dict.fromkeys(lrs))
    if len(lrs) == 1:
        return f"model: {shape} MLP, {num_params:,} parameters (initialised in {seconds:.2f}s)"
    return (
        f"models: {len(lrs)} {shape} MLPs in one program (seeds "
        f"{config.seed}..{config.seed + config.seeds - 1} x peak lr {peaks}), "
        f"{config.epochs} epoch{'s' * (config.epochs != 1)} of batch {config.batch_size}"
    )


def describe_training(config: Any, batches: int, lr: float) -> str:
    """The line a run of one model logs about its optimisation."""
    return (
        f"training: {config.epochs} epoch{'s' * (config.epochs != 1)} x {batches} steps of "
        f"batch {config.batch_size} ({config.optimizer}, lr {lr:g}, {config.schedule} schedule)"
    )


def describe_compiled(seconds: float, cache: str | None, num_models: int) -> str:
    """The line a run logs once its programs are compiled."""
    of_all = " of all models" if num_models > 1 else ""
    cached = f"compilation cache {cache}" if cache else "compilation cache off"
    return f"compiled the epoch and the evaluation{of_all} in {seconds:.2f}s ({cached})"


def describe_early_stop(config: Any, epoch: int, num_models: int) -> str:
    """The line a run logs when early stopping ends it."""
    what = f"no model's {config.monitored} has" if num_models > 1 else f"{config.monitored} has not"
    n = config.early_stopping
    return f"early stopping after epoch {epoch}: {what} improved for {n} evaluations"


def sample_std(values: Sequence[float] | np.ndarray) -> float:
    """The std of every "mean ± std" this package prints: over seeds, ddof=1 (0 for one)."""
    values = np.asarray(values, np.float64)
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def format_epoch(record: Record, epochs: int) -> str:
    """`epoch 3/10  train loss 0.2 err 5.00%  [val ...]  test loss 0.1 acc 97.00%  lr ...  1.2s`"""
    parts = [f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}"]
    for split in ("train", "val", "test"):
        loss, accuracy = record.get(f"{split}_loss"), record.get(f"{split}_accuracy")
        text = split + (f" loss {loss:.4f}" if loss is not None else "")
        if accuracy is not None and split == "train":  # the error rate, as the lectures show it
            text += f" err {100 * (1 - accuracy):5.2f}%"
        elif accuracy is not None:
            text += f" acc {100 * accuracy:5.2f}%"
        if text != split:
            parts.append(text)
    tail = (("grad_norm", "grad norm {:.3g}"), ("lr", "lr {:.4g}"), ("epoch_seconds", "{:.2f}s"))
    parts += [text.format(record[key]) for key, text in tail if record.get(key) is not None]
    if record.get("epoch_seconds") is not None and record.get("examples_per_second") is not None:
        parts[-1] += f" {record['examples_per_second']:,.0f} ex/s"
    return "  ".join(parts)


def format_models_epoch(records: Sequence[Record], epochs: int) -> str:
    """One line per epoch for many models: per peak lr, mean ± std over its seeds (sample std,
    as SweepResult.summary; models of different learning rates are never pooled)."""
    first, groups = records[0], {}
    for record in records:
        groups.setdefault(record["peak_lr"], []).append(record)
    parts = [f"epoch {first['epoch']:>{len(str(epochs))}}/{epochs}"]
    for lr, members in groups.items():
        loss = np.array([r["train_loss"] for r in members])
        text = f"lr {lr:g}: " if len(groups) > 1 else ""
        text += f"train loss {np.mean(loss):.4f} ± {sample_std(loss):.4f}"
        for split in ("val", "test"):
            if members[0].get(f"{split}_accuracy") is not None:
                accuracy = 100 * np.array([r[f"{split}_accuracy"] for r in members])
                text += f" {split} acc {np.mean(accuracy):.2f} ± {sample_std(accuracy):.2f}%"
        parts.append(text)
    total = len(records) * first["examples_per_second"]
    parts.append(f"{first['epoch_seconds']:.2f}s {total:,.0f} ex/s ({len(records)} models)")
    return "  ".join(parts)


def scores(record: Record) -> str:
    """`val loss 0.3012 acc 89.20%, test accuracy 88.42%` of an evaluated epoch's record."""
    parts = []
    if record.get("val_loss") is not None:
        parts.append(f"val loss {record['val_loss']:.4f} acc {100 * record['val_accuracy']:.2f}%")
    if record.get("test_accuracy") is not None:
        parts.append(f"test accuracy {100 * record['test_accuracy']:.2f}%")
    else:
        parts.append(f"train loss {record['train_loss']:.4f} (no test score this epoch)")
    return ", ".join(parts)


def _test_line(test: dict[str, Any]) -> str:
    return f"test accuracy {100 * test['accuracy']:.2f}% (loss {float(test['loss']):.4f})"


def report_run(result: SweepResult, checkpoint_of: Callable[[int], str] | None, log: Log):
    """The final report: one model's final test accuracy, then its last and selected epochs
    (many models: `report_sweep`). Returns DIR/selection.json's content (None: no monitor)."""
    if len(result.seeds) > 1:
        return report_sweep(result, log)
    test, history = result.test[0], result.history[0]
    log(f"{_test_line(test)} on {int(test['count'])} test images")
    selection = result.selections[0] if result.selections else None
    if selection is None or not history:
        return None
    last, best = history[-1], selection.best_epoch
    selected = next((r for r in history if r["epoch"] == best), None)
    log(f"last epoch {last['epoch']}: {scores(last)}")
    if selected is None:
        log(f"selected epoch {best}: its record is not in metrics.jsonl")
    else:
        where = f" (checkpoint {checkpoint_of(best)})" if checkpoint_of else ""
        log(f"selected epoch {best} (best {selection.monitor}): {scores(selected)}{where}")
    saved = {"selection": selection.to_json(), "stopped_early": selection.should_stop}
    return {**saved, "last": last, "selected": selected}


def report_sweep(result: SweepResult, log: Log) -> dict[str, Any] | None:
    """Each model's final test accuracy, then per lr mean ± std over seeds; with a validation
    split, per lr the validation and test accuracy at the selected epochs and the lr that
    validation picks. Returns DIR/selection.json's content. Nothing is picked on test."""
    for seed, lr, test in zip(result.seeds, result.lrs, result.test, strict=True):
        log(f"seed {seed} lr {lr:g}: {_test_line(test)}")
    summary = result.summary()
    for row in summary:
        diverged = f", {row['diverged']} diverged" if row["diverged"] else ""
        over = f"mean ± std over {len(row['seeds'])} seeds{diverged}"
        log(f"lr {row['lr']:g}: test accuracy {_pm(row, 'test_accuracy')} ({over})")
    if result.dataset.val_labels is None:
        return None
    at = "the selected epochs" if result.selections else "the last epoch"
    log(f"on validation, at {at} (std: sample std over seeds, ddof=1):")
    for row in summary:
        val, test = _pm(row, "selected_val_accuracy"), _pm(row, "selected_test_accuracy")
        epochs = ", ".join(map(str, row["selected_epochs"]))
        log(f"lr {row['lr']:g}: val accuracy {val}, test accuracy {test} (epochs {epochs})")
    pick = result.pick()
    if pick is not None:
        best = 100 * pick["selected_val_accuracy_mean"]
        log(
            f"validation picks lr {pick['lr']:g} (highest mean val accuracy {best:.2f}%): "
            f"its test accuracy {_pm(pick, 'selected_test_accuracy')}"
        )
    model = result.picked_model()
    if model is not None:  # evaluate, predict, export and plot pick one model, not an lr
        monitor = result.selections[model].monitor
        extreme = "highest" if monitor.endswith("accuracy") else "lowest"
        log(
            f"evaluate, predict, export and plot default to model {model} (seed "
            f"{result.seeds[model]}, lr {result.lrs[model]:g}): the {extreme} {monitor} of the "
            f"{len(result.seeds)} models"
        )
    return {"picked_by": "val_accuracy", "pick": pick, "per_lr": summary, "model": model}


def _pm(row: Record, name: str) -> str:
    """`89.20 ± 0.31%`: a summary row's mean ± std of `name`, in percent."""
    return f"{100 * row[f'{name}_mean']:.2f} ± {100 * row[f'{name}_std']:.2f}%"


def format_confusion(confusion: np.ndarray) -> str:
    """int[C, C] (rows: true class) as a text table with class indices."""
    width = max(len(str(int(confusion.max()))), len(str(len(confusion) - 1))) + 1
    header = " " * (width + 2) + "".join(f"{c:>{width}}" for c in range(len(confusion)))
    rows = [
        f"{t:>{width}} |" + "".join(f"{n:>{width}}" for n in row) for t, row in enumerate(confusion)
    ]
    return "\n".join([header, *rows])
