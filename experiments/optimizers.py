"""Study 4: plain SGD, momentum, Nesterov, RMSprop and Adam, each at its best lr; and lr schedules.

python -m experiments.optimizers [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
Every condition (an optimizer with the cosine schedule, or momentum SGD with another schedule:
constant, step, warmup-cosine) gets its own peak lr, picked from a small grid on the validation
split (5/6 of train to train on, the held-out 1/6 to score; --seeds seeds, a diverged seed counts
0). Each picked config then trains on the whole train split with the same seeds and is scored once
on test: each optimizer against momentum and each schedule against cosine by a paired bootstrap.
Budgets are equal: the same net, epochs and batch for every condition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments import stats
from experiments.common import (
    Measured,
    Study,
    accuracies,
    band_axes,
    best_lr,
    make_parser,
    measure,
    noise_floor_note,
    print_table,
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
OPTIMIZER_NAMES = {
    "sgd": "plain SGD",
    "momentum": "momentum 0.9",
    "nesterov": "Nesterov 0.9",
    "rmsprop": "RMSprop",
    "adam": "Adam",
}
SCHEDULE_NAMES = {
    "constant": "constant",
    "step": "step decay",
    "cosine": "cosine",
    "warmup_cosine": "warm-up + cosine",
}
REFERENCE = ("momentum", "cosine")  # the package default: every comparison is against it
COLORS = {  # one colour per condition, the same in every panel
    ("sgd", "cosine"): "tab:orange",
    ("momentum", "cosine"): "tab:blue",
    ("nesterov", "cosine"): "tab:green",
    ("rmsprop", "cosine"): "tab:purple",
    ("adam", "cosine"): "tab:red",
    ("momentum", "constant"): "tab:gray",
    ("momentum", "step"): "tab:brown",
    ("momentum", "warmup_cosine"): "tab:cyan",
}


def label_of(condition: tuple[str, str]) -> str:
    optimizer, schedule = condition
    return f"{OPTIMIZER_NAMES[optimizer]}, {SCHEDULE_NAMES[schedule]}"


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=5).parse_args(argv)
    study = Study("optimizers", args)
    validation = study.validation
    grid = QUICK_LR_GRID if study.quick else LR_GRID
    schedules = QUICK_SCHEDULES if study.quick else SCHEDULES
    conditions = [(optimizer, "cosine") for optimizer in grid] + [
        (REFERENCE[0], schedule) for schedule in schedules if schedule != "cosine"
    ]
    rows, sweeps, measured = [], {}, {}
    for condition in conditions:
        optimizer, schedule = condition
        label, lrs = label_of(condition), grid[optimizer]
        # The whole grid of this condition in one compiled program (the --lr-sweep engine).
        config = study.base.replace(optimizer=optimizer, schedule=schedule)
        by_lr = study.sweep(config, f"{label} [validation]", lrs, validation)
        values = {lr: accuracies(results) for lr, results in by_lr.items()}
        picked = best_lr(values)
        sweeps[condition] = (values, picked)
        measured[condition] = m = measure(
            study, config.replace(lr=picked), label, validation_accuracies=values[picked]
        )
        for lr in lrs:
            for seed, value in enumerate(values[lr]):
                rows.append(_row("validation", condition, lr, seed, value))
        for seed, (result, value) in enumerate(zip(m.results, m.test, strict=True)):
            rows.append(_row("test", condition, picked, seed, value, result))
    reference = measured[REFERENCE]
    for group, members in (
        ("Optimizers (cosine schedule)", [c for c in conditions if c[1] == "cosine"]),
        ("Schedules (momentum SGD)", [c for c in conditions if c[0] == REFERENCE[0]]),
    ):
        table = []
        for condition in members:
            m, (values, picked) = measured[condition], sweeps[condition]
            row = m.row(reference, significance=True)
            table.append(
                {
                    "config": row.pop("config"),
                    "validation per lr (%, mean)": "; ".join(
                        f"{lr:g}: {_mean_cell(v)}" for lr, v in values.items()
                    ),
                    "picked lr": f"{picked:g}",
                    **row,
                }
            )
        print_table(
            f"{group}: {study.title}, {study.seeds} seeds, {study.base.epochs} epochs, batch "
            f"{study.base.batch_size}; lr per condition picked on validation; intervals 95%, "
            f"seeds' spread plus test-set noise; differences: paired bootstrap against "
            f"{reference.label}",
            table,
        )
    print(noise_floor_note(study.dataset, float(reference.test_correct.mean())))
    study.save(rows, _figure(study, sweeps, measured))
    return 0


def _mean_cell(values: Sequence[float]) -> str:
    """ "95.1", or "95.3, diverged 1/5" (the mean of the survivors, named as such)."""
    finite = [v for v in values if not np.isnan(v)]
    diverged = len(values) - len(finite)
    if not finite:
        return f"diverged {diverged}/{len(values)}"
    mean = f"{100 * np.mean(finite):.1f}"
    return f"{mean} (survivors), diverged {diverged}/{len(values)}" if diverged else mean


def _row(split, condition, lr, seed, accuracy, result=None) -> dict:
    return {
        "split": split,
        "config": label_of(condition),
        "optimizer": condition[0],
        "schedule": condition[1],
        "lr": lr,
        "seed": seed,
        "accuracy": round(accuracy, 5),
        "diverged": bool(np.isnan(accuracy)),
        "train_seconds": ""
        if result is None or isinstance(result, DivergedError)
        else round(sum(r["epoch_seconds"] for r in result.history), 3),
    }


def _figure(study: Study, sweeps: dict, measured: dict[tuple[str, str], Measured]) -> Figure:
    figure = Figure(figsize=(15, 11), layout="constrained")
    (sweep_axes, dots_axes), (optimizer_axes, schedule_axes) = figure.subplots(2, 2)
    colors = {label_of(c): COLORS[c] for c in measured}
    chance = 100 / study.dataset.num_classes
    for condition, (values, picked) in sweeps.items():
        color, lrs = COLORS[condition], sorted(values)
        whole = [lr for lr in lrs if not np.isnan(values[lr]).any()]
        num_validation = measured[condition].num_validation
        intervals = [stats.accuracy_interval(values[lr], num_validation) for lr in whole]
        sweep_axes.errorbar(
            whole,
            [100 * i.mean for i in intervals],
            yerr=[100 * i.half_width for i in intervals],
            fmt="o-",
            capsize=3,
            color=color,
            label=label_of(condition),
        )
        if picked in whole:
            mean = 100 * stats.accuracy_interval(values[picked], num_validation).mean
            sweep_axes.plot(picked, mean, "o", ms=14, mfc="none", mec=color, mew=2)
        for lr in lrs:
            diverged = int(np.isnan(values[lr]).sum())
            if diverged:  # at chance: a diverged run predicts nothing
                sweep_axes.plot(lr, chance, "X", color=color, ms=11, mec="black")
                sweep_axes.annotate(
                    f"{diverged}/{len(values[lr])}",
                    (lr, chance),
                    xytext=(0, 9),
                    textcoords="offset points",
                    ha="center",
                    color=color,
                )
    sweep_axes.set(
        xscale="log",
        xlabel="peak learning rate",
        ylabel="validation accuracy (%)",
        title="lr grids on validation (ring: picked; X at chance: diverged seeds)",
    )
    sweep_axes.legend(fontsize=9)

    labels = [label_of(c) for c in measured]
    for index, (condition, m) in enumerate(measured.items()):
        finite = [a for a in m.test if not np.isnan(a)]
        if not finite:
            dots_axes.plot(index, chance, "X", color=COLORS[condition], ms=11, mec="black")
            continue
        interval = stats.accuracy_interval(finite, m.num_test)
        dots_axes.errorbar(
            index,
            100 * interval.mean,
            capsize=5,
            fmt="o",
            ms=9,
            yerr=[[100 * (interval.mean - interval.low)], [100 * (interval.high - interval.mean)]],
            color=COLORS[condition],
        )
        if len(finite) < len(m.test):
            dots_axes.annotate(
                f"diverged {len(m.test) - len(finite)}/{len(m.test)}",
                (index, 100 * interval.low),
                xytext=(0, -14),
                textcoords="offset points",
                ha="center",
                fontsize=9,
            )
    reference = measured[REFERENCE]
    dots_axes.axhline(
        100 * float(reference.test_correct.mean()),
        color=COLORS[REFERENCE],
        ls=":",
        label=f"{reference.label} (the reference)",
    )
    dots_axes.set_xticks(range(len(labels)), labels, rotation=25, ha="right")
    dots_axes.set(
        ylabel="test accuracy (%)",
        title=f"on test at the picked lr: mean and 95% interval ({study.seeds} seeds)",
    )
    dots_axes.legend(fontsize=9)

    for axes, members, title in (
        (optimizer_axes, [c for c in measured if c[1] == "cosine"], "optimizers (cosine)"),
        (schedule_axes, [c for c in measured if c[0] == REFERENCE[0]], "schedules (momentum SGD)"),
    ):
        histories = {
            label_of(c): [
                r.history for r in measured[c].results if not isinstance(r, DivergedError)
            ]
            for c in members
        }
        band_axes(axes, {k: v for k, v in histories.items() if v}, "test_accuracy", colors)
        axes.set(
            ylabel="test accuracy (%)", title=f"{title}: test accuracy per epoch at the picked lr"
        )
        axes.legend(fontsize=9, loc="lower right")
    for axes in (sweep_axes, dots_axes):
        axes.grid(alpha=0.3)
    figure.suptitle(
        f"{study.title}: optimizers and lr schedules ({study.base.layers}-layer MLP, "
        f"batch {study.base.batch_size}, {study.base.epochs} epochs; each lr picked on "
        f"validation;\n"
        f"curves: mean and min-max band of {study.seeds} seed(s))",
        fontsize=14,
    )
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
