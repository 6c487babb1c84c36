"""Is this checkout's compiled epoch as fast as another's? Both `train_epoch`s run in one process,
taking turns epoch by epoch, so the machine's load (shared, noisy) falls on both alike.

    python experiments/compare_epoch.py --other DIR [--batch-sizes 12,128] [--epochs 21]

DIR is another checkout of mlp_jax (e.g. `git worktree add --detach ../base <commit>`); its
`mlp_jax/steps.py` is loaded under another module name and trains a copy of the same initial state
on the same random 60,000-image workload (the benchmark's). Prints, per batch size, the median
epoch seconds of each, the ratio of the medians and the median of the per-pair ratios (this/other:
above 1 is slower), and whether both ended with bit-identical params.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.benchmark import LR, load_workload  # noqa: E402
from mlp_jax import Config, train_epoch  # noqa: E402
from mlp_jax.state import build_model, epoch_key, init_state  # noqa: E402


def load_steps(checkout: Path):
    """Another checkout's `mlp_jax/steps.py` as the module `other_steps` (it imports no mlp_jax)."""
    spec = importlib.util.spec_from_file_location("other_steps", checkout / "mlp_jax" / "steps.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["other_steps"] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def compare(other_epoch, batch_size: int, epochs: int, quick: bool = False) -> dict[str, Any]:
    """Both epochs' timings and whether their params end bit-identical (see the module's text);
    `quick`: the benchmark's tiny workload instead."""
    dataset = load_workload(argparse.Namespace(idx_dir=None, quick=quick))
    config = Config(
        optimizer="sgd", lr=LR, schedule="constant", normalize="scale", batch_size=batch_size
    )
    model = build_model(config, dataset)
    states = {name: init_state(config, dataset, model) for name in ("this", "other")}
    epoch_fns = {"this": train_epoch, "other": other_epoch}
    data = jax.device_put((dataset.train_images, dataset.train_labels))
    seconds: dict[str, list[float]] = {"this": [], "other": []}
    for epoch in range(1, epochs + 1):  # epoch 1 compiles: not timed
        for name in ("this", "other") if epoch % 2 else ("other", "this"):
            start = time.perf_counter()
            key = epoch_key(config, epoch)
            states[name], metrics = epoch_fns[name](states[name], *data, key, batch_size=batch_size)
            int(metrics["examples"])  # waits for the epoch
            seconds[name].append(time.perf_counter() - start)
    mine, theirs = np.array(seconds["this"][1:]), np.array(seconds["other"][1:])
    params = [jax.tree.leaves(states[name].params) for name in ("this", "other")]
    return {
        "this_median_s": float(np.median(mine)),
        "other_median_s": float(np.median(theirs)),
        "ratio_of_medians": float(np.median(mine) / np.median(theirs)),
        "median_pair_ratio": float(np.median(mine / theirs)),
        "bit_identical_params": all(bool((a == b).all()) for a, b in zip(*params, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, required=True, help="another mlp_jax checkout")
    parser.add_argument("--batch-sizes", default="12,128", help="comma-separated")
    parser.add_argument("--epochs", type=int, default=21, help="epochs each (the first untimed)")
    args = parser.parse_args()
    other_epoch = load_steps(args.other.resolve()).train_epoch
    print(f"{jax.devices()[0].device_kind}; this: {ROOT}, other: {args.other.resolve()}")
    for batch_size in map(int, args.batch_sizes.split(",")):
        row = compare(other_epoch, batch_size, args.epochs)
        print(
            f"batch {batch_size}: this {row['this_median_s']:.3f} s, other "
            f"{row['other_median_s']:.3f} s (medians of {args.epochs - 1} epochs each); "
            f"this/other {row['ratio_of_medians']:.3f} (median pair ratio "
            f"{row['median_pair_ratio']:.3f}); params bit-identical: "
            f"{row['bit_identical_params']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
