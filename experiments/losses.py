"""Mean squared error against cross-entropy, each at its own learning rate chosen on validation.

python -m experiments.losses [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
MSE is the squared distance between the softmax probabilities and the one-hot target, summed over
classes and averaged over the batch; cross-entropy is the package's loss. Default net and recipe
(momentum 0.9, cosine, batch 128) otherwise. Per loss, a peak-lr grid runs on the validation split
(--seeds seeds); the picked lr trains --final-seeds seeds on the whole train split, scored once on
test, with a paired bootstrap between the two losses.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
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
from mlp_jax import count_params, train_epoch
from mlp_jax.state import build_model
from mlp_jax.steps import batch_indices

LRS = (0.01, 0.05, 0.2, 0.5, 1.0)
COLORS = {"cross-entropy": "tab:blue", "MSE on softmax": "tab:red"}


def mse_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over the real (mask) examples of sum_k (softmax(logits)_k - onehot(label)_k)^2."""
    probabilities = jax.nn.softmax(logits)
    target = jax.nn.one_hot(labels, logits.shape[-1])
    per_example = jnp.sum((probabilities - target) ** 2, axis=-1)
    return jnp.sum(per_example * mask) / jnp.sum(mask)


@functools.partial(jax.jit, static_argnames="batch_size", donate_argnums=0)
def mse_epoch(state, images, labels, key, batch_size: int):
    """train_epoch with the MSE loss: a fresh permutation, every image once (last batch masked)."""
    order = jax.random.permutation(key, images.shape[0])
    indices, masks = batch_indices(order, batch_size)
    masks = jnp.ones(indices.shape, bool) if masks is None else masks

    def body(state, xs):
        index, mask = xs
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            logits = state.apply_fn(
                {"params": params}, images[index], train=True, rngs={"dropout": rng}
            )
            return mse_loss(logits, labels[index], mask), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        correct = jnp.sum((jnp.argmax(logits, -1) == labels[index]) * mask) / jnp.sum(mask)
        return state.apply_gradients(grads=grads), {"loss": loss, "accuracy": correct}

    state, per_step = jax.lax.scan(body, state, (indices, masks))
    return state, {
        "train_loss": jnp.mean(per_step["loss"]),
        "train_accuracy": jnp.mean(per_step["accuracy"]),
    }


EPOCH_FNS = {"cross-entropy": train_epoch, "MSE on softmax": mse_epoch}


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__.splitlines()[0], seeds=2)
    parser.add_argument("--final-seeds", type=int, default=5, help="seeds of the test runs")
    args = parser.parse_args(argv)
    study = Study("losses", args)
    dataset, validation, config = study.dataset, study.validation, study.base
    lrs = (0.05, 0.5) if study.quick else LRS
    final_seeds = 1 if study.quick else args.final_seeds
    rows, table, correct, histories = [], [], {}, {}
    for loss, epoch_fn in EPOCH_FNS.items():
        sweep, _ = train_model_many(
            config, validation, build_model(config, validation), range(study.seeds), lrs, epoch_fn
        )
        by_lr: dict[float, list[float]] = {}
        for run in sweep:
            last = run[-1]
            value = last["test_accuracy"] if np.isfinite(last["train_loss"]) else np.nan
            by_lr.setdefault(last["peak_lr"], []).append(value)
            rows.append(
                {
                    "loss": loss,
                    "split": "validation",
                    "lr": last["peak_lr"],
                    "seed": last["seed"],
                    "accuracy": round(value, 5),
                }
            )
        picked = max(by_lr, key=lambda lr: np.mean(np.nan_to_num(by_lr[lr])))
        history, states = train_model_many(
            config, dataset, build_model(config, dataset), range(final_seeds), [picked], epoch_fn
        )
        histories[loss] = history
        correct[loss] = stacked_correct(states, history, dataset)
        for seed, seed_correct in enumerate(correct[loss]):
            rows.append(
                {
                    "loss": loss,
                    "split": "test",
                    "lr": picked,
                    "seed": seed,
                    "accuracy": round(float(seed_correct.mean()), 5),
                }
            )
        table.append(
            {
                "loss": loss,
                "validation per lr (%)": "; ".join(
                    f"{lr:g}: {stats.accuracy_cell(v, validation.num_test, 1)}"
                    for lr, v in by_lr.items()
                ),
                "picked lr": f"{picked:g}",
                "params": f"{count_params(jax.tree.map(lambda leaf: leaf[0], states.params)):,}",
                "epochs": config.epochs,
                "test (%)": stats.accuracy_cell(
                    [float(c.mean()) for c in correct[loss]], dataset.num_test
                ),
            }
        )
    comparison = stats.paired_bootstrap(correct["MSE on softmax"], correct["cross-entropy"])
    table.append({"loss": "MSE minus cross-entropy", "test (%)": comparison.percent()})
    print_table(
        f"Losses: {study.title}, default net, lr per loss on validation ({study.seeds} seeds), "
        f"test {final_seeds} seeds, {config.epochs} epochs",
        table,
    )
    print(noise_floor_note(dataset, float(correct["cross-entropy"].mean())))
    figure = Figure(figsize=(9, 5))
    axes = figure.subplots()
    band_axes(axes, histories, "test_accuracy", COLORS)
    axes.set(
        ylabel="test accuracy (%)",
        title=f"{study.title}: MSE against cross-entropy\n(each at its lr picked on "
        f"validation; mean and min-max of {final_seeds} seeds)",
    )
    axes.legend(loc="lower right")
    figure.tight_layout()
    study.save(rows, figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
