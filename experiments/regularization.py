"""Study 5: activations (relu, tanh, sigmoid, gelu), dropout 0 / 0.2 / 0.5 and weight decay.

python -m experiments.regularization [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
All on the TA deck's 784-512-512-10 net with the package's default optimizer. Train accuracy is
measured after training, in eval mode (no dropout) on the whole train split, so the train-test
gap is the overfitting. Budgets are equal but not tuned per variant: every variant trains at the
ReLU net's lr and epochs, which may handicap sigmoid (small gradients) and dropout (slower to fit).
Nothing is picked here; each variant is compared with relu on test by a paired bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from matplotlib.figure import Figure

from experiments import stats
from experiments.common import (
    Study,
    correct_on_test,
    make_parser,
    mean_std,
    noise_floor_note,
    pm,
    print_table,
    run_row,
)
from experiments.stats import accuracy_cell
from mlp_jax import evaluate

NET = {"layers": 3, "hidden": (512, 512)}
VARIANTS = {  # label -> config changes
    "relu": {"activation": "relu"},
    "tanh": {"activation": "tanh"},
    "sigmoid": {"activation": "sigmoid"},
    "gelu": {"activation": "gelu"},
    "relu + dropout 0.2": {"dropout": 0.2},
    "relu + dropout 0.5": {"dropout": 0.5},
    "relu + weight decay 5e-4": {"weight_decay": 5e-4},
}
QUICK_VARIANTS = ("relu", "relu + dropout 0.5")


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=5).parse_args(argv)
    study = Study("regularization", args)
    base = study.base if study.quick else study.base.replace(**NET)
    train_images, train_labels = jax.device_put(
        (study.dataset.train_images, study.dataset.train_labels)
    )
    rows, table, points, curves, correct = [], [], {}, {}, {}
    for label in QUICK_VARIANTS if study.quick else VARIANTS:
        config = base.replace(**VARIANTS[label])
        results = study.run(config, label)
        train_accuracy = []
        for seed, result in enumerate(results):
            train = evaluate(result.state, train_images, train_labels, batch_size=1000)
            train_accuracy.append(float(train["accuracy"]))
            rows.append(
                run_row(
                    label,
                    seed,
                    result,
                    activation=config.activation,
                    dropout=config.dropout,
                    weight_decay=config.weight_decay,
                    train_accuracy_eval=round(train_accuracy[-1], 5),
                )
            )
        test_accuracy = [r.history[-1]["test_accuracy"] for r in results]
        correct[label] = correct_on_test(results, study.dataset)
        points[label] = (train_accuracy, test_accuracy)
        curves[label] = [[h["test_accuracy"] for h in r.history] for r in results]
        gaps = [a - b for a, b in zip(train_accuracy, test_accuracy, strict=True)]
        table.append(
            {
                "config": label,
                "train accuracy (%)": pm(train_accuracy),
                "test accuracy (%), 95% interval": accuracy_cell(
                    test_accuracy, study.dataset.num_test
                ),
                "gap (points)": pm(gaps),
                "test: minus relu (paired bootstrap)": "(reference)"
                if label == "relu"
                else stats.paired_bootstrap(correct[label], correct["relu"]).percent(),
            }
        )
    print_table(
        f"Activations and regularisation: {study.title}, "
        f"{'-'.join(map(str, [784, *base.hidden_sizes, 10]))} net, {study.seeds} seeds, "
        f"{base.epochs} epochs",
        table,
    )
    print(noise_floor_note(study.dataset, float(correct["relu"].mean())))
    study.save(rows, _figure(study, points, curves))
    return 0


def _figure(study: Study, points: dict, curves: dict) -> Figure:
    figure = Figure(figsize=(13, 4.8))
    scatter, gap_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    labels = list(points)
    for index, label in enumerate(labels):
        train, test = points[label]
        (train_mean, train_std), (test_mean, test_std) = mean_std(train), mean_std(test)
        scatter.errorbar(
            100 * train_mean,
            100 * test_mean,
            xerr=100 * train_std,
            yerr=100 * test_std,
            fmt="o",
            color=f"C{index}",
            capsize=3,
            label=label,
        )
    low = min(100 * min(min(t), min(s)) for t, s in points.values())
    high = max(100 * max(max(t), max(s)) for t, s in points.values())
    scatter.plot([low, high], [low, high], "k:", label="train = test (no gap)")
    scatter.set(
        xlabel="train accuracy (%, eval mode)",
        ylabel="test accuracy (%)",
        title="train against test accuracy",
    )
    scatter.legend(fontsize=7)
    n = study.dataset.num_test
    for index, label in enumerate(labels):
        train, test = points[label]
        interval = stats.accuracy_interval(test, n)
        train_mean = 100 * float(np.mean(train))
        gap_axes.vlines(index, 100 * interval.mean, train_mean, color=f"C{index}", alpha=0.4, lw=6)
        gap_axes.errorbar(
            index,
            100 * interval.mean,
            yerr=100 * interval.half_width,
            fmt="o",
            color=f"C{index}",
            capsize=4,
            ms=8,
            label="test, 95% interval" if index == 0 else None,
        )
        gap_axes.plot(
            index,
            train_mean,
            "o",
            mfc="white",
            color=f"C{index}",
            ms=8,
            label="train (eval mode)" if index == 0 else None,
        )
    gap_axes.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=10)
    gap_axes.set(ylabel="accuracy (%)", title="the train-test gap (bar) per configuration")
    gap_axes.legend()
    for axes in (scatter, gap_axes):
        axes.grid(alpha=0.3)
    figure.suptitle(
        f"{study.title}: activations, dropout and weight decay\n"
        f"(left: mean ± std of {study.seeds} seeds; right: 95% intervals with test noise; "
        f"{study.base.epochs} epochs, every variant at the ReLU net's lr {study.base.lr:g})"
    )
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
