"""An MLP has no translation invariance: test accuracy when the test images move 1 to 3 pixels.

python -m experiments.shifts [--idx-dir /usr/share/datasets/fashion-mnist] [--seeds 5] [--quick]
The default net trains on the unshifted train split (seeds 0..k-1); each final model is then
scored on the test images shifted by d = 0..3 pixels left, right, up and down (the vacated rows or
columns are black), and on the diagonal shifts (d, d). Accuracy per distance is the mean over the
4 directions; intervals are 95% over seeds plus test noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments import stats
from experiments.common import (
    Study,
    make_parser,
    noise_floor_note,
    per_example_correct,
    print_table,
)

DISTANCES = (0, 1, 2, 3)
DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}


def shift(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """images [N, H, W, C] moved `rows` down and `cols` right; what moves in is 0 (black)."""
    out = np.zeros_like(images)
    height, width = images.shape[1:3]
    source = images[:, max(-rows, 0) : height - max(rows, 0), max(-cols, 0) : width - max(cols, 0)]
    out[:, max(rows, 0) : height - max(-rows, 0), max(cols, 0) : width - max(-cols, 0)] = source
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=5).parse_args(argv)
    study = Study("shifts", args)
    dataset = study.dataset
    results = study.run(study.base, "default net")
    rows, correct = [], {}  # correct[(direction, d)]: bool[k, n]
    for distance in DISTANCES:
        for direction, (dr, dc) in {**DIRECTIONS, "diagonal": (1, 1)}.items():
            images = shift(dataset.test_images, dr * distance, dc * distance)
            correct[direction, distance] = np.stack(
                [per_example_correct(r.state, images, dataset.test_labels) for r in results]
            )
            for seed, seed_correct in enumerate(correct[direction, distance]):
                rows.append(
                    {
                        "distance_pixels": distance,
                        "direction": direction,
                        "seed": seed,
                        "test_accuracy": round(float(seed_correct.mean()), 5),
                    }
                )
    n = dataset.num_test
    table, means = [], {}
    for distance in DISTANCES:
        axis_aligned = np.mean([correct[d, distance] for d in DIRECTIONS], axis=0)  # [k, n]
        means[distance] = axis_aligned.mean(axis=1)
        diagonal = correct["diagonal", distance].mean(axis=1)
        table.append(
            {
                "shift (pixels)": distance,
                "left/right/up/down (%)": stats.accuracy_interval(means[distance], n).percent(),
                "diagonal (%)": stats.accuracy_interval(diagonal, n).percent(),
                "vs unshifted, 1 seed's paired McNemar (left shift)": (
                    ""
                    if distance == 0
                    else stats.format_p(
                        stats.mcnemar(correct["left", 0][0], correct["left", distance][0]).p_value
                    )
                ),
            }
        )
    print_table(
        f"Shifted test images: {study.title}, default net, {study.seeds} seeds, "
        f"{study.base.epochs} epochs",
        table,
    )
    print(noise_floor_note(dataset, float(np.mean(means[0]))))
    study.save(rows, _figure(study, correct, n))
    return 0


def _figure(study: Study, correct, n: int) -> Figure:
    figure = Figure(figsize=(12, 4.8))
    curve, examples = figure.subfigures(1, 2, width_ratios=[1.3, 1])
    axes = curve.subplots()
    colors = {
        "right": "tab:blue",
        "left": "tab:orange",
        "down": "tab:green",
        "up": "tab:red",
        "diagonal": "tab:purple",
    }
    for direction, color in colors.items():
        intervals = [
            stats.accuracy_interval(correct[direction, d].mean(axis=1), n) for d in DISTANCES
        ]
        axes.errorbar(
            np.array(DISTANCES) + 0.04 * (list(colors).index(direction) - 2),
            [100 * i.mean for i in intervals],
            yerr=[100 * i.half_width for i in intervals],
            fmt="o-",
            capsize=3,
            color=color,
            label=direction,
        )
    axes.set_xticks(DISTANCES)
    axes.set(
        xlabel="shift of the test images (pixels)",
        ylabel="test accuracy (%)",
        ylim=(0, 100),
        title=f"{study.title}: default MLP on shifted test images\n"
        f"(mean of {study.seeds} seeds, 95% intervals; trained unshifted)",
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    grid = examples.subplots(1, 4)
    image = study.dataset.test_images[0]
    for axes, distance in zip(grid, DISTANCES, strict=True):
        axes.imshow(shift(image[None], 0, distance)[0, ..., 0], cmap="gray_r")
        axes.set(title=f"{distance} px right", xticks=[], yticks=[])
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
