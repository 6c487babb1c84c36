"""Study 4: plain SGD, momentum, Nesterov, RMSprop and Adam, each at its best lr; and lr schedules.

python -m experiments.optimizers [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
Each optimizer's lr is picked from a small grid on a validation split (1/6 of train, seed 0,
cosine schedule); the picked configs then train on the whole train split and are scored on test.
The schedules (constant, step, cosine, warmup-cosine) use momentum SGD at its picked lr.
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
    validation_split,
)
from mlp_jax.loop import DivergedError

LR_GRID = {
    "sgd": (0.03, 0.1, 0.3),
    "momentum": (0.01, 0.03, 0.1),
    "nesterov": (0.01, 0.03, 0.1),
    "rmsprop": (1e-4, 3e-4, 1e-3),
    "adam": (1e-4, 3e-4, 1e-3),
}
QUICK_LR_GRID = {"momentum": (0.02, 0.05), "adam": (1e-3,)}
SCHEDULES = ("constant", "step", "cosine", "warmup_cosine")
QUICK_SCHEDULES = ("constant", "cosine")


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0]).parse_args(argv)
    study = Study("optimizers", args)
    grid = QUICK_LR_GRID if study.quick else LR_GRID
    rows, sweep_table, sweep = [], [], {}
    validation = validation_split(study.dataset)
    for optimizer, lrs in grid.items():
        if len(lrs) < 2:  # a single candidate needs no selection
            continue
        # The whole grid of this optimizer in one compiled program (the --lr-sweep engine).
        config = study.base.replace(optimizer=optimizer, schedule="cosine")
        by_lr = study.sweep(config, f"sweep {optimizer} (validation)", lrs, validation, seeds=[0])
        for lr in lrs:
            (result,) = by_lr[lr]
            if isinstance(result, DivergedError):
                accuracy = float("nan")
            else:
                accuracy = result.history[-1]["test_accuracy"]
            sweep[optimizer, lr] = accuracy
            rows.append(
                {
                    "phase": "lr sweep (validation)",
                    "config": f"{optimizer} lr {lr:g}",
                    "optimizer": optimizer,
                    "lr": lr,
                    "schedule": "cosine",
                    "seed": 0,
                    "validation_accuracy": accuracy,
                }
            )
            sweep_table.append(
                {
                    "optimizer": optimizer,
                    "lr": f"{lr:g}",
                    "validation accuracy (%)": f"{100 * accuracy:.2f}",
                }
            )
    best_lr = {
        optimizer: max(lrs, key=lambda lr: np.nan_to_num(sweep.get((optimizer, lr), 0.0)))
        for optimizer, lrs in grid.items()
    }

    curves, table = {"optimizer": {}, "schedule": {}}, []
    reference = "momentum"
    runs = [("optimizer", o, best_lr[o], "cosine") for o in grid] + [
        ("schedule", reference, best_lr[reference], s)
        for s in (QUICK_SCHEDULES if study.quick else SCHEDULES)
        if s != "cosine"  # the cosine run of momentum is already in the optimizer group
    ]
    for group, optimizer, lr, schedule in runs:
        config = study.base.replace(optimizer=optimizer, lr=lr, schedule=schedule)
        label = f"{optimizer} lr {lr:g}, {schedule}"
        results = study.run(config, label)
        rows += [
            row
            for seed, r in enumerate(results)
            for row in curve_rows(
                label, seed, r, phase=group, optimizer=optimizer, lr=lr, schedule=schedule
            )
        ]
        curves[group][label] = mean_curve(results, "test_accuracy")
        if group == "optimizer" and optimizer == reference:
            curves["schedule"][label] = curves[group][label]
        table.append(
            {
                "group": group,
                "config": label,
                "test accuracy (%)": pm(final(results)),
                "test loss": pm(final(results, "test_loss"), scale=1, digits=4),
            }
        )

    if sweep_table:
        print_table(f"Optimizers, lr sweep on a validation split: {study.title}", sweep_table)
    print_table(
        f"Optimizers and schedules: {study.title}, {study.seeds} seeds, {study.base.epochs} epochs",
        table,
    )
    study.save(rows, _figure(study, sweep, curves))
    return 0


def _figure(study: Study, sweep: dict, curves: dict[str, dict[str, np.ndarray]]) -> Figure:
    figure = Figure(figsize=(18, 6.5))
    sweep_axes, optimizer_axes, schedule_axes = figure.subplots(1, 3)
    # One colour per optimizer in every panel (a run is coloured by its optimizer, its schedule
    # by line style in the schedule panel), so momentum + cosine looks the same everywhere.
    optimizers = list(dict.fromkeys(opt for opt, _ in sweep))
    names = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
    colors = {optimizer: f"C{index}" for index, optimizer in enumerate(names)}
    styles = {"constant": ":", "step": "-.", "cosine": "-", "warmup_cosine": "--"}
    for optimizer in optimizers:
        lrs = [lr for opt, lr in sweep if opt == optimizer]
        sweep_axes.plot(lrs, [100 * sweep[optimizer, lr] for lr in lrs], "o-", label=optimizer,
                        color=colors[optimizer])  # fmt: skip
    sweep_axes.set(
        xscale="log",
        xlabel="peak learning rate",
        ylabel="validation accuracy (%)",
        title="lr sweep (1 seed, validation split)",
    )
    for axes, group, title in (
        (optimizer_axes, "optimizer", "optimizers at their best lr (cosine)"),
        (schedule_axes, "schedule", "schedules (momentum SGD)"),
    ):
        for label, accuracy in curves[group].items():
            optimizer, schedule = label.split(" lr ")[0], label.rsplit(", ", 1)[-1]
            axes.plot(
                np.arange(1, len(accuracy) + 1), 100 * accuracy, marker="o", markersize=4,
                label=label, color=colors.get(optimizer, "black"),
                linestyle=styles.get(schedule, "-") if group == "schedule" else "-",
            )  # fmt: skip
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set(
            xlabel="epoch",
            ylabel="test accuracy (%)",
            title=f"{title}, mean of {study.seeds} seeds",
        )
    for axes in (sweep_axes, optimizer_axes, schedule_axes):
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize=10)
    figure.suptitle(
        f"{study.title}: optimizers and lr schedules "
        f"({study.base.layers}-layer MLP, batch {study.base.batch_size})"
    )
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
