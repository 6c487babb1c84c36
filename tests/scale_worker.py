"""Runs for test_sharding.py in a fresh process, where XLA_FLAGS can fake several CPU devices.

`python tests/scale_worker.py OUT single`: 1, 4 and 8 devices, a 2-seed sweep, a host-fed
train_step on a sharded batch, an uneven batch.
`python tests/scale_worker.py OUT cli ARGS...`: one process of a CLI run (e.g. of several).
Results go to OUT: params as .npz, metrics as .json; only process 0 writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np
from flax import traverse_util

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlp_jax import Config, ConfigError  # noqa: E402
from mlp_jax.data import load_mnist_subset  # noqa: E402
from mlp_jax.loop import (
    train_and_evaluate,  # noqa: E402
    train_many,  # noqa: E402
)
from mlp_jax.sharding import is_main_process, make_mesh, put_replicated, shard_batch  # noqa: E402
from mlp_jax.state import build_model, init_state  # noqa: E402
from mlp_jax.steps import train_step  # noqa: E402
from mlp_jax.train import config_from_args  # noqa: E402

# Batch 64 leaves a remainder batch of 32 (4000 = 62 x 64 + 32); dropout draws keys per step;
# eval batch 300 is a multiple of neither 8 devices nor the 1000 test images.
CONFIG = Config(
    dataset="mnist_subset",
    layers=2,
    hidden=(32,),
    epochs=1,
    batch_size=64,
    dropout=0.1,
    eval_batch_size=300,
)


def save(out: Path, name: str, params, test: dict) -> None:
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
    np.savez(out / f"{name}.npz", **flat)
    metrics = {k: float(test[k]) for k in ("loss", "accuracy", "count")}
    (out / f"{name}.json").write_text(json.dumps(metrics))


def single(out: Path) -> None:
    data = load_mnist_subset()
    quiet = lambda line: None  # noqa: E731
    for devices in ("1", "4", "8"):
        result = train_and_evaluate(CONFIG.replace(devices=devices), data, log=quiet)
        save(out, f"devices{devices}", result.state.params, result.test)
    sweep = train_many(CONFIG.replace(devices="8", seeds=2), data)
    save(out, "sweep8_seed0", sweep.state(0).params, sweep.test[0])
    # A host-fed research loop: train_step on one global batch that shard_batch splits over 8
    # devices, against the same step on one device.
    batch = {"image": data.train_images[:64], "label": data.train_labels[:64]}
    model = build_model(CONFIG, data)
    for devices in ("1", "8"):
        mesh = make_mesh(CONFIG.replace(devices=devices))
        state = put_replicated(init_state(CONFIG, data, model), mesh)
        sharded = shard_batch(batch, mesh)
        state, metrics = train_step(state, sharded)
        metrics = {"loss": metrics["loss"], "accuracy": metrics["accuracy"], "count": 64}
        save(out, f"host_fed{devices}", state.params, metrics)
        spread = len(sharded["image"].addressable_shards)  # one block of rows per device
        (out / f"host_fed{devices}_shards.txt").write_text(str(spread))
    try:
        train_and_evaluate(CONFIG.replace(devices="8", batch_size=100), data, log=quiet)
    except ConfigError as error:
        (out / "uneven_error.txt").write_text(str(error))


def cli(out: Path, argv: list[str]) -> None:
    result = train_and_evaluate(config_from_args(argv))
    if is_main_process():
        save(out, f"processes{jax.process_count()}", result.state.params, result.test)


if __name__ == "__main__":
    out, mode = Path(sys.argv[1]), sys.argv[2]
    single(out) if mode == "single" else cli(out, sys.argv[3:])
