"""`python -m mlp_jax.export --workdir DIR --out FILE`: the trained model, runnable without
mlp_jax (artifact.py), and FILE.json with its input, output and class names."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from mlp_jax import cli
from mlp_jax.config import ConfigError

PROG = "mlp_jax.export"


@cli.command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    import importlib.util

    what = "Export a trained run's model: uint8 images -> logits, runnable without mlp_jax."
    parser = cli.checkpoint_parser(PROG, what)
    parser.add_argument("--out", required=True, help="file to write (a folder for savedmodel)")
    help = "stablehlo: serialized jax.export; savedmodel, tflite: through jax2tf (need TensorFlow)"
    formats = ("stablehlo", "savedmodel", "tflite")
    parser.add_argument("--format", choices=formats, default="stablehlo", help=help)
    args = parser.parse_args(argv)
    if args.format != "stablehlo" and importlib.util.find_spec("tensorflow") is None:
        install = "not installed (pip install tensorflow-cpu); stablehlo needs nothing more"
        raise ConfigError("--format", f"{args.format} needs TensorFlow, which is {install}")
    cli.writable_folder(os.path.dirname(args.out) or ".", "--out")  # made, as plot's --out
    # Only an earlier export is replaced: never a run's file, a device, a link or another folder.
    earlier = os.path.isfile(f"{args.out}.json") and not os.path.islink(args.out)
    if os.path.isdir(args.out):
        earlier &= args.format == "savedmodel" and os.path.isfile(f"{args.out}/saved_model.pb")
    else:
        earlier &= os.path.isfile(args.out)
    if os.path.lexists(args.out) and not earlier:
        raise ConfigError(
            "--out", f"{args.out} exists and is no earlier export: not overwriting it"
        )
    checkpoint = cli.restore(args, PROG)
    from mlp_jax import artifact
    from mlp_jax.workdir import write_atomically
    from mlp_jax.writers import print_line

    dataset = checkpoint.info["dataset"]
    image_shape = tuple(dataset["image_shape"])
    if args.format == "stablehlo":
        exported = artifact.export_stablehlo(checkpoint.state, image_shape)
        write_atomically(args.out, bytes(exported.serialize()), f"--out {args.out}")
    else:
        artifact.save_tensorflow(checkpoint.state, image_shape, args.out, args.format)
    metadata = artifact.describe_artifact(args.format, dataset, checkpoint)
    write_atomically(f"{args.out}.json", json.dumps(metadata, indent=2) + "\n", f"{args.out}.json")
    shape, size = ", ".join(map(str, image_shape)), f"{artifact.artifact_bytes(args.out):,} bytes"
    what = f"{checkpoint.path} (epoch {checkpoint.epoch}) as {args.format}: {args.out} ({size})"
    model = f"uint8[batch, {shape}] -> float32[batch, {dataset['num_classes']}] logits"
    print_line(f"exported {what}; {model}; class names in {args.out}.json")
    return 0


if __name__ == "__main__":
    cli.leave(main())
