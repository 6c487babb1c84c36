"""Scale-out benchmark: examples/s on 1, 2, 4, 8 devices, and --seeds K against K separate runs.

python -m experiments.bench_scale [--quick] [--out results.json]
On CPU the devices are fake (XLA_FLAGS=--xla_force_host_platform_device_count=8, set here): they
share the host's cores, so the device figures measure overhead and correctness, not speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

# Before jax is imported: 8 fake CPU devices (no effect on GPU/TPU devices).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mlp_jax import Config  # noqa: E402
from mlp_jax.data import Dataset, load_mnist_subset  # noqa: E402
from mlp_jax.loop import (
    train_and_evaluate,  # noqa: E402
    train_many,  # noqa: E402
)


def _quiet(line: str) -> None:
    pass


def _steady(records: list[dict[str, Any]]) -> float:
    """Median seconds of an epoch after the first (the first warms caches)."""
    return float(np.median([r["epoch_seconds"] for r in records[1:] or records]))


def measure_devices(config: Config, dataset: Dataset, device_counts: Sequence[int]) -> list[dict]:
    """Examples/s of the compiled epoch on the first N devices, same global batch for every N."""
    rows = []
    for count in device_counts:
        result = train_and_evaluate(config.replace(devices=str(count)), dataset, log=_quiet)
        seconds = _steady(result.history)
        rows.append(
            {
                "devices": count,
                "epoch_seconds": seconds,
                "examples_per_second": dataset.num_train / seconds,
                "test_accuracy": float(result.test["accuracy"]),
            }
        )
    return rows


def measure_seeds(config: Config, dataset: Dataset, model_counts: Sequence[int]) -> list[dict]:
    """K models in one vmapped program against K separate runs, wall clock including compiles."""
    rows = []
    for count in model_counts:
        start = time.perf_counter()
        many = train_many(config.replace(seeds=count), dataset)
        together = time.perf_counter() - start
        start = time.perf_counter()
        separate = [
            train_and_evaluate(config.replace(seed=seed), dataset, log=_quiet)
            for seed in range(count)
        ]
        one_by_one = time.perf_counter() - start
        vmapped_epoch = _steady(many.history[0])
        separate_epoch = sum(_steady(run.history) for run in separate)
        rows.append(
            {
                "models": count,
                "vmapped_wall_seconds": together,
                "separate_wall_seconds": one_by_one,
                "vmapped_epoch_seconds": vmapped_epoch,
                "separate_epoch_seconds": separate_epoch,
                "vmapped_examples_per_second": count * dataset.num_train / vmapped_epoch,
                "separate_examples_per_second": count * dataset.num_train / separate_epoch,
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny net, few epochs (for CI)")
    parser.add_argument("--out", help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    dataset = load_mnist_subset()
    if args.quick:
        config = Config(dataset="mnist_subset", layers=2, hidden=(32,), epochs=2, batch_size=128)
        device_counts, model_counts = (1, 2), (2,)
    else:  # the default 784-512-256-128-64-10 net and batch 128
        config = Config(dataset="mnist_subset", epochs=4, batch_size=128)
        device_counts, model_counts = (1, 2, 4, 8), (4, 16)
    device_counts = [n for n in device_counts if n <= jax.device_count()]
    platform = jax.devices()[0].platform
    print(
        f"{jax.device_count()} {platform} devices ({jax.devices()[0].device_kind}), "
        f"{os.cpu_count()} host cores; mnist_subset, {config.epochs} epochs, "
        f"layers {config.layers}, batch {config.batch_size}"
    )

    devices = measure_devices(config, dataset, device_counts)
    print("\n| devices | epoch s | examples/s | test acc |\n|---|---|---|---|")
    for row in devices:
        accuracy = 100 * row["test_accuracy"]
        print(
            f"| {row['devices']} | {row['epoch_seconds']:.3f} | "
            f"{row['examples_per_second']:,.0f} | {accuracy:.2f}% |"
        )

    # On one device, so that only the vmap differs from the separate runs.
    seeds = measure_seeds(config.replace(devices="1"), dataset, model_counts)
    print(
        "\n| models (1 device) | one vmapped program: wall s / epoch s / examples/s | "
        "separate runs: wall s / epoch s / examples/s |\n|---|---|---|"
    )
    for row in seeds:
        print(
            f"| {row['models']} | {row['vmapped_wall_seconds']:.1f} / "
            f"{row['vmapped_epoch_seconds']:.3f} / {row['vmapped_examples_per_second']:,.0f} | "
            f"{row['separate_wall_seconds']:.1f} / {row['separate_epoch_seconds']:.3f} / "
            f"{row['separate_examples_per_second']:,.0f} |"
        )
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"platform": platform, "devices": devices, "seeds": seeds}, file, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
