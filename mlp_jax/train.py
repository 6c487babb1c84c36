"""`python -m mlp_jax.train`: the command line and the epoch loop.

This is the only module with printing, clocks and files; the compiled work is in steps.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from mlp_jax.config import Config, ConfigError
from mlp_jax.data import Dataset, load_dataset, train_mean_std
from mlp_jax.model import MLP, count_params, layer_sizes, mlp_from_config
from mlp_jax.optim import make_optimizer, make_schedule
from mlp_jax.steps import TrainState, create_train_state, evaluate, steps_per_epoch, train_epoch

PROG = "mlp_jax.train"


class DivergedError(RuntimeError):
    """The running train loss became NaN or inf."""

    def __init__(self, epoch: int, loss: float, lr: float):
        self.epoch, self.loss, self.lr = epoch, loss, lr
        super().__init__(
            f"train loss became {loss} in epoch {epoch} (lr {lr:.4g}); try a smaller --lr"
        )


@dataclasses.dataclass
class RunResult:
    state: TrainState
    history: list[dict[str, Any]]  # one metrics.jsonl record per epoch
    test: dict[str, Any]  # evaluate() of the final state, as numpy
    dataset: Dataset


# ----------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parse_widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """One flag per Config field, with the field's default and help."""
    parser = _Parser(
        prog=PROG,
        description="Train and evaluate an MLP on MNIST-like data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        kwargs: dict[str, Any] = {"default": field.default, "help": field.metadata["help"]}
        if field.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif field.type.startswith("tuple"):
            kwargs["type"] = _parse_widths
        else:
            kwargs["type"] = {"int": int, "float": float}.get(field.type.split(" ")[0], str)
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        parser.add_argument(flag, **kwargs)
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> Config:
    return Config(**vars(build_parser().parse_args(argv)))


# ----------------------------------------------------------------------------- set-up


def build_model(config: Config, dataset: Dataset) -> MLP:
    """The MLP that `config` describes, normalising with the train split's statistics."""
    mean, std = train_mean_std(dataset.train_images)
    return mlp_from_config(config, dataset.num_classes, mean, std)


def init_state(config: Config, dataset: Dataset, model: MLP) -> TrainState:
    """Params and optimizer state for `model`, initialised from `config.seed`."""
    tx = make_optimizer(config, steps_per_epoch(len(dataset.train_labels), config.batch_size))
    init_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)
    return create_train_state(init_key, model, tx, dataset.train_images[:1])


