"""Study 3 (lecture: "too small: slow; too large: does not work"): a log-spaced lr sweep, 1e-4 to 1.

python -m experiments.learning_rate [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
Plain SGD and momentum SGD (0.9) at a constant lr; a run whose loss becomes NaN/inf is marked as
diverged (the NaN guard's DivergedError), not dropped. Per optimizer, all lrs and seeds train as
one vmapped program (mlp_jax.train_many).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments.common import Study, make_parser, print_table, run_row
from experiments.stats import accuracy_cell, accuracy_interval
from mlp_jax.loop import DivergedError

LEARNING_RATES = tuple(float(lr) for lr in np.logspace(-4, 0, 9))  # 1e-4, 3.2e-4, ..., 1
QUICK_LEARNING_RATES = (0.01, 1e6)  # the second one diverges, even on the tiny net
OPTIMIZERS = ("sgd", "momentum")


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0]).parse_args(argv)
    study = Study("learning_rate", args)
    rows, table, points = [], [], {}
    learning_rates = QUICK_LEARNING_RATES if study.quick else LEARNING_RATES
    for optimizer in OPTIMIZERS[1:] if study.quick else OPTIMIZERS:
        # Every lr and seed of this optimizer in one compiled program (the --lr-sweep engine).
        config = study.base.replace(optimizer=optimizer, schedule="constant")
        by_lr = study.sweep(config, optimizer, learning_rates)
        for lr in learning_rates:
            results = by_lr[lr]
            accuracies, diverged = [], 0
            for seed, result in enumerate(results):
                if isinstance(result, DivergedError):
                    diverged += 1
                    rows.append(
                        {
                            "config": f"{optimizer} lr {lr:.3g}",
                            "optimizer": optimizer,
                            "lr": lr,
                            "seed": seed,
                            "diverged": True,
                            "diverged_epoch": result.epoch,
                        }
                    )
                else:
                    accuracies.append(result.history[-1]["test_accuracy"])
                    rows.append(
                        run_row(
                            f"{optimizer} lr {lr:.3g}",
                            seed,
                            result,
                            optimizer=optimizer,
                            lr=lr,
                            diverged=False,
                        )
                    )
            points[optimizer, lr] = (accuracies, diverged)
            table.append(
                {
                    "optimizer": optimizer,
                    "lr": f"{lr:.2g}",
                    "test accuracy (%), 95% interval": accuracy_cell(
                        accuracies + [math.nan] * diverged, study.dataset.num_test
                    ),
                    "diverged (NaN guard)": f"{diverged}/{len(results)}" if diverged else "",
                }
            )
    print_table(
        f"Learning rate: {study.title}, {study.seeds} seeds, {study.base.epochs} epochs", table
    )
    study.save(rows, _figure(study, points))
    return 0


def _figure(study: Study, points: dict[tuple[str, float], tuple[list[float], int]]) -> Figure:
    figure = Figure(figsize=(7.5, 4.8))
    axes = figure.subplots()
    chance = 100 / study.dataset.num_classes
    for index, optimizer in enumerate(dict.fromkeys(opt for opt, _ in points)):
        color = f"C{index}"
        lrs = [lr for opt, lr in points if opt == optimizer]
        label = {"sgd": "plain SGD", "momentum": "SGD + momentum 0.9"}.get(optimizer, optimizer)
        # The line joins only lrs where every seed survived: a mean over survivors would hide the
        # diverged ones, so their survivors are drawn one by one (hollow) instead.
        whole = [lr for lr in lrs if not points[optimizer, lr][1]]
        intervals = [accuracy_interval(points[optimizer, lr][0], study.dataset.num_test)
                     for lr in whole]  # fmt: skip
        axes.errorbar(
            whole,
            [100 * i.mean for i in intervals],
            yerr=[100 * i.half_width for i in intervals],
            fmt="o-",
            color=color,
            capsize=3,
            label=f"{label} (mean, 95% interval)",
        )
        for lr in lrs:
            if points[optimizer, lr][1] and points[optimizer, lr][0]:
                survivors = points[optimizer, lr][0]
                axes.plot([lr] * len(survivors), [100 * a for a in survivors], "o",
                          mfc="none", color=color, ms=8)  # fmt: skip
        diverged = [lr for lr in lrs if points[optimizer, lr][1]]
        if diverged:  # at chance level (a diverged run predicts nothing), nudged apart in x
            nudge = 1.15 ** (index - 0.5)
            axes.plot(
                [lr * nudge for lr in diverged],
                [chance] * len(diverged),
                "X",
                color=color,
                markersize=11,
                markeredgecolor="black",
                label=f"{label}: diverged seeds (NaN loss), count; hollow: the survivors",
            )
            for lr in diverged:
                runs = len(points[optimizer, lr][0]) + points[optimizer, lr][1]
                axes.annotate(
                    f"{points[optimizer, lr][1]}/{runs}",
                    (lr * nudge, chance),
                    xytext=(0, 9 + 12 * index),
                    textcoords="offset points",
                    ha="center",
                    fontsize=8,
                    color=color,
                )
    axes.axhline(chance, color="gray", linestyle=":", label="chance")
    axes.set(
        xscale="log",
        xlabel="learning rate (constant)",
        ylabel="final test accuracy (%)",
        title=f"{study.title}: learning-rate sweep\n({study.base.layers}-layer MLP, "
        f"{study.base.epochs} epochs, {study.seeds} seeds; an illustration, no lr is picked here)",
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
