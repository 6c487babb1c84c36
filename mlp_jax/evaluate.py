"""`python -m mlp_jax.evaluate --workdir DIR [--best] [--model K]`: score a run's checkpoint on the
test split of the dataset it was trained on (layers, loss, accuracy, confusion matrix), next to
what training logged for that epoch in metrics.jsonl."""

from __future__ import annotations

from collections.abc import Sequence

from mlp_jax import cli

PROG = "mlp_jax.evaluate"


@cli.command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    description = "Evaluate a checkpoint of a training run on its test split."
    args = cli.checkpoint_parser(PROG, description, data=True).parse_args(argv)
    checkpoint = cli.restore(args, PROG)
    import jax
    import numpy as np

    from mlp_jax.model import summary
    from mlp_jax.report import format_confusion
    from mlp_jax.resume import dataset_of, model_from_info, newest_selections
    from mlp_jax.steps import evaluate
    from mlp_jax.workdir import FIX, read_metrics
    from mlp_jax.writers import print_line

    records = read_metrics(args.workdir, FIX)[0]  # a bad line refuses before any result
    data = dataset_of(checkpoint, args.data_dir, args.idx_dir)
    batch_size = checkpoint.config.eval_batch_size
    test = evaluate(checkpoint.state, data.test_images, data.test_labels, batch_size=batch_size)
    test = jax.device_get(test)
    selections = newest_selections(args.workdir, checkpoint)  # None: it monitored nothing
    selection = selections[checkpoint.model or 0] if selections else {}
    selected = selection.get("best_epoch") == checkpoint.epoch
    chosen = f", selected by {selection.get('monitor')}" if selected else ""
    step = int(checkpoint.state.step)
    print_line(f"checkpoint: {checkpoint.path} (epoch {checkpoint.epoch}, step {step}{chosen})")
    print_line(f"dataset: {data.name}, {data.num_test} test images")
    print_line(summary(model_from_info(checkpoint.info), data.image_shape))
    scores = float(test["loss"]), float(test["accuracy"])
    right = f"({int(test['confusion'].trace())} of {int(test['count'])} correct)"
    print_line(f"test loss {scores[0]:.4f}  accuracy {100 * scores[1]:.2f}%  {right}")
    mine = {"epoch": checkpoint.epoch}  # training's record of this epoch (and model):
    if checkpoint.model is not None:  # a many-model run logs one record per model and epoch
        mine.update(seed=checkpoint.config.seed, peak_lr=checkpoint.config.lr)
    record = next((r for r in records if mine.items() <= r.items()), {})
    logged = record.get("test_loss"), record.get("test_accuracy")
    if logged[0] is None:
        print_line(f"training logged no test metrics for epoch {checkpoint.epoch}")
    else:
        identical = np.array_equal(logged, scores, equal_nan=True)  # to the bit (NaN too)
        same = "identical" if identical else "DIFFERENT from the above"
        shown = f"test loss {logged[0]:.4f}  accuracy {100 * logged[1]:.2f}%  ({same})"
        print_line(f"training logged for epoch {checkpoint.epoch}: {shown}")
    print_line("confusion matrix (rows: true class, columns: predicted class):")
    print_line(format_confusion(test["confusion"]))
    return 0


if __name__ == "__main__":
    cli.leave(main())
