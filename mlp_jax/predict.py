"""`python -m mlp_jax.predict --workdir DIR FILE_OR_FOLDER...`: classify your own images. Each
PNG/JPEG is brought into the training format the way the dataset was made (images.py), then the
run's newest (or --best) checkpoint prints the top classes with their probabilities."""

from __future__ import annotations

from collections.abc import Sequence

from mlp_jax import cli

PROG = "mlp_jax.predict"


@cli.command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.checkpoint_parser(PROG, "Predict the classes of image files with a trained run.")
    help = "PNG/JPEG files, or folders of them"
    parser.add_argument("files", nargs="+", metavar="FILE_OR_FOLDER", help=help)
    help = (
        "digit: as MNIST was made (ink fit in 20x20, centre of mass centred); object: as "
        "Fashion-MNIST (fill the field, box centred); none: files already in the training "
        "format; auto: object for Fashion-MNIST runs, else digit"
    )
    styles = ("auto", "digit", "object", "none")  # images.STYLES: --help imports no Pillow
    parser.add_argument("--preprocess", choices=styles, default="auto", help=help)
    help = "how many classes to print per file"
    parser.add_argument("--top", type=cli.positive_int, default=3, help=help)
    help = "write the image the net saw for each file here (PNG, training size)"
    parser.add_argument("--save-preprocessed", metavar="DIR", default=None, help=help)
    args = parser.parse_args(argv)
    from mlp_jax.images import image_files, output_names, prepare_images, read_grayscale, save_image

    files = image_files(args.files)  # bad files fail fast, before the restore
    grays = [read_grayscale(path) for path in files]
    folder = args.save_preprocessed
    if folder is not None:
        folder = cli.writable_folder(folder, "--save-preprocessed")
    checkpoint = cli.restore(args, PROG)
    import jax
    import numpy as np

    from mlp_jax.data import class_names
    from mlp_jax.steps import predict
    from mlp_jax.writers import print_line

    dataset = checkpoint.info["dataset"]
    style = args.preprocess
    if style == "auto":
        style = "object" if "fashion" in dataset["name"].lower() else "digit"
    images = prepare_images(files, grays, dataset["image_shape"], style)
    names = class_names(dataset["name"], dataset["num_classes"])
    probabilities = np.asarray(jax.device_get(predict(checkpoint.state, images)))
    where = f"{checkpoint.path} (epoch {checkpoint.epoch}), dataset {dataset['name']}"
    print_line(f"checkpoint: {where}, preprocessing: {style}")
    width = max(len(str(path)) for path in files)
    for path, row in zip(files, probabilities, strict=True):
        best = np.argsort(-row, kind="stable")[: min(args.top, len(names))]
        answers = "  ".join(f"{names[c]} ({100 * row[c]:.1f}%)" for c in best)
        print_line(f"{str(path):<{width}}  {answers}")
    if folder is not None:
        for image, target in zip(images, output_names(files, folder), strict=True):
            save_image(target, image)
        print_line(f"saved the {len(files)} preprocessed image(s) to {folder}/")
    return 0


if __name__ == "__main__":
    cli.leave(main())
