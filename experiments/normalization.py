"""Input normalisation compared: none (raw 0..255), divide by 255, the TA deck's (x - 0.5) / 0.5,
and standardise (train-set mean and std), each at its own learning rate chosen on validation.

python -m experiments.normalization [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
The default net and recipe (momentum 0.9, cosine, batch 128) except the input scaling. Per
scaling, a peak-lr grid is run on the validation split (--seeds seeds; a diverged seed counts 0);
the picked lr then trains --final-seeds seeds on the whole train split, scored once on test, and
every scaling is compared with standardise by a paired bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from matplotlib.figure import Figure

from experiments import stats
from experiments.common import (
    Study,
    make_parser,
    noise_floor_note,
    print_table,
    stacked_correct,
    train_model_many,
)
from mlp_jax import MLP, count_params
from mlp_jax.data import train_mean_std

LRS = (1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.2)
SCALINGS = {  # label -> (mean, std) in [0, 1] pixel units: the model sees (x / 255 - mean) / std
    "none (raw 0..255)": lambda images: (0.0, 1 / 255),
    "divide by 255": lambda images: (0.0, 1.0),
    "(x - 0.5) / 0.5 (TA deck)": lambda images: (0.5, 0.5),
    "standardise": train_mean_std,
}
COLORS = dict(zip(SCALINGS, ["tab:red", "tab:orange", "tab:green", "tab:blue"], strict=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__.splitlines()[0], seeds=2)
    parser.add_argument("--final-seeds", type=int, default=5, help="seeds of the test runs")
    args = parser.parse_args(argv)
    study = Study("normalization", args)
    validation, dataset, config = study.validation, study.dataset, study.base
    lrs = (1e-4, 0.05) if study.quick else LRS
    final_seeds = 1 if study.quick else args.final_seeds
    rows, table, correct, sweeps = [], [], {}, {}

    def model(images, scaling) -> MLP:
        mean, std = SCALINGS[scaling](images)
        return MLP(config.hidden_sizes, dataset.num_classes, mean=float(mean), std=float(std))

    for scaling in SCALINGS:
        histories, _ = train_model_many(
            config, validation, model(validation.train_images, scaling), range(study.seeds), lrs
        )
        sweeps[scaling] = {}
        for history in histories:
            last = history[-1]
            value = last["test_accuracy"] if np.isfinite(last["train_loss"]) else np.nan
            sweeps[scaling].setdefault(last["peak_lr"], []).append(value)
            rows.append(
                {
                    "scaling": scaling,
                    "split": "validation",
                    "lr": last["peak_lr"],
                    "seed": last["seed"],
                    "accuracy": round(value, 5),
                    "diverged": not np.isfinite(value),
                }
            )
        picked = max(sweeps[scaling], key=lambda lr: np.mean(np.nan_to_num(sweeps[scaling][lr])))
        net = model(dataset.train_images, scaling)
        history, states = train_model_many(config, dataset, net, range(final_seeds), [picked])
        correct[scaling] = stacked_correct(states, history, dataset)
        seconds = sum(r["epoch_seconds"] for r in history[0])
        for seed, seed_correct in enumerate(correct[scaling]):
            rows.append(
                {
                    "scaling": scaling,
                    "split": "test",
                    "lr": picked,
                    "seed": seed,
                    "accuracy": round(float(seed_correct.mean()), 5),
                    "diverged": not np.isfinite(history[seed][-1]["train_loss"]),
                }
            )
        table.append(
            {
                "input scaling": scaling,
                "picked lr (validation)": f"{picked:g}",
                "validation at lr 0.05 (%)": stats.accuracy_cell(
                    sweeps[scaling].get(0.05, [np.nan]), validation.num_test
                ),
                "params": f"{count_params(jax.tree.map(lambda leaf: leaf[0], states.params)):,}",
                "epochs": config.epochs,
                f"train s ({final_seeds} seeds together)": f"{seconds:.0f}",
                "test at picked lr (%)": stats.accuracy_cell(
                    [float(c.mean()) for c in correct[scaling]], dataset.num_test
                ),
            }
        )
    reference = "standardise"
    for row, scaling in zip(table, SCALINGS, strict=True):
        row["test: minus standardise"] = (
            "(reference)"
            if scaling == reference
            else stats.paired_bootstrap(correct[scaling], correct[reference]).percent()
        )
    print_table(
        f"Input normalisation: {study.title}, default net, lr picked per scaling on validation "
        f"({study.seeds} seeds), test {final_seeds} seeds, {config.epochs} epochs",
        table,
    )
    print(noise_floor_note(dataset, float(correct[reference].mean())))
    study.save(rows, _figure(study, sweeps, validation.num_test))
    return 0


def _figure(study: Study, sweeps, n: int) -> Figure:
    figure = Figure(figsize=(9, 5.5))
    axes = figure.subplots()
    for scaling, by_lr in sweeps.items():
        xs, means, errors = [], [], []
        for lr, values in sorted(by_lr.items()):
            finite = [v for v in values if np.isfinite(v)]
            for _ in range(len(values) - len(finite)):
                axes.plot(lr, 0, "x", color=COLORS[scaling], ms=9, mew=2)
            if finite:
                interval = stats.accuracy_interval(finite, n)
                xs.append(lr)
                means.append(100 * interval.mean)
                errors.append(100 * interval.half_width)
        axes.errorbar(
            xs, means, yerr=errors, fmt="o-", capsize=3, color=COLORS[scaling], label=scaling
        )
    axes.set_xscale("log")
    axes.set(
        xlabel="peak learning rate (momentum 0.9, cosine)",
        ylabel="validation accuracy (%)",
        ylim=(0, 100),
        title=f"{study.title}: input scaling against learning rate, on validation\n"
        f"({study.seeds} seeds, 95% intervals; x = a diverged seed)",
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")  # the low learning rates' corner above the curves is empty
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
