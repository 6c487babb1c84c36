"""Study 2 (lecture: serial vs mini-batch vs full batch): batch 1, 12, 128, 1000 and the whole set.

python -m experiments.batch_size [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
Momentum SGD at a constant lr of 0.05 * min(1, batch / 128): the linear-scaling rule below 128,
so that the small batches stay stable; the rule is fixed, not tuned per batch. Budgets: equal
epochs (every regime sees each training image --epochs times), so NOT equal updates or seconds.
Each regime trains on 5/6 of the train split and is scored on the held-out 1/6 (validation: the
best regime is named there), then on the whole train split, each seed a separate run (so the
seconds are one model's), scored once on test and compared with batch 128 by a paired bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments.common import (
    Measured,
    Study,
    accuracies,
    band_axes,
    best_on_validation,
    correct_on_test,
    make_parser,
    noise_floor_note,
    num_params,
    print_table,
)
from mlp_jax import Config, Dataset
from mlp_jax.loop import DivergedError, RunResult

BATCH_SIZES = (1, 12, 128, 1000, None)  # None: the whole training set (full-batch GD)
QUICK_BATCH_SIZES = (16, 128, None)
BASE_LR, BASE_BATCH = 0.05, 128
COLORS = {
    1: "tab:purple",
    12: "tab:green",
    16: "tab:green",
    128: "tab:blue",
    1000: "tab:orange",
    None: "tab:red",
}


def lr_for(batch_size: int) -> float:
    """Linear scaling below BASE_BATCH: the step per example stays the same."""
    return BASE_LR * min(1.0, batch_size / BASE_BATCH)


def regime(batch_size: int | None) -> str:
    return "full batch" if batch_size is None else "serial" if batch_size == 1 else "mini-batch"


def config_for(study: Study, batch_size: int | None, dataset: Dataset) -> Config:
    """The regime's config on `dataset` (the full batch is that dataset's whole train split)."""
    size = batch_size or dataset.num_train
    return study.base.replace(batch_size=size, lr=lr_for(size), schedule="constant")


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=5).parse_args(argv)
    study = Study("batch_size", args)
    dataset, validation = study.dataset, study.validation
    rows, measured, colors = [], {}, {}
    for batch_size in QUICK_BATCH_SIZES if study.quick else BATCH_SIZES:
        config = config_for(study, batch_size, dataset)
        label = f"{regime(batch_size)} {config.batch_size:,}"
        colors[label] = COLORS[batch_size]
        on_validation = config_for(study, batch_size, validation)
        chosen = study.sweep(on_validation, f"{label} [validation]", [on_validation.lr], validation)
        # Separate runs, not one vmapped program: the seconds are one model's own time.
        results = [
            study.sweep(config, f"{label} [test]", [config.lr], seeds=[seed])[config.lr][0]
            for seed in range(study.seeds)
        ]
        survivors = [r for r in results if not isinstance(r, DivergedError)]
        measured[batch_size] = Measured(
            label=label,
            config=config,
            params=num_params(survivors[0]) if survivors else 0,
            validation=accuracies(chosen[on_validation.lr]),
            test=accuracies(results),
            test_correct=correct_on_test(results, dataset),
            seconds=sum(_seconds(r) for r in survivors),
            num_validation=validation.num_test,
            num_test=dataset.num_test,
            results=results,
        )
        for seed, result in enumerate(results):
            rows += _rows(label, seed, result, config)
    reference = measured[BASE_BATCH]
    best = best_on_validation(list(measured.values()))
    table = []
    for m in measured.values():
        survivors = [r for r in m.results if not isinstance(r, DivergedError)]
        steps = -(-dataset.num_train // m.config.batch_size)
        row = m.row(reference, significance=True)
        table.append(
            {
                "regime": row.pop("config"),
                "lr": f"{m.config.lr:.2g}",
                "updates (epochs x steps)": f"{m.config.epochs * steps:,}",
                **row,
                "train s per model": f"{np.mean([_seconds(r) for r in survivors]):.1f}"
                if survivors
                else "-",
                "examples/s": f"{np.mean([_examples_per_second(r) for r in survivors]):,.0f}"
                if survivors
                else "-",
            }
        )
    print_table(
        f"Batch regimes: {study.title}, {study.seeds} seeds, equal budgets in epochs "
        f"({study.base.epochs}; not in updates or seconds), lr 0.05·min(1, B/128) fixed, not "
        f"tuned; best on validation: {best.label}. Intervals 95%, seeds' spread plus test-set "
        f"noise; differences: paired bootstrap against {reference.label}",
        table,
    )
    print(noise_floor_note(dataset, float(reference.test_correct.mean())))
    study.save(rows, _figure(study, measured, colors))
    return 0


def _seconds(result: RunResult) -> float:
    return sum(r["epoch_seconds"] for r in result.history)


def _examples_per_second(result: RunResult) -> float:
    return float(np.mean([r["examples_per_second"] for r in result.history]))


def _rows(label: str, seed: int, result: RunResult | DivergedError, config: Config) -> list[dict]:
    """One CSV row per epoch of a test-split run (one row with the epoch if it diverged)."""
    common = {"config": label, "batch_size": config.batch_size, "lr": config.lr, "seed": seed}
    if isinstance(result, DivergedError):
        return [common | {"diverged": True, "epoch": result.epoch}]
    return [common | {"diverged": False, **record} for record in result.history]


def _figure(study: Study, measured: dict[int | None, Measured], colors: dict[str, str]) -> Figure:
    """Top left: the mini-batches per epoch, on their own scale; bottom left: the full batch on
    its own; right: every regime against updates and against seconds (log x, so the full batch's
    few updates sit apart). One colour per regime in every panel; bands: min-max over seeds."""
    figure = Figure(figsize=(14, 9.5), layout="constrained")
    (mini_axes, update_axes), (full_axes, second_axes) = figure.subplots(2, 2)
    runs = {
        m.label: [r.history for r in m.results if not isinstance(r, DivergedError)]
        for m in measured.values()
    }
    runs = {label: histories for label, histories in runs.items() if histories}
    full = [m.label for batch, m in measured.items() if batch is None and m.label in runs]
    band_axes(mini_axes, {k: v for k, v in runs.items() if k not in full}, "test_accuracy", colors)
    band_axes(full_axes, {k: runs[k] for k in full}, "test_accuracy", colors)
    for m in measured.values():
        if m.label not in runs:
            continue
        steps = -(-study.dataset.num_train // m.config.batch_size)
        accuracy = 100 * np.array([[r["test_accuracy"] for r in h] for h in runs[m.label]])
        seconds = np.cumsum([[r["epoch_seconds"] for r in h] for h in runs[m.label]], axis=1)
        updates = steps * np.arange(1, accuracy.shape[1] + 1)
        for axes, x in ((update_axes, updates), (second_axes, seconds.mean(axis=0))):
            axes.plot(x, accuracy.mean(axis=0), "o-", ms=4, color=colors[m.label], label=m.label)
            axes.fill_between(
                x, accuracy.min(axis=0), accuracy.max(axis=0), color=colors[m.label], alpha=0.25
            )
    mini_axes.set(ylabel="test accuracy (%)", title="serial and mini-batches, per epoch (zoomed)")
    full_axes.set(
        ylabel="test accuracy (%)", title="full batch, per epoch (own scale: one update per epoch)"
    )
    update_axes.set(
        xscale="log",
        xlabel="parameter updates (log scale)",
        ylabel="test accuracy (%)",
        title="every regime, per update",
    )
    second_axes.set(
        xscale="log",
        xlabel="training seconds of one model (log scale, compile excluded)",
        ylabel="test accuracy (%)",
        title="every regime, per wall-clock second",
    )
    for axes in (update_axes, second_axes):
        axes.grid(alpha=0.3)
    for axes in (mini_axes, full_axes, update_axes):
        if axes.has_data():
            axes.legend(title="batch size", loc="lower right")
    figure.suptitle(
        f"{study.title}: serial vs mini-batch vs full batch ({study.base.layers}-layer MLP, "
        f"momentum SGD, constant lr 0.05·min(1, B/128))\nequal budgets in epochs "
        f"({study.base.epochs}), not in updates; mean and min-max of {study.seeds} seed(s)"
    )
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
