"""`python -m mlp_jax.evaluate --workdir DIR [--best]`: score a run's newest or selected checkpoint.

Reloads the dataset from the config saved in the checkpoint and prints the model's layers, test
loss, accuracy and the confusion matrix, next to what training logged for that epoch in
metrics.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from mlp_jax.checkpoint import (
    DATASET_FACTS,
    NoCheckpointError,
    model_from_info,
    restore_checkpoint,
)
from mlp_jax.config import ConfigError
from mlp_jax.data import load_dataset
from mlp_jax.model import summary
from mlp_jax.steps import evaluate
from mlp_jax.workdir import FIX, RunFileError, read_metrics
from mlp_jax.writers import print_line, stdout_error

PROG = "mlp_jax.evaluate"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate the newest checkpoint of a training run on its test split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workdir", required=True, help="the --workdir of a training run")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--epoch", type=int, default=None, help="this epoch's checkpoint (default: newest)"
    )
    which.add_argument(
        "--best",
        action="store_true",
        help="the checkpoint of the epoch that validation selected (best --monitor value)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="where the dataset lives now (default: as in training)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _evaluate(args)
    except RunFileError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    if stdout_error() is not None:  # e.g. `| head` quit early: nothing is lost, say so briefly
        if not isinstance(stdout_error(), BrokenPipeError):
            print(f"{PROG}: error: stdout cannot be written ({stdout_error()})", file=sys.stderr)
        return 1
    return code


def _evaluate(args: argparse.Namespace) -> int:
    try:
        checkpoint = restore_checkpoint(args.workdir, args.epoch, best=args.best)
        for message in checkpoint.skipped:
            print(f"{PROG}: {message}: skipped it", file=sys.stderr)
        config = checkpoint.config
        saved = checkpoint.info["dataset"]
        if saved["name"] == "mnist_subset":  # also when training fell back to it offline
            config = config.replace(dataset="mnist_subset", idx_dir=None)
        if args.data_dir is not None:
            config = config.replace(data_dir=args.data_dir)
        dataset = load_dataset(config)
    except (NoCheckpointError, ConfigError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    facts = {
        "name": dataset.name,
        "num_train": dataset.num_train,
        "num_test": dataset.num_test,
        "image_shape": list(dataset.image_shape),
        "num_classes": dataset.num_classes,
    }
    differing = [name for name in DATASET_FACTS if saved.get(name) != facts[name]]
    if differing:
        print(
            f"{PROG}: error: the dataset loads differently now than in training "
            f"({', '.join(f'{n} {saved.get(n)} -> {facts[n]}' for n in differing)})",
            file=sys.stderr,
        )
        return 2

    test = jax.device_get(
        evaluate(
            checkpoint.state,
            dataset.test_images,
            dataset.test_labels,
            batch_size=config.eval_batch_size,
        )
    )
    step = int(checkpoint.state.step)
    selection = checkpoint.info.get("selection") or {}
    chosen = (
        f", selected by {selection['monitor']}"
        if selection.get("best_epoch") == checkpoint.epoch
        else ""
    )
    print_line(f"checkpoint: {checkpoint.path} (epoch {checkpoint.epoch}, step {step}{chosen})")
    print_line(f"dataset: {dataset.name}, {dataset.num_test} test images")
    print_line(summary(model_from_info(checkpoint.info), dataset.image_shape))
    print_line(
        f"test loss {float(test['loss']):.4f}  accuracy {100 * float(test['accuracy']):.2f}%  "
        f"({int(test['confusion'].trace())} of {int(test['count'])} correct)"
    )
    print_line(_logged_line(args.workdir, checkpoint.epoch, test))  # may raise RunFileError
    print_line("confusion matrix (rows: true class, columns: predicted class):")
    print_line(_format_confusion(test["confusion"]))
    return 0


def _logged_line(workdir: str, epoch: int, test: dict[str, Any]) -> str:
    """What training wrote to metrics.jsonl for `epoch`, and whether it is the same to the bit."""
    records, _ = read_metrics(workdir, FIX)
    logged = next((r for r in records if r.get("epoch") == epoch), None)
    if logged is None or logged.get("test_loss") is None:
        return f"training logged no test metrics for epoch {epoch}"
    same = logged["test_loss"] == float(test["loss"]) and logged["test_accuracy"] == float(
        test["accuracy"]
    )
    return (
        f"training logged for epoch {epoch}: test loss {logged['test_loss']:.4f}  "
        f"accuracy {100 * logged['test_accuracy']:.2f}%  "
        f"({'identical' if same else 'DIFFERENT from the above'})"
    )


def _format_confusion(confusion: np.ndarray) -> str:
    width = max(len(str(int(confusion.max()))), len(str(len(confusion) - 1))) + 1
    header = " " * (width + 2) + "".join(f"{c:>{width}}" for c in range(len(confusion)))
    rows = [
        f"{t:>{width}} |" + "".join(f"{n:>{width}}" for n in row) for t, row in enumerate(confusion)
    ]
    return "\n".join([header, *rows])


if __name__ == "__main__":
    sys.exit(main())
