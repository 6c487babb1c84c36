"""Study 1 (the assignment): test accuracy against the number of layers, 1 to 5 and 7, over seeds.

python -m experiments.depth [--idx-dir /usr/share/datasets/fashion-mnist] [--seeds 3] [--quick]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments.common import Study, final, make_parser, pm, print_table, run_row

DEPTHS = (1, 2, 3, 4, 5, 7)  # Dense layers; hidden widths halve from 512 (7 layers: ... 32, 16)
QUICK_DEPTHS = (1, 2)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0]).parse_args(argv)
    study = Study("depth", args)
    depths = QUICK_DEPTHS if study.quick else DEPTHS
    rows, table, accuracies = [], [], {}
    for layers in depths:
        config = study.base.replace(layers=layers, hidden=None)
        if study.quick:
            config = config.replace(hidden=(32,) * (layers - 1))
        label = "-".join(map(str, [784, *config.hidden_sizes, 10]))
        results = study.run(config, f"{layers} layers ({label})")
        rows += [run_row(label, seed, r, layers=layers) for seed, r in enumerate(results)]
        accuracies[layers] = final(results)
        table.append(
            {
                "layers": layers,
                "widths": label,
                "test accuracy (%)": pm(accuracies[layers]),
                "train accuracy, running (%)": pm(final(results, "train_accuracy")),
                f"s/epoch, {study.seeds} seeds together": (
                    f"{rows[-1]['train_seconds'] / rows[-1]['epochs']:.2f}"
                ),
            }
        )
    print_table(f"Depth: {study.title}, {study.seeds} seeds, {study.base.epochs} epochs", table)
    study.save(rows, _figure(study, accuracies))
    return 0


def _figure(study: Study, accuracies: dict[int, list[float]]) -> Figure:
    figure = Figure(figsize=(6.5, 4.5))
    axes = figure.subplots()
    layers = list(accuracies)
    means = [100 * np.mean(v) for v in accuracies.values()]
    stds = [100 * np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in accuracies.values()]
    axes.errorbar(
        layers,
        means,
        yerr=stds,
        fmt="o-",
        capsize=4,
        label=f"test accuracy, mean ± std of {study.seeds} seeds",
    )
    axes.set_xticks(layers)
    axes.set(
        xlabel="number of Dense layers (hidden layers + output)",
        ylabel="test accuracy (%)",
        title=f"{study.title}: test accuracy against depth\n({study.base.epochs} epochs, "
        f"{study.base.optimizer} lr {study.base.lr:g}, {study.base.schedule}, "
        f"batch {study.base.batch_size})",
    )
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
