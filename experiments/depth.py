"""Study 1 (the assignment): accuracy against the number of layers, 1 to 5 and 7, over seeds.

python -m experiments.depth [--idx-dir /usr/share/datasets/fashion-mnist] [--seeds 5] [--quick]
Each depth trains on 5/6 of the train split and is scored on the held-out 1/6 (validation: the
depth is picked there), then on the whole train split and is scored once on test. Hidden widths
halve from 512, so depth and parameter count change together (the table gives both).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments import stats
from experiments.common import (
    Measured,
    Study,
    best_on_validation,
    make_parser,
    measure,
    noise_floor_note,
    print_table,
    run_row,
)

DEPTHS = (1, 2, 3, 4, 5, 7)  # Dense layers; hidden widths halve from 512 (7 layers: ... 32, 16)
QUICK_DEPTHS = (1, 2)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=5).parse_args(argv)
    study = Study("depth", args)
    measured, rows = [], []
    for layers in QUICK_DEPTHS if study.quick else DEPTHS:
        config = study.base.replace(layers=layers, hidden=None)
        if study.quick:
            config = config.replace(hidden=(32,) * (layers - 1))
        label = "-".join(map(str, [784, *config.hidden_sizes, 10]))
        m = measure(study, config, label)
        measured.append(m)
        for seed, (result, validation) in enumerate(zip(m.results, m.validation, strict=True)):
            rows.append(
                run_row(label, seed, result, layers=layers, params=m.params)
                | {"validation_accuracy": round(validation, 5), "wall_seconds_all_seeds": m.seconds}
            )
    picked = best_on_validation(measured)
    table = [m.row(reference=picked) | {"layers": m.config.layers} for m in measured]
    print_table(
        f"Depth: {study.title}, {study.seeds} seeds, {study.base.epochs} epochs; picked on "
        f"validation: {picked.label}. Intervals: 95%, seeds' spread plus test-set noise; "
        f"differences: paired bootstrap over seeds and test images",
        table,
    )
    print(noise_floor_note(study.dataset, picked.test[0]))
    study.save(rows, _figure(study, measured, picked))
    return 0


def _figure(study: Study, measured: list[Measured], picked: Measured) -> Figure:
    figure = Figure(figsize=(8, 5))
    axes = figure.subplots()
    layers = [m.config.layers for m in measured]
    for offset, split, color in [(-0.08, "validation", "tab:gray"), (0.08, "test", "tab:blue")]:
        intervals = [
            stats.accuracy_interval(getattr(m, split), getattr(m, f"num_{split}")) for m in measured
        ]
        means = np.array([100 * i.mean for i in intervals])
        errors = np.array([[100 * (i.mean - i.low), 100 * (i.high - i.mean)] for i in intervals])
        axes.errorbar(
            np.array(layers) + offset,
            means,
            yerr=errors.T,
            fmt="o",
            capsize=4,
            color=color,
            label=f"{split} accuracy, mean of {study.seeds} seeds, 95% interval",
        )
    axes.axvline(picked.config.layers, color="tab:green", ls=":", label="picked on validation")
    axes.set_xticks(layers)
    axes.set(
        xlabel="number of Dense layers (hidden layers + output)",
        ylabel="accuracy (%)",
        title=f"{study.title}: accuracy against depth\n({study.base.epochs} epochs, "
        f"{study.base.optimizer} lr {study.base.lr:g}, {study.base.schedule}, "
        f"batch {study.base.batch_size})",
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
