"""`python -m mlp_jax.predict --workdir DIR FILE_OR_FOLDER...`: classify your own images.

Each PNG/JPEG is brought into the training format the way the dataset was made (images.py), then
the run's newest (or --best) checkpoint prints the top classes with their probabilities.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from mlp_jax.checkpoint import NoCheckpointError, restore_for_inference
from mlp_jax.config import ConfigError
from mlp_jax.images import STYLES, ImageError, prepare_images, read_images, save_image
from mlp_jax.plot import class_names
from mlp_jax.steps import predict
from mlp_jax.train import OneLineParser

PROG = "mlp_jax.predict"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Predict the classes of image files with a trained run's checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE_OR_FOLDER", help="PNG/JPEG files, or folders of them"
    )
    parser.add_argument("--workdir", required=True, help="the --workdir of a training run")
    parser.add_argument(
        "--best",
        action="store_true",
        help="use the checkpoint that validation selected, not the newest",
    )
    parser.add_argument(
        "--preprocess",
        choices=("auto", *STYLES),
        default="auto",
        help="digit: as MNIST was made (ink fit in 20x20, centre of mass centred); object: as "
        "Fashion-MNIST (fill the field, box centred); none: files already in the training "
        "format; auto: object for Fashion-MNIST runs, else digit",
    )
    parser.add_argument("--top", type=int, default=3, help="how many classes to print per file")
    parser.add_argument(
        "--save-preprocessed",
        metavar="DIR",
        default=None,
        help="write the image the net saw for each file here (PNG, training size)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.top < 1:
            raise ConfigError("--top", f"must be >= 1, got {args.top}")
        files, grays = read_images(args.files)  # bad files fail fast, before the restore
        if args.save_preprocessed is not None:
            _make_folder(args.save_preprocessed)
        checkpoint = restore_for_inference(args.workdir, args.best)
        dataset = checkpoint.info["dataset"]
        style = args.preprocess
        if style == "auto":
            style = "object" if "fashion" in dataset["name"].lower() else "digit"
        images = prepare_images(files, grays, dataset["image_shape"], style)
    except (NoCheckpointError, ConfigError, ImageError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    for message in checkpoint.skipped:
        print(f"{PROG}: {message}: skipped it", file=sys.stderr)

    names = class_names(dataset["name"], dataset["num_classes"])
    probabilities = np.asarray(jax.device_get(predict(checkpoint.state, images)))
    top = min(args.top, len(names))
    print(
        f"checkpoint: {checkpoint.path} (epoch {checkpoint.epoch}), dataset {dataset['name']}, "
        f"preprocessing: {style}"
    )
    width = max(len(str(path)) for path in files)
    for path, row in zip(files, probabilities, strict=True):
        best = np.argsort(-row, kind="stable")[:top]
        answers = "  ".join(f"{names[c]} ({100 * row[c]:.1f}%)" for c in best)
        print(f"{str(path):<{width}}  {answers}")
    if args.save_preprocessed is not None:
        folder = Path(args.save_preprocessed)
        for image, target in zip(images, _output_names(files, folder), strict=True):
            save_image(target, image)
        print(f"saved the {len(files)} preprocessed image(s) to {folder}/")
    return 0


def _make_folder(folder: str) -> None:
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            "--save-preprocessed", f"cannot create {folder}: {error.strerror}"
        ) from None
    if not Path(folder).is_dir():
        raise ConfigError("--save-preprocessed", f"{folder} is not a folder")


def _output_names(files: Sequence[Path], folder: Path) -> list[Path]:
    """FOLDER/<stem>.png per input, numbered where two inputs share a stem."""
    targets, used = [], set()
    for path in files:
        name, i = f"{path.stem}.png", 1
        while name in used:
            name, i = f"{path.stem}-{i}.png", i + 1
        used.add(name)
        targets.append(folder / name)
    return targets


if __name__ == "__main__":
    sys.exit(main())