def epoch_key(config: Config, epoch: int) -> jax.Array:
    """The key that orders epoch `epoch` (1-based): fold_in(data_key, epoch)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), epoch)


def check_fits(config: Config, dataset: Dataset) -> None:
    num_train = len(dataset.train_labels)
    if config.batch_size > num_train:
        raise ConfigError(
            "--batch-size", f"must be 1 .. {num_train} (the training-set size), got {config.batch_size}"
        )


def prepare_workdir(config: Config) -> str | None:
    if config.workdir is None:
        return None
    workdir = config.workdir
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError("--workdir", f"{workdir} is a file; expected a directory (new or empty)")
    if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        raise ConfigError(
            "--workdir", f"{workdir} already holds a run (metrics.jsonl); choose a new directory"
        )
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise ConfigError("--workdir", f"cannot create {workdir}: {error.strerror}")
    return workdir


# ----------------------------------------------------------------------------- the loop


def _print(line: str) -> None:
    tqdm.write(line, file=sys.stdout)  # keeps lines above the progress bar on a terminal


def train_and_evaluate(
    config: Config, dataset: Dataset | None = None, log: Callable[[str], None] = _print
) -> RunResult:
    """Train for `config.epochs`, evaluating every `config.eval_every` epochs and after the last."""
    workdir = prepare_workdir(config)
    dataset = dataset if dataset is not None else load_dataset(config)
    check_fits(config, dataset)
    model = build_model(config, dataset)
    state = init_state(config, dataset, model)
    num_train, num_test = len(dataset.train_labels), len(dataset.test_labels)
    batches = steps_per_epoch(num_train, config.batch_size)
    schedule = make_schedule(config, batches)

    log(f"devices: {', '.join(str(d) for d in jax.devices())}")
    if dataset.note:
        log(dataset.note)
    log(
        f"dataset: {dataset.name} ({dataset.source}): {num_train} train / {num_test} test, "
        f"images {dataset.train_images.shape[1:]} uint8, {dataset.num_classes} classes"
    )
    sizes = layer_sizes(int(np.prod(dataset.train_images.shape[1:])), model)
    log(f"model: {'-'.join(map(str, sizes))} MLP, {count_params(state.params):,} parameters")
    log(
        f"training: {config.epochs} epochs x {batches} steps of batch {config.batch_size} "
        f"({config.optimizer}, lr {config.lr:g}, {config.schedule} schedule)"
    )
    if workdir:
        _write_config(workdir, config, dataset, sizes)

    train_images, train_labels = jax.device_put((dataset.train_images, dataset.train_labels))
    test_images, test_labels = jax.device_put((dataset.test_images, dataset.test_labels))
    start = time.perf_counter()
    run_epoch = train_epoch.lower(
        state, train_images, train_labels, epoch_key(config, 1), batch_size=config.batch_size
    ).compile()
    run_eval = evaluate.lower(
        state, test_images, test_labels, batch_size=config.eval_batch_size
    ).compile()
    log(f"compiled the epoch and the evaluation in {time.perf_counter() - start:.2f}s")

    history = []
    test = None
    epochs = tqdm(range(1, config.epochs + 1), desc="epochs", disable=not sys.stdout.isatty())
    for epoch in epochs:
        lr = float(schedule(state.step))
        start = time.perf_counter()
        state, train_metrics = run_epoch(state, train_images, train_labels, epoch_key(config, epoch))
        train_metrics = jax.device_get(train_metrics)
        seconds = time.perf_counter() - start
        train_loss = float(train_metrics["train_loss"])
        if not math.isfinite(train_loss):
            raise DivergedError(epoch, train_loss, lr)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": float(train_metrics["train_accuracy"]),
            "test_loss": None,
            "test_accuracy": None,
            "lr": lr,
            "epoch_seconds": seconds,
            "examples_per_second": num_train / seconds,
        }
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            test = jax.device_get(run_eval(state, test_images, test_labels))
            record["test_loss"] = float(test["loss"])
            record["test_accuracy"] = float(test["accuracy"])
        history.append(record)
        log(_format_epoch(record, config.epochs))
        if workdir:
            with open(os.path.join(workdir, "metrics.jsonl"), "a") as file:
                file.write(json.dumps(record) + "\n")
    log(
        f"test accuracy {100 * test['accuracy']:.2f}% (loss {float(test['loss']):.4f}) "
        f"on {int(test['count'])} test images"
    )
    return RunResult(state=state, history=history, test=test, dataset=dataset)


def _format_epoch(record: dict[str, Any], epochs: int) -> str:
    line = (
        f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}  "
        f"train loss {record['train_loss']:.4f} err {100 * (1 - record['train_accuracy']):5.2f}%"
    )
    if record["test_accuracy"] is not None:
        line += f"  test loss {record['test_loss']:.4f} acc {100 * record['test_accuracy']:5.2f}%"
    return line + (
        f"  lr {record['lr']:.4g}  {record['epoch_seconds']:.2f}s "
        f"{record['examples_per_second']:,.0f} ex/s"
    )


def _write_config(workdir: str, config: Config, dataset: Dataset, sizes: list[int]) -> None:
    info = {
        "config": config.to_dict(),
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "note": dataset.note,
            "num_train": len(dataset.train_labels),
            "num_test": len(dataset.test_labels),
            "image_shape": list(dataset.train_images.shape[1:]),
            "num_classes": dataset.num_classes,
        },
        "layer_sizes": sizes,
        "devices": [str(d) for d in jax.devices()],
    }
    with open(os.path.join(workdir, "config.json"), "w") as file:
        json.dump(info, file, indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = config_from_args(argv)
        train_and_evaluate(config)
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except DivergedError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
