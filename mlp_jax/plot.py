"""`python -m mlp_jax.plot --workdir DIR`: a run's learning curves (curves.png, every model) and
the confusion matrix of one checkpoint (confusion.png; --model, --best as in evaluate)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from mlp_jax import cli
from mlp_jax.config import ConfigError

PROG = "mlp_jax.plot"


@cli.command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    description = "Draw the learning curves and confusion matrix of a run."
    parser = cli.checkpoint_parser(PROG, description, data=True)
    parser.add_argument("--out", default=None, help="where to write the PNGs (default: --workdir)")
    args = parser.parse_args(argv)
    import numpy as np

    from mlp_jax.data import class_names
    from mlp_jax.figures import dataset_title, plot_confusion, plot_curves, save_figure
    from mlp_jax.resume import dataset_of
    from mlp_jax.steps import evaluate
    from mlp_jax.workdir import CONFIG, FIX, METRICS, NoCheckpointError, Workdir
    from mlp_jax.writers import print_line

    run = Workdir.of(args.workdir)
    run.check_is_run()
    for name in (CONFIG, METRICS):
        if not os.path.isfile(run.file(name)):
            raise ConfigError("--workdir", f"{run.show(name)} not found; is it a run's workdir?")
    info = run.read_config(FIX, for_resume=False)
    history, _ = run.read_metrics(FIX)
    if not history:
        raise ConfigError("--workdir", f"the run in {run.shown} has not finished an epoch yet")
    out = cli.writable_folder(args.out if args.out is not None else args.workdir, "--out")
    dataset = info["dataset"]
    sizes = "-".join(map(str, info.get("layer_sizes", [])))
    title = f"{dataset_title(dataset['name'])}: {sizes} MLP"
    try:
        checkpoint = cli.restore(args, PROG)
    except NoCheckpointError as error:
        if args.best or args.epoch is not None:
            raise  # the checkpoint asked for is not there: one line, nothing written
        print_line(f"no confusion matrix: {error}")
        checkpoint = None
    written = [out / "curves.png"]
    save_figure(plot_curves(history, title), written[0], "--out")
    if checkpoint is not None:
        data = dataset_of(checkpoint, args.data_dir, args.idx_dir)
        scores = evaluate(checkpoint.state, data.test_images, data.test_labels)
        confusion = np.asarray(scores["confusion"])
        which = f"epoch {checkpoint.epoch}" + (" (selected)" if args.best else "")
        if checkpoint.model is not None:
            config = checkpoint.config
            which += f", model {checkpoint.model} (seed {config.seed}, lr {config.lr:g})"
        right, total = np.trace(confusion), confusion.sum()
        print_line(f"confusion matrix of {which}: {right} of {total} test images right")
        names = class_names(dataset["name"], dataset["num_classes"])
        title += f", {which}\ntest accuracy {100 * (right / total):.2f}%"
        written.append(out / "confusion.png")
        save_figure(plot_confusion(confusion, names, title), written[-1], "--out")
    for path in written:
        print_line(f"wrote {path}")
    return 0


if __name__ == "__main__":
    cli.leave(main())
