"""Predict a digit drawn with Pillow: docs/trained-model.md's picture of input, net's view, answer.

Draws a "7" with two thick strokes on a white page, off-centre and far larger than 28x28, brings
it into MNIST's format (mlp_jax.images) and asks a trained run (--workdir) for its classes.
Writes into --out: seven.png (the drawing), seven_seen.png (28x28) and predict_demo.png.

    python -m mlp_jax.train --dataset mnist_subset --epochs 5 --workdir runs/digits
    python experiments/predict_demo.py --workdir runs/digits
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from mlp_jax import restore_checkpoint
from mlp_jax.data import class_names
from mlp_jax.images import load_images, save_image
from mlp_jax.steps import predict  # not `from mlp_jax`: importing the CLI module rebinds that

RESULTS = Path(__file__).resolve().parent / "results" / "predict"


def draw_seven(path: Path) -> None:
    """A 200x150 white page with a black "7" about 60x90 pixels, in its upper right part."""
    page = Image.new("RGB", (200, 150), "white")
    draw = ImageDraw.Draw(page)
    draw.line([(110, 20), (170, 20)], fill="black", width=9)
    draw.line([(170, 20), (130, 110)], fill="black", width=9)
    page.save(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a trained run on digits")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    drawing = args.out / "seven.png"
    draw_seven(drawing)

    checkpoint = restore_checkpoint(args.workdir)
    dataset = checkpoint.info["dataset"]
    _, images = load_images([drawing], dataset["image_shape"], "digit")
    save_image(args.out / "seven_seen.png", images[0])
    probabilities = np.asarray(predict(checkpoint.state, images))[0]
    names = class_names(dataset["name"], dataset["num_classes"])
    top = np.argsort(-probabilities)[:3]
    answer = "  ".join(f"{names[c]} ({100 * probabilities[c]:.1f}%)" for c in top)
    print(f"{drawing.name}: {answer}  (checkpoint {checkpoint.path}, epoch {checkpoint.epoch})")

    figure = Figure(figsize=(9, 3))
    page_axes, seen_axes, bar_axes = figure.subplots(1, 3)
    page_axes.imshow(np.asarray(Image.open(drawing)))
    page_axes.set_title("your image (200x150)")
    seen_axes.imshow(images[0, ..., 0], cmap="gray", vmin=0, vmax=255)
    seen_axes.set_title("what the net saw (28x28)")
    for axes in (page_axes, seen_axes):
        axes.set(xticks=[], yticks=[])
    bar_axes.barh([names[c] for c in top[::-1]], 100 * probabilities[top[::-1]])
    bar_axes.set(xlabel="probability (%)", xlim=(0, 100), title="top 3 classes")
    figure.tight_layout()
    figure.savefig(args.out / "predict_demo.png", dpi=80)
    print(f"wrote {drawing}, {args.out / 'seven_seen.png'} and {args.out / 'predict_demo.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
