"""Study 3 (lecture: "too small: slow; too large: does not work"): a log-spaced lr sweep, 1e-4 to 1.

python -m experiments.learning_rate [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
Plain SGD and momentum SGD (0.9) at a constant lr. The sweep trains on 5/6 of the train split and
is scored on the held-out 1/6 (validation): per optimizer the lr with the best mean validation
accuracy is picked there (a diverged seed counts 0), and each lr is compared with the picked one by
a paired bootstrap over the validation images. Only the picked lr of each optimizer then trains on
the whole train split and is scored once on test, plain SGD against momentum by a paired bootstrap.
A run whose loss becomes NaN/inf is marked as diverged (the NaN guard's DivergedError), counted and
drawn, never dropped. Per optimizer, all lrs and seeds train as one vmapped program.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments import stats
from experiments.common import (
    Measured,
    Study,
    accuracies,
    best_lr,
    correct_on_test,
    make_parser,
    measure,
    noise_floor_note,
    print_table,
)
from mlp_jax.loop import DivergedError

LEARNING_RATES = tuple(float(lr) for lr in np.logspace(-4, 0, 9))  # 1e-4, 3.2e-4, ..., 1
QUICK_LEARNING_RATES = (0.01, 1e6)  # the second one diverges, even on the tiny net
OPTIMIZERS = {"sgd": "plain SGD", "momentum": "momentum 0.9"}
COLORS = {"sgd": "tab:orange", "momentum": "tab:blue"}
REFERENCE = "momentum"


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=5).parse_args(argv)
    study = Study("learning_rate", args)
    validation = study.validation
    learning_rates = QUICK_LEARNING_RATES if study.quick else LEARNING_RATES
    rows, sweep_table, sweeps, measured, sweep_seconds = [], [], {}, {}, {}
    for optimizer, name in OPTIMIZERS.items():
        # Every lr and seed of this optimizer in one compiled program (the --lr-sweep engine).
        config = study.base.replace(optimizer=optimizer, schedule="constant")
        start = time.perf_counter()
        by_lr = study.sweep(config, f"{name} [validation]", learning_rates, validation)
        sweep_seconds[optimizer] = time.perf_counter() - start
        values = {lr: accuracies(results) for lr, results in by_lr.items()}
        correct = {lr: correct_on_test(results, validation) for lr, results in by_lr.items()}
        picked = best_lr(values)
        sweeps[optimizer] = (values, picked)
        for lr in learning_rates:
            for seed, result in enumerate(by_lr[lr]):
                rows.append(_row("validation", optimizer, lr, seed, result, values[lr][seed]))
            diverged = int(np.sum(np.isnan(values[lr])))
            comparison = stats.paired_bootstrap(correct[lr], correct[picked])
            sweep_table.append(
                {
                    "optimizer": name,
                    "lr": f"{lr:.2g}",
                    "validation (%), 95% interval": stats.accuracy_cell(
                        values[lr], validation.num_test
                    ),
                    "diverged (NaN guard)": f"{diverged}/{len(values[lr])}",
                    "validation: minus picked lr": "(picked)"
                    if lr == picked
                    else comparison.percent(),
                    "significant (p < 0.05)": "-"
                    if lr == picked
                    else "yes"
                    if comparison.significant
                    else "no",
                }
            )
        measured[optimizer] = m = measure(
            study, config.replace(lr=picked), name, validation_accuracies=values[picked]
        )
        for seed, (result, value) in enumerate(zip(m.results, m.test, strict=True)):
            rows.append(_row("test", optimizer, picked, seed, result, value))
    params, epochs = measured[REFERENCE].params, study.base.epochs
    print_table(
        f"Learning rate on validation: {study.title}, {params:,} params, {epochs} epochs, "
        f"{study.seeds} seeds, constant lr; per optimizer, all lrs x seeds trained as one program ("
        + ", ".join(f"{OPTIMIZERS[o]} {s:.0f} s" for o, s in sweep_seconds.items())
        + "); each lr against the picked one: paired bootstrap over seeds and validation images",
        sweep_table,
    )
    reference = measured[REFERENCE]
    table = []
    for m in measured.values():
        row = m.row(reference, significance=True)
        table.append(
            {"optimizer": row.pop("config"), "picked lr (validation)": f"{m.config.lr:.2g}"} | row
        )
    print_table(
        f"Learning rate, the picked lrs on test: {study.title}, {study.seeds} seeds; picked on "
        "validation: "
        + ", ".join(f"{OPTIMIZERS[o]} lr {m.config.lr:.2g}" for o, m in measured.items())
        + "; intervals 95%, seeds' spread plus test-set noise; differences: paired bootstrap",
        table,
    )
    print(noise_floor_note(study.dataset, float(reference.test_correct.mean())))
    study.save(rows, _figure(study, sweeps, measured, validation.num_test))
    return 0


def _row(split: str, optimizer: str, lr: float, seed: int, result, accuracy: float) -> dict:
    diverged = isinstance(result, DivergedError)
    return {
        "split": split,
        "optimizer": optimizer,
        "lr": lr,
        "seed": seed,
        "accuracy": round(accuracy, 5),
        "diverged": diverged,
        "diverged_epoch": result.epoch if diverged else "",
        "train_seconds": ""
        if diverged
        else round(sum(r["epoch_seconds"] for r in result.history), 3),
    }


def _figure(
    study: Study,
    sweeps: dict[str, tuple[dict[float, list[float]], float]],
    measured: dict[str, Measured],
    num_validation: int,
) -> Figure:
    figure = Figure(figsize=(10, 7.5), layout="constrained")
    axes = figure.subplots()
    chance = 100 / study.dataset.num_classes
    for index, (optimizer, (values, picked)) in enumerate(sweeps.items()):
        color, name = COLORS[optimizer], OPTIMIZERS[optimizer]
        # The line joins only lrs where every seed survived: a mean over survivors would hide the
        # diverged ones, so their survivors are drawn one by one (hollow) instead.
        whole = [lr for lr, v in values.items() if not np.isnan(v).any()]
        intervals = [stats.accuracy_interval(values[lr], num_validation) for lr in whole]
        axes.errorbar(
            whole,
            [100 * i.mean for i in intervals],
            yerr=[100 * i.half_width for i in intervals],
            fmt="o-",
            color=color,
            capsize=3,
            label=f"{name}: validation",
        )
        nudge = 1.12 ** (index - 0.5)  # the two optimizers' markers apart in x
        for lr, v in values.items():
            survivors = [a for a in v if not np.isnan(a)]
            diverged = len(v) - len(survivors)
            if not diverged:
                continue
            if survivors:
                axes.plot(
                    [lr * nudge] * len(survivors),
                    [100 * a for a in survivors],
                    "o",
                    mfc="none",
                    color=color,
                    ms=8,
                )
            # at chance level: a diverged run predicts nothing
            axes.plot(lr * nudge, chance, "X", color=color, ms=11, mec="black")
            axes.annotate(
                f"{diverged}/{len(v)}",
                (lr * nudge, chance),
                xytext=(0, 9 + 12 * index),
                textcoords="offset points",
                ha="center",
                fontsize=9,
                color=color,
            )
        m = measured[optimizer]
        finite = [a for a in m.test if not np.isnan(a)]
        if finite:
            interval = stats.accuracy_interval(finite, m.num_test)
            axes.errorbar(
                picked * nudge * 1.3,
                100 * interval.mean,
                yerr=100 * interval.half_width,
                fmt="D",
                color=color,
                mec="black",
                ms=9,
                capsize=4,
                label=f"{name}: picked lr {picked:.2g}, on test "
                f"({len(finite)}/{len(m.test)} seeds survived)",
            )
    axes.plot(
        [],
        [],
        "X",
        color="gray",
        mec="black",
        ms=11,
        label="diverged seeds (NaN loss) at chance, with their count;\n"
        "hollow circles: that lr's surviving seeds",
    )
    axes.axhline(chance, color="gray", linestyle=":", label="chance")
    axes.set(
        xscale="log",
        ylim=(0, 100),
        xlabel="learning rate (constant)",
        ylabel="accuracy (%)",
        title=f"{study.title}: learning-rate sweep on validation\n({study.base.layers}-layer MLP, "
        f"{study.base.epochs} epochs, {study.seeds} seeds; mean and 95% interval; "
        "the lr is picked on validation)",
    )
    axes.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncol=2, fontsize=9)
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
