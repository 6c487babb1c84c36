"""How the default recipe (momentum 0.9, peak lr 0.05, cosine, batch 128) is chosen: on validation.

python -m experiments.recipe [--idx-dir /usr/share/datasets/fashion-mnist] [--seeds 3] [--quick]
Stage 1: optimizer (plain SGD, momentum 0.9) x schedule (constant, cosine) x peak lr, on 5/6 of
the train split, scored on the held-out 1/6. Stage 2: batch 32 / 128 / 512 for the stage-1 winner,
each with lr x 0.5, 1, 2. The winner (highest mean validation accuracy; a diverged seed counts 0)
and the package default then train with --final-seeds seeds on the whole train split and are
scored once on test, with a paired bootstrap between them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments import stats
from experiments.common import (
    Study,
    accuracies,
    correct_on_test,
    make_parser,
    noise_floor_note,
    print_table,
)
from mlp_jax import Config

LRS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
OPTIMIZERS = {"plain SGD": "sgd", "momentum 0.9": "momentum"}
SCHEDULES = ("constant", "cosine")
BATCHES = (32, 128, 512)
QUICK = {"lrs": (0.02, 0.05), "optimizers": ("momentum 0.9",), "batches": (64, 128)}
COLORS = {  # one colour per (optimizer, schedule), the same in every panel
    ("plain SGD", "constant"): "tab:orange",
    ("plain SGD", "cosine"): "tab:red",
    ("momentum 0.9", "constant"): "tab:cyan",
    ("momentum 0.9", "cosine"): "tab:blue",
}
BATCH_COLORS = {32: "tab:purple", 64: "tab:pink", 128: "tab:blue", 512: "tab:brown"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__.splitlines()[0], seeds=3)
    parser.add_argument("--final-seeds", type=int, default=5, help="seeds of the test runs")
    args = parser.parse_args(argv)
    study = Study("recipe", args)
    validation = study.validation
    lrs = QUICK["lrs"] if study.quick else LRS
    rows, cells = [], []  # cells: (config, validation accuracies per seed)

    def sweep(config: Config, stage: str, grid: Sequence[float]) -> None:
        label = f"{config.optimizer} {config.schedule} batch {config.batch_size}"
        for lr, results in study.sweep(config, label, grid, validation).items():
            values = accuracies(results)
            cells.append((config.replace(lr=lr), values))
            for seed, value in enumerate(values):
                rows.append(
                    {
                        "stage": stage,
                        "optimizer": config.optimizer,
                        "schedule": config.schedule,
                        "batch_size": config.batch_size,
                        "lr": lr,
                        "seed": seed,
                        "split": "validation",
                        "accuracy": round(value, 5),
                        "diverged": not np.isfinite(value),
                    }
                )

    for name in QUICK["optimizers"] if study.quick else OPTIMIZERS:
        for schedule in SCHEDULES:
            sweep(study.base.replace(optimizer=OPTIMIZERS[name], schedule=schedule), "1", lrs)
    stage1 = _best(cells)
    for batch in QUICK["batches"] if study.quick else BATCHES:
        if batch != stage1.batch_size:
            grid = [stage1.lr * f for f in (0.5, 1.0, 2.0)]
            sweep(stage1.replace(batch_size=batch), "2", grid)
    picked = _best(cells)
    best_values = dict((c, v) for c, v in cells)[picked]
    best = stats.accuracy_interval(np.nan_to_num(best_values), validation.num_test)
    table = [
        {
            "optimizer": c.optimizer,
            "schedule": c.schedule,
            "batch": c.batch_size,
            "peak lr": f"{c.lr:g}",
            "validation (%)": stats.accuracy_cell(v, validation.num_test),
            "within the best's interval": "picked"
            if c == picked
            else ("yes" if np.all(np.isfinite(v)) and np.mean(v) >= best.low else ""),
        }
        for c, v in cells
    ]
    print_table(
        f"Recipe search on {study.title} validation ({validation.num_train:,} train / "
        f"{validation.num_test:,} validation), {study.seeds} seeds, {study.base.epochs} epochs",
        table,
    )
    print(noise_floor_note(validation, best.mean))

    final_seeds = 1 if study.quick else args.final_seeds
    default = study.base
    finals = {"picked on validation": picked}
    if picked != default:
        finals["package default"] = default
    correct, test_table = {}, []
    for name, config in finals.items():
        results = study.sweep(config, name, [config.lr], seeds=range(final_seeds))[config.lr]
        correct[name] = correct_on_test(results, study.dataset)
        values = accuracies(results)
        for seed, value in enumerate(values):
            rows.append(
                {
                    "stage": "final",
                    "optimizer": config.optimizer,
                    "schedule": config.schedule,
                    "batch_size": config.batch_size,
                    "lr": config.lr,
                    "seed": seed,
                    "split": "test",
                    "accuracy": round(value, 5),
                    "diverged": not np.isfinite(value),
                }
            )
        test_table.append(
            {
                "recipe": f"{name}: {config.optimizer}, lr {config.lr:g}, {config.schedule}, "
                f"batch {config.batch_size}",
                "test (%)": stats.accuracy_cell(values, study.dataset.num_test),
            }
        )
    if len(correct) == 2:
        comparison = stats.paired_bootstrap(*correct.values())
        test_table.append({"recipe": "picked minus default", "test (%)": comparison.percent()})
    print_table(f"Test, {final_seeds} seeds each (scored once)", test_table)
    study.save(rows, _figure(study, cells, picked, validation.num_test))
    return 0


def _best(cells: list[tuple[Config, list[float]]]) -> Config:
    return max(cells, key=lambda cell: float(np.mean(np.nan_to_num(cell[1], nan=0.0))))[0]


def _figure(study: Study, cells, picked: Config, num_validation: int) -> Figure:
    figure = Figure(figsize=(12, 5.5))
    left, right = figure.subplots(1, 2, sharey=True)
    batch = study.base.batch_size
    for (name, schedule), color in COLORS.items():  # stage 1, one line per optimizer x schedule
        group = [
            (c, v)
            for c, v in cells
            if (c.optimizer, c.schedule, c.batch_size) == (OPTIMIZERS[name], schedule, batch)
        ]
        if group:
            _draw(left, group, color, num_validation, f"{name}, {schedule}", "o")
    winner = [
        (c, v) for c, v in cells if (c.optimizer, c.schedule) == (picked.optimizer, picked.schedule)
    ]
    for size, marker in zip(sorted({c.batch_size for c, _ in winner}), "s^oD", strict=False):
        group = [(c, v) for c, v in winner if c.batch_size == size]
        _draw(
            right, group, BATCH_COLORS.get(size, "black"), num_validation, f"batch {size}", marker
        )
    for axes in (left, right):
        axes.set_xscale("log")
        axes.set(xlabel="peak learning rate", ylim=(0, 100))
        axes.grid(alpha=0.3)
        axes.legend(loc="lower center", fontsize=11)
    left.set(
        ylabel="validation accuracy (%)", title=f"stage 1: optimizer x schedule, batch {batch}"
    )
    right.set(title=f"stage 2: batch size ({picked.optimizer}, {picked.schedule})")
    figure.suptitle(
        f"{study.title}: choosing the recipe on validation, {study.seeds} seeds, 95% intervals; "
        f"x = a diverged seed, hollow = its surviving seeds\npicked: {picked.optimizer}, "
        f"peak lr {picked.lr:g}, {picked.schedule}, batch {picked.batch_size}"
    )
    figure.tight_layout()
    return figure


def _draw(axes, group, color, n, label, marker) -> None:
    group = sorted(group, key=lambda cv: cv[0].lr)
    xs, means, errors = [], [], []
    for c, v in group:
        finite = [x for x in v if np.isfinite(x)]
        for _ in range(len(v) - len(finite)):
            axes.plot(c.lr, 0, "x", color=color, ms=9, mew=2)
        if len(finite) < len(v):  # no mean over survivors: each one drawn alone, hollow
            axes.plot(
                [c.lr] * len(finite),
                [100 * x for x in finite],
                marker,
                mfc="none",
                color=color,
                ms=8,
            )
        elif finite:
            interval = stats.accuracy_interval(finite, n)
            xs.append(c.lr)
            means.append(100 * interval.mean)
            errors.append(100 * interval.half_width)
    axes.errorbar(xs, means, yerr=errors, fmt=marker + "-", color=color, capsize=3, label=label)


if __name__ == "__main__":
    raise SystemExit(main())
