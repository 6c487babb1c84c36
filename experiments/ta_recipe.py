"""The TA deck's recipe exactly: 784-512-512-10, ReLU, dropout 0.2, RMSprop, batch 128.

python -m experiments.ta_recipe [--idx-dir /usr/share/datasets/fashion-mnist] [--seeds 5] [--quick]
As the deck's PyTorch code: transforms.Normalize((0.5,), (0.5,)) (pixels to [-1, 1]),
optim.RMSprop(model.parameters()) with PyTorch's defaults (lr 0.01, alpha 0.99, eps 1e-8 added
outside the square root, no momentum), constant lr, cross-entropy on the logits. The deck gives no
epoch count: --epochs (default 10). Trained on the whole train split, scored once on test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optax
from matplotlib.figure import Figure

from experiments import stats
from experiments.common import (
    Study,
    band_axes,
    make_parser,
    noise_floor_note,
    per_example_correct,
    print_table,
    train_custom,
)
from mlp_jax import MLP, count_params


def torch_rmsprop(lr: float = 0.01) -> optax.GradientTransformation:
    """torch.optim.RMSprop defaults in optax: v = 0.99 v + 0.01 g^2; step lr g / (sqrt(v) + eps)."""
    return optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=5).parse_args(argv)
    study = Study("ta_recipe", args)
    hidden = (32,) if study.quick else (512, 512)
    model = MLP(
        hidden_sizes=hidden,
        num_classes=study.dataset.num_classes,
        dropout_rate=0.2,
        mean=0.5,
        std=0.5,
    )
    rows, histories, correct = [], [], []
    for seed in range(study.seeds):
        state, history = train_custom(
            study.dataset, model, torch_rmsprop(), seed, study.base.epochs, batch_size=128
        )
        histories.append(history)
        correct.append(
            per_example_correct(state, study.dataset.test_images, study.dataset.test_labels)
        )
        rows += [{"config": "TA recipe", "seed": seed, **record} for record in history]
        print(f"  TA recipe seed {seed}: test accuracy {100 * history[-1]['test_accuracy']:.2f}%")
    n = study.dataset.num_test
    final = [h[-1]["test_accuracy"] for h in histories]
    table = [
        {
            "config": f"784-{'-'.join(map(str, hidden))}-10, dropout 0.2, RMSprop (torch defaults)",
            "params": f"{count_params(state.params):,}",
            "epochs": study.base.epochs,
            "train s per seed": f"{np.mean([sum(r['epoch_seconds'] for r in h) for h in histories]):.0f}",  # noqa: E501
            "test (%)": stats.accuracy_cell(final, n),
        }
    ]
    print_table(f"TA deck's recipe: {study.title}, {study.seeds} seeds", table)
    print(noise_floor_note(study.dataset, float(np.mean(final))))
    figure = Figure(figsize=(12, 4.5))
    left, right = figure.subplots(1, 2)
    colors = {"TA recipe": "tab:green"}
    band_axes(left, {"TA recipe": histories}, "train_loss", colors, scale=1.0)
    band_axes(left, {"TA recipe": histories}, "test_loss", {"TA recipe": "tab:red"}, scale=1.0)
    left.lines[-1].set_label("test loss")
    left.lines[0].set_label("running train loss (dropout on)")
    left.set(ylabel="cross-entropy (log scale)", yscale="log")
    left.legend()
    band_axes(right, {"TA recipe": histories}, "test_accuracy", colors)
    right.set(ylabel="test accuracy (%)")
    figure.suptitle(
        f"{study.title}: the TA deck's 784-512-512-10, dropout 0.2, RMSprop lr 0.01, batch 128 "
        f"(mean and min-max of {study.seeds} seeds)"
    )
    figure.tight_layout()
    study.save(rows, figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
