"""Study 5: activations (relu, tanh, sigmoid, gelu), dropout 0 / 0.2 / 0.5 and weight decay.

python -m experiments.regularization [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
All on the TA deck's 784-512-512-10 net with the package's default optimizer. Train accuracy is
measured after training, in eval mode (no dropout) on the whole train split, so the train-test
gap is the overfitting.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from matplotlib.figure import Figure

from experiments.common import Study, make_parser, mean_std, pm, print_table, run_row
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
    args = make_parser(__doc__.splitlines()[0]).parse_args(argv)
    study = Study("regularization", args)
    base = study.base if study.quick else study.base.replace(**NET)
    train_images, train_labels = jax.device_put(
        (study.dataset.train_images, study.dataset.train_labels)
    )
    rows, table, points, curves = [], [], {}, {}
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
        points[label] = (train_accuracy, test_accuracy)
        curves[label] = [[h["test_accuracy"] for h in r.history] for r in results]
        gaps = [a - b for a, b in zip(train_accuracy, test_accuracy, strict=True)]
        table.append(
            {
                "config": label,
                "train accuracy (%)": pm(train_accuracy),
                "test accuracy (%)": pm(test_accuracy),
                "gap (points)": pm(gaps),
            }
        )
    print_table(
        f"Activations and regularisation: {study.title}, "
        f"{'-'.join(map(str, [784, *base.hidden_sizes, 10]))} net, {study.seeds} seeds, "
        f"{base.epochs} epochs",
        table,
    )
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
    positions = np.arange(len(labels))
    train_means = [100 * mean_std(points[label][0])[0] for label in labels]
    test_means = [100 * mean_std(points[label][1])[0] for label in labels]
    gap_axes.bar(positions - 0.2, train_means, 0.4, label="train (eval mode)")
    gap_axes.bar(positions + 0.2, test_means, 0.4, label="test")
    gap_axes.set_xticks(positions, labels, rotation=25, ha="right", fontsize=8)
    gap_axes.set_ylim(max(0.0, min(test_means + train_means) - 5), 100)
    gap_axes.set(ylabel="accuracy (%)", title="the train-test gap per configuration")
    gap_axes.legend()
    for axes in (scatter, gap_axes):
        axes.grid(alpha=0.3)
    figure.suptitle(
        f"{study.title}: activations, dropout and weight decay "
        f"(mean ± std of {study.seeds} seeds, {study.base.epochs} epochs)"
    )
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
