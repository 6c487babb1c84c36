"""Study 7: hand-written backprop (mlp_jax.manual, custom_vjp) against jax.grad: same params? speed?

python -m experiments.backprop_timing [--idx-dir /usr/share/datasets/fashion-mnist] [--quick]
Both train the default ReLU MLP from the same init with the same optimizer and data order; the
epochs of the two alternate, so that a change in machine load hits both alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import numpy as np
from matplotlib.figure import Figure

from experiments.common import Study, make_parser, pm, print_table, write_csv
from mlp_jax import create_train_state, evaluate, make_optimizer, mlp_from_config, train_epoch
from mlp_jax.data import train_mean_std
from mlp_jax.manual import ManualMLP
from mlp_jax.steps import steps_per_epoch


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(__doc__.splitlines()[0], seeds=1, epochs=5).parse_args(argv)
    study = Study("backprop_timing", args)
    config, dataset = study.base, study.dataset
    mean, std = train_mean_std(dataset.train_images)
    model = mlp_from_config(config, dataset.num_classes, mean, std)
    models = {"jax.grad (autodiff)": model, "custom_vjp (lecture formulas)": ManualMLP.like(model)}
    tx = make_optimizer(config, steps_per_epoch(dataset.num_train, config.batch_size))
    images, labels = jax.device_put((dataset.train_images, dataset.train_labels))
    test_images, test_labels = jax.device_put((dataset.test_images, dataset.test_labels))
    init_key, data_key = jax.random.split(jax.random.PRNGKey(config.seed))
    states, epochs, compile_seconds = {}, {}, {}
    for name, module in models.items():
        states[name] = create_train_state(init_key, module, tx, images[:1])
        start = time.perf_counter()
        epochs[name] = train_epoch.lower(
            states[name], images, labels, data_key, batch_size=config.batch_size
        ).compile()
        compile_seconds[name] = time.perf_counter() - start
    seconds = {name: [] for name in models}
    for epoch in range(1, config.epochs + 1):
        key = jax.random.fold_in(data_key, epoch)
        for name in models:
            start = time.perf_counter()
            states[name], _ = jax.block_until_ready(epochs[name](states[name], images, labels, key))
            seconds[name].append(time.perf_counter() - start)
        print(f"  epoch {epoch}: " + ", ".join(f"{n} {s[-1]:.2f}s" for n, s in seconds.items()))

    automatic, by_hand = (states[name].params for name in models)
    differences = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), automatic, by_hand)
    max_difference = max(jax.tree.leaves(differences))
    scale = max(float(np.max(np.abs(p))) for p in jax.tree.leaves(automatic))
    rows, table = [], []
    for name in models:
        test = evaluate(states[name], test_images, test_labels)
        rows += [
            {"implementation": name, "epoch": e + 1, "seconds": round(s, 4)}
            for e, s in enumerate(seconds[name])
        ]
        table.append(
            {
                "implementation": name,
                "compile (s)": f"{compile_seconds[name]:.2f}",
                "s/epoch (mean ± std)": pm(seconds[name], scale=1, digits=3),
                "test accuracy (%)": f"{100 * float(test['accuracy']):.2f}",
            }
        )
    print_table(
        f"Backprop by hand vs jax.grad: {study.title}, {config.epochs} epochs of batch "
        f"{config.batch_size}; max |param difference| after training {max_difference:.2e} "
        f"(largest |param| {scale:.2f})",
        table,
    )
    write_csv(rows, study.csv_path)
    figure = _figure(study, seconds, max_difference)
    figure.savefig(study.png_path, dpi=110)
    print(f"wrote {study.csv_path} and {study.png_path}")
    return 0


def _figure(study: Study, seconds: dict[str, list[float]], max_difference: float) -> Figure:
    figure = Figure(figsize=(10, 4.2))
    bars, per_epoch = figure.subplots(1, 2)
    names = list(seconds)
    bars.bar(
        names,
        [np.mean(s) for s in seconds.values()],
        yerr=[np.std(s) for s in seconds.values()],
        capsize=5,
        color=["C0", "C1"],
        label="mean ± std over epochs",
    )
    bars.set(ylabel="seconds per epoch", title="time per epoch (compile excluded)")
    bars.legend()
    for index, (name, values) in enumerate(seconds.items()):
        per_epoch.plot(range(1, len(values) + 1), values, "o-", color=f"C{index}", label=name)
    per_epoch.set(xlabel="epoch", ylabel="seconds", title="each epoch (the two alternate)")
    per_epoch.legend()
    for axes in (bars, per_epoch):
        axes.grid(alpha=0.3)
    layers = "-".join(map(str, [784, *study.base.hidden_sizes, 10]))
    figure.suptitle(
        f"{study.title}: {layers} MLP, hand-written backprop vs jax.grad\n"
        f"(max |param difference| after training {max_difference:.1e})"
    )
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
