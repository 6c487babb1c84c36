"""Minibatches sampled with replacement against shuffled epochs (lecture 5 shows both).

python -m experiments.sampling [--idx-dir /usr/share/datasets/fashion-mnist] [--seeds 5] [--quick]
Shuffled: each epoch is a fresh permutation cut into batches (mlp_jax.train_epoch; every image
once). With replacement: lecture 5's `torch.LongTensor(bs).random_(0, N)`, the same number of
steps of the same batch size, each batch's indices drawn uniformly (some images twice, about
(1 - 1/N)^N = 37% of them not at all in an epoch). Default net and recipe otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure

from experiments import stats
from experiments.common import (
    Study,
    band_axes,
    make_parser,
    noise_floor_note,
    print_table,
    stacked_correct,
    train_model_many,
)
from mlp_jax import count_params, steps_per_epoch, train_step
from mlp_jax.state import build_model

COLORS = {"shuffled epochs": "tab:blue", "sampled with replacement": "tab:orange"}


@functools.partial(jax.jit, static_argnames="batch_size", donate_argnums=0)
def sampled_epoch(state, images, labels, key, batch_size: int):
    """As many steps as a shuffled epoch, each on batch_size indices drawn with replacement."""
    n = images.shape[0]
    indices = jax.random.randint(key, (steps_per_epoch(n, batch_size), batch_size), 0, n)

    def body(state, index):
        return train_step(state, {"image": images[index], "label": labels[index]})

    state, per_step = jax.lax.scan(body, state, indices)
    seen = jnp.zeros(n, bool).at[indices.reshape(-1)].set(True)
    return state, {
        "train_loss": jnp.mean(per_step["loss"]),
        "train_accuracy": jnp.mean(per_step["accuracy"]),
        "unseen_fraction": 1.0 - jnp.mean(seen),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=5).parse_args(argv)
    study = Study("sampling", args)
    dataset, config = study.dataset, study.base
    model = build_model(config, dataset)
    rows, table, correct, histories = [], [], {}, {}
    for label, epoch_fn in [("shuffled epochs", None), ("sampled with replacement", sampled_epoch)]:
        history, states = train_model_many(
            config, dataset, model, range(study.seeds), [config.lr], epoch_fn
        )
        histories[label] = history
        correct[label] = stacked_correct(states, history, dataset)
        for run in history:
            rows += [{"sampling": label, **record} for record in run]
        train_seconds = sum(record["epoch_seconds"] for record in history[0])
        table.append(
            {
                "sampling": label,
                "params": f"{count_params(jax.tree.map(lambda leaf: leaf[0], states.params)):,}",
                "epochs": config.epochs,
                f"train s ({study.seeds} seeds together)": f"{train_seconds:.0f}",
                "test (%)": stats.accuracy_cell(
                    [float(c.mean()) for c in correct[label]], dataset.num_test
                ),
            }
        )
    comparison = stats.paired_bootstrap(
        correct["sampled with replacement"], correct["shuffled epochs"]
    )
    table.append({"sampling": "with replacement minus shuffled", "test (%)": comparison.percent()})
    unseen = 100 * (1 - 1 / dataset.num_train) ** dataset.num_train
    print_table(
        f"Minibatch sampling: {study.title}, default net, {study.seeds} seeds, "
        f"{config.epochs} epochs (with replacement leaves ~{unseen:.1f}% of images unseen per "
        "epoch)",
        table,
    )
    print(noise_floor_note(dataset, float(correct["shuffled epochs"].mean())))
    figure = Figure(figsize=(12, 4.5))
    left, right = figure.subplots(1, 2)
    band_axes(left, histories, "train_loss", COLORS, scale=1.0)
    band_axes(right, histories, "test_accuracy", COLORS)
    left.set(ylabel="running train loss", yscale="log")
    right.set(ylabel="test accuracy (%)")
    right.legend(loc="lower right")
    figure.suptitle(
        f"{study.title}: shuffled epochs against minibatches sampled with replacement "
        f"(mean and min-max of {study.seeds} seeds)"
    )
    figure.tight_layout()
    study.save(rows, figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
