"""The lecture-5 net exactly, with its bias switched on and off.

python -m experiments.lecture5 [--idx-dir /usr/share/datasets/fashion-mnist] [--seeds 5] [--quick]
Lecture 5's three-layer net 784-1000-1500-10, ReLU, nn.Linear(..., bias=False), plain SGD at
lr 0.01 (constant), minibatches of 200, inputs scaled to [0, 1]; the ablation adds the biases.
Both train on the whole train split and are scored once on test (no choice is made here).
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from experiments import stats
from experiments.common import (
    Study,
    accuracies,
    band_axes,
    correct_on_test,
    curve_rows,
    make_parser,
    noise_floor_note,
    num_params,
    print_table,
)

LECTURE5 = {
    "layers": 3,
    "hidden": (1000, 1500),
    "activation": "relu",
    "bias": False,
    "optimizer": "sgd",
    "lr": 0.01,
    "schedule": "constant",
    "batch_size": 200,
    "normalize": "scale",
}
COLORS = {"no bias (the lecture)": "tab:blue", "with bias": "tab:orange"}


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=5).parse_args(argv)
    study = Study("lecture5", args)
    base = study.base.replace(**LECTURE5)
    if study.quick:
        base = base.replace(layers=2, hidden=(32,), batch_size=64)
    rows, table, correct, histories = [], [], {}, {}
    for label, bias in [("no bias (the lecture)", False), ("with bias", True)]:
        config = base.replace(bias=bias)
        results = study.run(config, label)
        correct[label] = correct_on_test(results, study.dataset)
        histories[label] = [r.history for r in results]
        for seed, result in enumerate(results):
            rows += curve_rows(label, seed, result, bias=bias, params=num_params(result))
        train_seconds = sum(record["epoch_seconds"] for record in results[0].history)
        table.append(
            {
                "config": label,
                "params": f"{num_params(results[0]):,}",
                "epochs": config.epochs,
                f"train s ({study.seeds} seeds together)": f"{train_seconds:.0f}",
                "test (%)": stats.accuracy_cell(accuracies(results), study.dataset.num_test),
            }
        )
    comparison = stats.paired_bootstrap(correct["with bias"], correct["no bias (the lecture)"])
    table.append({"config": "with minus without bias", "test (%)": comparison.percent()})
    print_table(
        f"Lecture-5 net: {study.title}, {'-'.join(map(str, [784, *base.hidden_sizes, 10]))}, "
        f"SGD lr {base.lr}, batch {base.batch_size}, {study.seeds} seeds, {base.epochs} epochs",
        table,
    )
    print(noise_floor_note(study.dataset, float(correct["with bias"].mean())))
    figure = Figure(figsize=(12, 4.5))
    left, right = figure.subplots(1, 2)
    band_axes(left, histories, "train_loss", COLORS, scale=1.0)
    band_axes(right, histories, "test_accuracy", COLORS)
    left.set(ylabel="running train loss", ylim=(0, None))
    right.set(ylabel="test accuracy (%)")
    right.legend(loc="lower right")
    figure.suptitle(
        f"{study.title}: lecture 5's net {'-'.join(map(str, [784, *base.hidden_sizes, 10]))}, "
        f"SGD lr {base.lr}, batch {base.batch_size} (mean and min-max of {study.seeds} seeds)"
    )
    figure.tight_layout()
    study.save(rows, figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
