"""The best MLP we can train here: a few candidate recipes, picked on validation, scored on test.

python -m experiments.best_mlp [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
Each candidate trains once (seed 0) on 5/6 of the train split and is scored on the held-out 1/6;
the winner then trains on the whole train split with --seeds seeds and is scored on the test split,
next to Fashion-MNIST's published MLP baselines.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments.common import (
    Study,
    curve_rows,
    final,
    make_parser,
    mean_curve,
    mean_std,
    pm,
    print_table,
    validation_split,
)

CANDIDATES = {  # label -> changes to the package default (momentum 0.9, lr 0.05, cosine, batch 128)
    "5 layers 512-256-128-64, 10 epochs (the default)": {},
    "3 layers 1024-512, dropout 0.2, 20 epochs": {
        "layers": 3, "hidden": (1024, 512), "dropout": 0.2, "epochs": 20,
    },
    "3 layers 1024-1024, dropout 0.3, 30 epochs": {
        "layers": 3, "hidden": (1024, 1024), "dropout": 0.3, "epochs": 30,
    },
    "5 layers 512-256-128-64, dropout 0.1, 20 epochs": {"dropout": 0.1, "epochs": 20},
}  # fmt: skip
QUICK_CANDIDATES = {
    "2 layers 32": {},
    "2 layers 32, dropout 0.2": {"dropout": 0.2},
}
# zalandoresearch/fashion-mnist README: its sklearn benchmark's best MLPClassifier, and the
# submitted MLP rows "MLP 256-128-100" (0.8833) and "MLP 256-128-64" (0.900).
BASELINES = {
    "sklearn MLPClassifier (benchmark)": 0.871,
    "submitted MLP 256-128-100": 0.8833,
    "submitted MLP 256-128-64": 0.900,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0]).parse_args(argv)
    study = Study("best_mlp", args)
    candidates = QUICK_CANDIDATES if study.quick else CANDIDATES
    validation = validation_split(study.dataset)
    rows, selection = [], {}
    for label, changes in candidates.items():
        config = study.base.replace(seed=0, **changes)
        result = study.train(config, f"{label} (validation)", validation)
        selection[label] = result.history[-1]["test_accuracy"]
        rows.append(
            {
                "phase": "selection (validation)",
                "config": label,
                "seed": 0,
                "validation_accuracy": selection[label],
            }
        )
    best = max(selection, key=selection.get)
    config = study.base.replace(**candidates[best])
    results = study.run(config, f"{best} (test)")
    rows += [
        row
        for seed, r in enumerate(results)
        for row in curve_rows(best, seed, r, phase="final (test)")
    ]

    print_table(
        f"Candidates on a validation split (1/6 of train, seed 0): {study.title}",
        [
            {"candidate": label, "validation accuracy (%)": f"{100 * acc:.2f}"}
            for label, acc in selection.items()
        ],
    )
    table = [
        {
            "model": f"mlp_jax: {best}",
            "test accuracy (%)": pm(final(results)),
            "source": f"this repo, {study.seeds} seeds",
        }
    ]
    if "fashion" in study.dataset.name:
        table += [
            {"model": name, "test accuracy (%)": f"{100 * acc:.1f}", "source": "published"}
            for name, acc in BASELINES.items()
        ]
    print_table(f"Best MLP: {study.title}", table)
    study.save(rows, _figure(study, best, results))
    return 0


def _figure(study: Study, best: str, results: list) -> Figure:
    figure = Figure(figsize=(11, 4.6))
    curves, bars = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    test = mean_curve(results, "test_accuracy")
    train = mean_curve(results, "train_accuracy")
    epochs = np.arange(1, len(test) + 1)
    curves.plot(epochs, 100 * train, "o-", markersize=3, label="train (running, with dropout)")
    curves.plot(epochs, 100 * test, "s-", markersize=3, label="test")
    curves.set(
        xlabel="epoch",
        ylabel="accuracy (%)",
        ylim=(80, 100),
        title=f"{best}: mean of {study.seeds} seeds",
    )
    curves.grid(alpha=0.3)
    names, means, stds = ["mlp_jax (this recipe)"], [], []
    mean, std = mean_std(final(results))
    means.append(100 * mean)
    stds.append(100 * std)
    if "fashion" in study.dataset.name:
        for name, accuracy in BASELINES.items():
            names.append(name)
            means.append(100 * accuracy)
            stds.append(0.0)
    positions = np.arange(len(names))
    bars.barh(positions, means, xerr=stds, capsize=4, color=["C2"] + ["C7"] * (len(names) - 1))
    for position, value in zip(positions, means, strict=True):
        bars.text(value + 0.1, position, f"{value:.2f}%", va="center", fontsize=9)
    bars.set_yticks(positions, names, fontsize=8)
    bars.set(
        xlabel="test accuracy (%)",
        xlim=(min(means) - 3, max(means) + 1.5),
        title="against published MLP baselines",
    )
    bars.invert_yaxis()
    bars.grid(alpha=0.3, axis="x")
    curves.legend()
    figure.suptitle(f"{study.title}: the best MLP trained here")
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
