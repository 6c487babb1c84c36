"""`python -m mlp_jax.evaluate --workdir DIR [--best] [--model K]`: score a run's checkpoint.

Reloads the dataset the checkpoint was trained on and prints the model's layers, test loss,
accuracy and confusion matrix, next to what training logged for that epoch in metrics.jsonl.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from mlp_jax import cli

PROG = "mlp_jax.evaluate"


def build_parser() -> cli.OneLineParser:
    parser = cli.OneLineParser(PROG, "Evaluate a checkpoint of a training run on its test split.")
    cli.add_checkpoint_flags(parser, epoch=True, data=True)
    return parser


def _evaluate(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint = cli.restore(args, PROG)
    import jax

    from mlp_jax.model import summary
    from mlp_jax.report import format_confusion
    from mlp_jax.resume import dataset_of, model_from_info, saved_selections
    from mlp_jax.steps import evaluate
    from mlp_jax.writers import print_line

    dataset = dataset_of(checkpoint, args.data_dir, args.idx_dir)
    images, labels = dataset.test_images, dataset.test_labels
    batch_size = checkpoint.config.eval_batch_size
    test = jax.device_get(evaluate(checkpoint.state, images, labels, batch_size=batch_size))
    selections = saved_selections(checkpoint.info)  # None when the run monitored nothing
    selection = selections[checkpoint.model or 0] if selections else {}
    selected = selection.get("best_epoch") == checkpoint.epoch
    chosen = f", selected by {selection.get('monitor')}" if selected else ""
    print_line(
        f"checkpoint: {checkpoint.path} (epoch {checkpoint.epoch}, step "
        f"{int(checkpoint.state.step)}{chosen})"
    )
    print_line(f"dataset: {dataset.name}, {dataset.num_test} test images")
    print_line(summary(model_from_info(checkpoint.info), dataset.image_shape))
    print_line(
        f"test loss {float(test['loss']):.4f}  accuracy {100 * float(test['accuracy']):.2f}%  "
        f"({int(test['confusion'].trace())} of {int(test['count'])} correct)"
    )
    print_line(_logged_line(args.workdir, checkpoint, test))
    print_line("confusion matrix (rows: true class, columns: predicted class):")
    print_line(format_confusion(test["confusion"]))
    return 0


def _logged_line(workdir: str, checkpoint: Any, test: dict[str, Any]) -> str:
    """What training wrote to metrics.jsonl for this epoch (and model), and whether it is the
    same to the bit."""
    from mlp_jax.workdir import FIX, read_metrics

    records, _ = read_metrics(workdir, FIX)
    config, epoch = checkpoint.config, checkpoint.epoch
    mine = {"epoch": epoch}
    if checkpoint.model is not None:  # a many-model run logs one record per model and epoch
        mine.update(seed=config.seed, peak_lr=config.lr)
    logged = next((r for r in records if mine.items() <= r.items()), None)
    if logged is None or logged.get("test_loss") is None:
        return f"training logged no test metrics for epoch {epoch}"
    scores = (logged["test_loss"], logged["test_accuracy"])
    same = scores == (float(test["loss"]), float(test["accuracy"]))
    return (
        f"training logged for epoch {epoch}: test loss {logged['test_loss']:.4f}  "
        f"accuracy {100 * logged['test_accuracy']:.2f}%  "
        f"({'identical' if same else 'DIFFERENT from the above'})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(PROG, _evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
