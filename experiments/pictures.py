"""Study 6: the pictures people want to look at, from two runs on the chosen data.

python -m experiments.pictures [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
The one-layer net's 10 weight templates; and, for the default 5-layer net, test images with their
predictions, the confusion matrix and the train/test loss and error curves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments.common import Study, curve_rows, make_parser, print_table, write_csv
from mlp_jax import eval_step
from mlp_jax.data import class_names
from mlp_jax.figures import (
    plot_curves,
    plot_predictions,
    plot_templates,
)

NUM_SHOWN = 40  # the first 40 test images, unpicked, so the errors shown are typical


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=1).parse_args(argv)
    study = Study("pictures", args)
    dataset = study.dataset
    names = class_names(dataset.name, dataset.num_classes)
    # Inputs scaled to [0, 1] as in the lecture: always-black pixels then get no gradient, so the
    # templates show the learned strokes rather than the random init on the background.
    template_config = study.base.replace(layers=1, hidden=None, normalize="scale", seed=0)
    one_layer = study.train(template_config, "1 layer (784-10, inputs scaled to [0, 1])")
    mlp_config = study.base.replace(seed=0)
    sizes = "-".join(map(str, [784, *mlp_config.hidden_sizes, dataset.num_classes]))
    mlp = study.train(mlp_config, f"{mlp_config.layers} layers ({sizes})")

    figures = {
        "templates": plot_templates(
            np.asarray(one_layer.state.params["output"]["kernel"]),
            dataset.image_shape,
            names,
            f"{study.title}: the templates (kernel columns) of the one-layer net 784-10, test acc. "
            f"{100 * one_layer.test['accuracy']:.2f}%",
        ),
        "predictions": plot_predictions(
            dataset.test_images[:NUM_SHOWN],
            dataset.test_labels[:NUM_SHOWN],
            np.asarray(_predictions(mlp, NUM_SHOWN)),
            names,
            f"{study.title}: first {NUM_SHOWN} test images, {sizes} MLP",
        ),
        "confusion": confusion_figure(
            np.asarray(mlp.test["confusion"]),
            names,
            f"{study.title}: confusion matrix of the {sizes} MLP, {dataset.num_test:,} test "
            f"images, accuracy {100 * mlp.test['accuracy']:.2f}%",
        ),
        "curves": plot_curves(
            mlp.history,
            f"{study.title}: {sizes} MLP, {mlp_config.optimizer} lr {mlp_config.lr:g} "
            f"{mlp_config.schedule}, batch {mlp_config.batch_size}",
        ),
    }
    for kind, figure in figures.items():
        path = study.stem.with_name(f"{study.stem.name}_{kind}.png")
        figure.savefig(path, dpi=110)
        print(f"wrote {path}")
    rows = curve_rows("1 layer", 0, one_layer) + curve_rows(f"{mlp_config.layers} layers", 0, mlp)
    write_csv(rows, study.csv_path)
    print(f"wrote {study.csv_path}")

    confusion = np.asarray(mlp.test["confusion"])
    recall = np.diag(confusion) / confusion.sum(axis=1)
    mistakes = confusion - np.diag(np.diag(confusion))
    true, predicted = np.unravel_index(np.argsort(mistakes, axis=None)[::-1][:3], mistakes.shape)
    print_table(
        f"Per-class test accuracy: {study.title}, {sizes} MLP",
        [
            {"class": name, "accuracy (%)": f"{100 * r:.1f}"}
            for name, r in zip(names, recall, strict=True)
        ],
    )
    pairs = zip(true, predicted, strict=True)
    confusions = ", ".join(f"{names[t]} -> {names[p]} ({mistakes[t, p]})" for t, p in pairs)
    print(f"most frequent confusions (true -> predicted): {confusions}")
    upper = [names.index(n) for n in UPPER_BODY if n in names]
    if upper:
        within = mistakes[np.ix_(upper, upper)].sum()
        print(
            f"errors with true and predicted class both upper-body garments "
            f"({', '.join(UPPER_BODY)}): {within} of {mistakes.sum()} "
            f"({100 * within / mistakes.sum():.0f}%)"
        )
    return 0


UPPER_BODY = ("T-shirt/top", "Pullover", "Coat", "Shirt")  # Fashion-MNIST; Dress is not one


def confusion_figure(confusion: np.ndarray, names: Sequence[str], title: str) -> Figure:
    """Counts (left) beside the row-normalised matrix (right: % of each true class), whose colour
    scale stops at the largest off-diagonal share so that the confusions, not the diagonal, show."""
    shares = 100 * confusion / confusion.sum(axis=1, keepdims=True)
    off_diagonal = shares[~np.eye(len(names), dtype=bool)].max()
    figure = Figure(figsize=(17, 8))
    ticks = np.arange(len(names))
    panels = figure.subplots(1, 2)
    for axes, values, label, vmax, fmt in zip(
        panels,
        [confusion, shares],
        ["test images", "% of the true class (colour capped at the largest confusion)"],
        [confusion.max(), off_diagonal],
        ["{:d}", "{:.1f}"],
        strict=True,
    ):
        image = axes.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
        figure.colorbar(image, ax=axes, label=label, shrink=0.8)
        axes.set_xticks(ticks, names, rotation=45, ha="right", fontsize=11)
        axes.set_yticks(ticks, names, fontsize=11)
        axes.set(xlabel="predicted class", ylabel="true class")
        for (row, column), value in np.ndenumerate(values):
            color = "white" if value > vmax / 2 else "black"
            axes.text(
                column, row, fmt.format(value), ha="center", va="center", fontsize=9, color=color
            )
    panels[0].set_title("counts", fontsize=13)
    panels[1].set_title(
        "row-normalised: % of each true class (recall on the diagonal)", fontsize=13
    )
    figure.suptitle(title, fontsize=13)
    figure.tight_layout()
    return figure


def _predictions(result, count: int) -> np.ndarray:
    """int[count]: the trained model's predicted class for the first `count` test images."""
    batch = {
        "image": result.dataset.test_images[:count],
        "label": result.dataset.test_labels[:count],
    }
    return eval_step(result.state, batch)["prediction"]


if __name__ == "__main__":
    raise SystemExit(main())
