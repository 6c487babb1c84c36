"""Two learning-rate finders, one question: whose suggestion trains the better model on validation?

python -m experiments.lr_find_compare [--idx-dir DIR] [--seeds 5] [--quick]
Both see only 5/6 of the train split, with the default recipe's net:
- mlp_jax.lr_find: a 9-lr log grid (1e-4 .. 1), each lr trained 2 epochs as one vmapped program
  on 9/10 of that, scored on its other 1/10; suggests the lowest validation loss.
- Lightning's range test (pytorch_lightning/tuner/lr_finder.py: `lr_find`, `_LRCallback`,
  `_LRFinder.suggestion`): one run of 100 steps with the lr rising exponentially from 1e-8 to 1,
  the loss smoothed (beta 0.98, bias-corrected), stopped when it exceeds 4x its best, and the lr
  of the steepest negative slope of the smoothed loss (skipping the first 10 points, the last 1).
Then the default recipe (momentum, cosine, --epochs) trains at each suggestion with seeds
0..N-1 on the 5/6 and is scored on the held-out 1/6 (never the test split), paired over the
same images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments import stats
from experiments.common import Study, correct_on_test, make_parser, print_table, validation_split
from mlp_jax.data import validation_split as holdout
from mlp_jax.lr_find import grid_search, lr_grid, suggest
from mlp_jax.state import build_model, init_state, with_learning_rate
from mlp_jax.steps import train_step

# Lightning's defaults, read at the source named above.
MIN_LR, MAX_LR, STEPS, BETA, STOP_AT, SKIP_BEGIN, SKIP_END = 1e-8, 1.0, 100, 0.98, 4.0, 10, 1


def range_test(config, dataset, seed: int = 0) -> tuple[list[float], list[float], float | None]:
    """Lightning's exponential range test on `dataset`'s train split: (lrs, smoothed losses,
    suggestion or None)."""
    config = config.replace(schedule="constant", seed=seed)
    state = init_state(config, dataset, build_model(config, dataset))
    order = np.random.default_rng(seed).permutation(dataset.num_train)
    lrs, losses, average, best = [], [], 0.0, math.inf
    for step in range(STEPS):
        lr = MIN_LR * (MAX_LR / MIN_LR) ** (step / STEPS)
        first = step * config.batch_size
        rows = order[np.arange(first, first + config.batch_size) % dataset.num_train]
        batch = {"image": dataset.train_images[rows], "label": dataset.train_labels[rows]}
        state, metrics = train_step(with_learning_rate(state, lr), batch)
        average = BETA * average + (1 - BETA) * float(metrics["loss"])
        smoothed = average / (1 - BETA ** (step + 1))
        lrs.append(lr)
        losses.append(smoothed)
        if step > 1 and smoothed > STOP_AT * best:
            break
        best = min(best, smoothed)
    return lrs, losses, suggestion_of(lrs, losses)


def suggestion_of(lrs: Sequence[float], losses: Sequence[float]) -> float | None:
    """`_LRFinder.suggestion`: the lr at the steepest negative slope of the smoothed losses,
    the first SKIP_BEGIN and last SKIP_END points skipped (None with fewer than 2 left)."""
    kept = np.asarray(losses[SKIP_BEGIN:-SKIP_END])
    kept = kept[np.isfinite(kept)]
    if len(kept) < 2:
        return None
    return lrs[int(np.gradient(kept).argmin()) + SKIP_BEGIN]


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__.splitlines()[0], seeds=5, epochs=10)
    args = parser.parse_args(argv)
    study = Study("lr_find_compare", args)
    validation = validation_split(study.dataset)  # 5/6 to train on, 1/6 to choose on
    inner = holdout(validation, 0.1)  # lr_find scores on 1/10 of the 5/6
    grid = lr_grid(1e-4, 1.0, 4 if study.quick else 9)
    rows, _ = grid_search(study.base.replace(lr_sweep=grid, epochs=2, validation_split=0.1), inner)
    ours = suggest(rows)["lr"]
    lrs, losses, theirs = range_test(study.base, validation)
    print(f"mlp_jax.lr_find suggests {ours:g}; the range test suggests {theirs:g}")
    results = study.sweep(study.base, "default recipe", [ours, theirs], validation)
    correct = {lr: correct_on_test(results[lr], validation) for lr in (ours, theirs)}
    table = [
        {
            "finder": name,
            "suggested lr": f"{lr:.3g}",
            "validation accuracy (%)": stats.accuracy_interval(
                correct[lr].mean(axis=1), validation.num_test
            ).percent(),
        }
        for name, lr in (("mlp_jax.lr_find (vmapped grid)", ours), ("range test", theirs))
    ]
    table[0]["minus lr_find (paired)"] = "(reference)"
    difference = stats.paired_bootstrap(correct[theirs], correct[ours])
    table[1]["minus lr_find (paired)"] = difference.percent()
    print_table(f"Learning-rate finders: {study.title}", table)
    csv_rows = [{"finder": "lr_find", **row} for row in rows]
    csv_rows += [
        {"finder": "range_test", "lr": lr, "smoothed_loss": v}
        for lr, v in zip(lrs, losses, strict=True)
    ]
    study.save(csv_rows, _figure(rows, ours, lrs, losses, theirs, study.title))
    return 0


def _figure(rows, ours, lrs, losses, theirs, title) -> Figure:
    figure = Figure(figsize=(10, 3.8))
    grid, sweep = figure.subplots(1, 2)
    grid.plot([r["lr"] for r in rows], [r["val_loss"] for r in rows], "o-")
    grid.set_title("mlp_jax.lr_find: validation loss after 2 epochs", fontsize=9)
    sweep.plot(lrs, losses)
    sweep.set_title("range test: smoothed train loss, one run", fontsize=9)
    for axes, lr in ((grid, ours), (sweep, theirs)):
        axes.axvline(lr, color="C3", linestyle="--", label=f"suggested {lr:.3g}")
        axes.set(xscale="log", xlabel="learning rate", ylabel="loss")
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
