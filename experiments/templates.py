"""The one-layer net's templates as they form: at initialisation, after some updates, at the end.

python -m experiments.templates [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
The lecture-3 net: 784-10 softmax, inputs scaled to [0, 1], plain SGD at a constant lr 0.1,
batch 128, seed 0. Column c of the kernel is class c's template; it is drawn after 0, 10, 100 and
all updates, with that snapshot's test accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments.common import Study, make_parser, print_table
from mlp_jax import evaluate, train_step
from mlp_jax.data import class_names
from mlp_jax.state import build_model, init_state

SNAPSHOTS = (0, 10, 100)  # and the last update


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=1, epochs=10).parse_args(argv)
    study = Study("templates", args)
    config = study.base.replace(
        layers=1,
        hidden=None,
        normalize="scale",
        optimizer="sgd",
        lr=0.1,
        schedule="constant",
        batch_size=128,
        seed=0,
    )
    dataset = study.dataset
    state = init_state(config, dataset, build_model(config, dataset))
    steps = config.epochs * -(-dataset.num_train // config.batch_size)
    snapshots = sorted({s for s in SNAPSHOTS if s < steps} | {steps})
    rng = np.random.default_rng(config.seed)
    rows, kernels = [], {}
    for step in range(steps + 1):
        if step in snapshots:
            test = evaluate(state, dataset.test_images, dataset.test_labels)
            kernels[step] = np.array(state.params["output"]["kernel"])
            epochs = round(step * config.batch_size / dataset.num_train, 2)
            accuracy = round(float(test["accuracy"]), 5)
            rows.append({"updates": step, "epochs": epochs, "test_accuracy": accuracy})
        if step == steps:
            break
        index = rng.choice(dataset.num_train, config.batch_size, replace=False)
        batch = {"image": dataset.train_images[index], "label": dataset.train_labels[index]}
        state, _ = train_step(state, batch)
    print_table(f"Templates over training: {study.title}, 784-10, SGD lr 0.1, batch 128", rows)
    study.save(rows, _figure(study, kernels, rows))
    return 0


def _figure(study: Study, kernels: dict[int, np.ndarray], rows) -> Figure:
    names = class_names(study.dataset.name, study.dataset.num_classes)
    shape = study.dataset.image_shape[:2]
    figure = Figure(figsize=(14, 1.6 * len(kernels) + 1))
    grid = figure.subplots(len(kernels), 10)
    for row_axes, (step, kernel), row in zip(grid, kernels.items(), rows, strict=True):
        limit = np.abs(kernel).max()  # one symmetric scale per snapshot: red for, blue against
        for c, axes in enumerate(row_axes):
            axes.imshow(kernel[:, c].reshape(shape), cmap="bwr", vmin=-limit, vmax=limit)
            axes.set(xticks=[], yticks=[])
            if step == next(iter(kernels)):
                axes.set_title(names[c], fontsize=11)
        row_axes[0].set_ylabel(f"{step} updates\n{100 * row['test_accuracy']:.1f}%", fontsize=11)
    figure.suptitle(
        f"{study.title}: the one-layer net's templates (kernel columns) at initialisation, "
        "after some updates and at the end\n(red: evidence for the class, blue: against; "
        "row label: updates so far and test accuracy)",
        fontsize=12,
    )
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
