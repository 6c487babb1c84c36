"""Gradient accumulation: k small batches with optax.MultiSteps give the update of one batch k times
larger (lecture 5: without zero_grad, gradients add up; here they are averaged, then applied).

python -m experiments.accumulation [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
Run A: plain SGD (lr 0.05), batch 128. Run B: the same SGD wrapped in optax.MultiSteps(k=4),
batch 32, with each big batch's 128 images fed as its 4 consecutive micro-batches of 32. After
every big-batch update the script records the largest parameter difference between A and B.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from experiments.common import Study, make_parser, print_table
from mlp_jax import create_train_state, evaluate, train_step
from mlp_jax.state import build_model, init_key

BIG_BATCH, MICRO_STEPS, LR = 128, 4, 0.05


def accumulated_sgd(lr: float, micro_steps: int) -> optax.GradientTransformation:
    """SGD that applies the mean gradient of every `micro_steps` calls, and does nothing between."""
    return optax.MultiSteps(optax.sgd(lr), every_k_schedule=micro_steps)


def run_pair(study: Study, updates: int, seed: int = 0) -> list[dict]:
    """Train A (one big batch per update) and B (micro-batches, accumulated) side by side."""
    dataset = study.dataset
    model = build_model(study.base, dataset)
    sample = dataset.train_images[:1]
    big = create_train_state(init_key(seed), model, optax.sgd(LR), sample)
    small = create_train_state(init_key(seed), model, accumulated_sgd(LR, MICRO_STEPS), sample)
    order = np.random.default_rng(seed).permutation(dataset.num_train)
    micro = BIG_BATCH // MICRO_STEPS
    rows = []
    for update in range(1, updates + 1):
        index = np.take(order, range((update - 1) * BIG_BATCH, update * BIG_BATCH), mode="wrap")
        batch = {"image": dataset.train_images[index], "label": dataset.train_labels[index]}
        big, _ = train_step(big, batch)
        for k in range(MICRO_STEPS):
            part = {key: value[k * micro : (k + 1) * micro] for key, value in batch.items()}
            small, _ = train_step(small, part)
        difference = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), big.params, small.params)
        rows.append(
            {
                "update": update,
                "max_abs_param_difference": float(max(jax.tree.leaves(difference))),
                "max_abs_param": float(
                    max(jnp.max(jnp.abs(p)) for p in jax.tree.leaves(big.params))
                ),
            }
        )
    for name, state in [("A: batch 128", big), ("B: 4 x 32 accumulated", small)]:
        test = evaluate(state, dataset.test_images, dataset.test_labels)
        rows[-1][f"test_accuracy {name}"] = round(float(test["accuracy"]), 5)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__.splitlines()[0], seeds=1)
    parser.add_argument("--updates", type=int, default=200, help="big-batch updates to compare")
    args = parser.parse_args(argv)
    study = Study("accumulation", args)
    rows = run_pair(study, 5 if study.quick else args.updates)
    last = rows[-1]
    print_table(
        f"Gradient accumulation: {study.title}, plain SGD lr {LR}, {len(rows)} updates",
        [
            {
                "after update": last["update"],
                "max |param A - param B|": f"{last['max_abs_param_difference']:.2e}",
                "max |param|": f"{last['max_abs_param']:.3f}",
                **{k: v for k, v in last.items() if k.startswith("test_accuracy")},
            }
        ],
    )
    figure = Figure(figsize=(8, 4.5))
    axes = figure.subplots()
    axes.semilogy(
        [r["update"] for r in rows],
        [max(r["max_abs_param_difference"], 1e-12) for r in rows],
        color="tab:blue",
    )
    axes.axhline(np.finfo(np.float32).eps, color="gray", ls=":", label="float32 epsilon")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(
        xlabel="update (one batch of 128 = four accumulated batches of 32)",
        ylabel="max |parameter difference|",
        title=f"{study.title}: batch 128 against 4 x 32 with optax.MultiSteps\n"
        "(same images, same init; the gap is float rounding)",
        ylim=(1e-12, 1),
    )
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    study.save(rows, figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
