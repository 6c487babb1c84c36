"""What the net sees under --augment, and what augmentation costs: a picture and epoch times.

python -m experiments.augmentation [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
Draws a grid of training images (first column) and augmented draws of them (the others), and
times whole compiled training epochs with and without augmentation, taking turns: the median
of --epochs timed epochs each, after one untimed epoch that compiles (--picture-only: no timing).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from experiments.common import Study, make_parser, print_table
from mlp_jax import Config, train_epoch
from mlp_jax.augment import augment_images
from mlp_jax.data import class_names
from mlp_jax.state import build_model, epoch_key, init_state

ROWS, DRAWS = 8, 7


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__.splitlines()[0], seeds=1, epochs=5)
    parser.add_argument(
        "--augment", default="flip,shift:2", help="the --augment spec to draw and to time"
    )
    parser.add_argument("--picture-only", action="store_true", help="draw the grid, time nothing")
    args = parser.parse_args(argv)
    study = Study("augmentation", args)
    spec = Config(augment=args.augment).augmentations  # ConfigError names a bad spec
    figure = augmentation_grid(study, spec, args.augment)

    timed_epochs = 2 if study.quick else args.epochs
    if args.picture_only:
        figure.savefig(study.png_path, dpi=110)
        print(f"wrote {study.png_path}")
        return 0
    configs = [study.base.replace(augment=augment) for augment in (None, args.augment)]
    rows = []
    for config, seconds in zip(configs, time_epochs(configs, study, timed_epochs), strict=True):
        rows.append(
            {
                "augment": config.augment or "none",
                "net": "-".join(map(str, (784, *config.hidden_sizes, 10))),
                "batch_size": config.batch_size,
                "median_epoch_seconds": round(statistics.median(seconds), 3),
                "epoch_seconds": " ".join(f"{s:.3f}" for s in seconds),
                "examples_per_second": round(study.dataset.num_train / statistics.median(seconds)),
            }
        )
    overhead = rows[1]["median_epoch_seconds"] / rows[0]["median_epoch_seconds"] - 1
    rows[0]["overhead"], rows[1]["overhead"] = "-", f"{100 * overhead:+.0f}%"
    print_table(f"Epoch time with and without augmentation: {study.title}", rows)
    study.save(rows, figure)
    return 0


def time_epochs(configs: list[Config], study: Study, epochs: int) -> list[list[float]]:
    """Seconds of each of `epochs` compiled training epochs per config, after one untimed
    (compiling) epoch each. The configs take turns epoch by epoch, so that a shared machine's
    changing load falls on all of them alike."""
    dataset = study.dataset
    images, labels = jnp.asarray(dataset.train_images), jnp.asarray(dataset.train_labels)
    states = [init_state(c, dataset, build_model(c, dataset)) for c in configs]
    seconds: list[list[float]] = [[] for _ in configs]
    for epoch in range(epochs + 1):
        for k, config in enumerate(configs):
            start = time.perf_counter()
            states[k], metrics = train_epoch(
                states[k],
                images,
                labels,
                epoch_key(config, epoch + 1),
                batch_size=config.batch_size,
            )
            jax.block_until_ready((states[k], metrics))
            if epoch > 0:
                seconds[k].append(time.perf_counter() - start)
    return seconds


def augmentation_grid(study: Study, spec: tuple, text: str) -> Figure:
    """One training image per row (the first of each of ROWS classes): itself, then DRAWS draws."""
    dataset = study.dataset
    labels = dataset.train_labels
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)[:ROWS]]
    images = jnp.asarray(dataset.train_images[firsts])
    draws = [augment_images(jax.random.PRNGKey(d), images, spec) for d in range(DRAWS)]
    names = class_names(dataset.name, dataset.num_classes)
    figure = Figure(figsize=(1.1 * (DRAWS + 1), 1.15 * len(firsts)))
    axes = figure.subplots(len(firsts), DRAWS + 1, squeeze=False)
    for row, index in enumerate(firsts):
        pictures = [images[row], *(draw[row] for draw in draws)]
        for column, picture in enumerate(pictures):
            ax = axes[row, column]
            ax.imshow(np.asarray(picture)[..., 0], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(names[int(labels[index])], fontsize=7)
        axes[0, 0].set_title("original", fontsize=8)
        for column in range(1, DRAWS + 1):
            axes[0, column].set_title(f"draw {column}", fontsize=8)
    figure.suptitle(f"{study.title}: --augment {text}", fontsize=10)
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
