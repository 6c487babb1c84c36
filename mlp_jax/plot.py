"""`python -m mlp_jax.plot --workdir DIR`: a run's learning curves (curves.png, every model) and
the confusion matrix of one checkpoint (confusion.png; --model, --best as in evaluate).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlp_jax import cli
from mlp_jax.config import ConfigError

PROG = "mlp_jax.plot"


def build_parser() -> cli.OneLineParser:
    """The checkpoint flags (with --data-dir, --idx-dir) and --out."""
    parser = cli.OneLineParser(PROG, "Draw the learning curves and confusion matrix of a run.")
    cli.add_checkpoint_flags(parser, data=True)
    parser.add_argument("--out", default=None, help="where to write the PNGs (default: --workdir)")
    return parser


def plot_workdir(
    workdir: str | Path, out_dir: str | Path | None = None, log: Callable = print, args: Any = None
) -> list[Path]:
    """Write curves.png, and confusion.png when the run left a checkpoint; return the paths.
    `args` (a Namespace) picks the checkpoint as the commands' flags do (default: the newest, the
    model validation picked); `log` gets the lines to print."""
    import numpy as np

    from mlp_jax.data import class_names
    from mlp_jax.figures import dataset_title, plot_confusion, plot_curves, save_figure
    from mlp_jax.workdir import CONFIG, FIX, METRICS, NoCheckpointError, Workdir

    run = Workdir.of(workdir)
    run.check_is_run()
    for name in (CONFIG, METRICS):
        if not os.path.isfile(run.file(name)):
            raise ConfigError("--workdir", f"{run.show(name)} not found; is it a run's workdir?")
    info = run.read_config(FIX, for_resume=False)
    history, _ = run.read_metrics(FIX)
    if not history:
        raise ConfigError("--workdir", f"the run in {run.shown} has not finished an epoch yet")
    out = cli.writable_folder(out_dir if out_dir is not None else workdir, "--out")
    dataset = info["dataset"]
    sizes = "-".join(map(str, info.get("layer_sizes", [])))
    title = f"{dataset_title(dataset['name'])}: {sizes} MLP"
    written = [out / "curves.png"]
    save_figure(plot_curves(history, title), written[0], "--out")
    args = args or argparse.Namespace(workdir=str(workdir), model=None, best=False, epoch=None)
    try:
        checkpoint = cli.restore(args, PROG)
    except NoCheckpointError as error:
        log(f"no confusion matrix: {error}")
        return written
    from mlp_jax.resume import dataset_of
    from mlp_jax.steps import evaluate

    data = dataset_of(checkpoint, getattr(args, "data_dir", None), getattr(args, "idx_dir", None))
    scores = evaluate(checkpoint.state, data.test_images, data.test_labels)
    confusion = np.asarray(scores["confusion"])
    which = f"epoch {checkpoint.epoch}" + (" (selected)" if args.best else "")
    if checkpoint.model is not None:
        config = checkpoint.config
        which += f", model {checkpoint.model} (seed {config.seed}, lr {config.lr:g})"
    right, total = np.trace(confusion), confusion.sum()
    log(f"confusion matrix of {which}: {right} of {total} test images right")
    names = class_names(dataset["name"], dataset["num_classes"])
    title += f", {which}\ntest accuracy {100 * (right / total):.2f}%"
    written.append(out / "confusion.png")
    save_figure(plot_confusion(confusion, names, title), written[-1], "--out")
    return written


def _plot(argv: Sequence[str] | None) -> int:
    from mlp_jax.writers import print_line

    args = build_parser().parse_args(argv)
    for path in plot_workdir(args.workdir, args.out, log=print_line, args=args):
        print_line(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(PROG, _plot, argv)


if __name__ == "__main__":
    sys.exit(main())
