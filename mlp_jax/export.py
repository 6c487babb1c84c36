"""`python -m mlp_jax.export --workdir DIR --out FILE`: the trained model, runnable without mlp_jax.

The default artifact is a serialized `jax.export` (StableHLO) function: uint8[batch, H, W, C]
images -> float32[batch, classes] logits, with the weights and the normalisation inside and a
symbolic batch size. Load it with `jax.export.deserialize(open(FILE, "rb").read()).call(images)`.
Where TensorFlow is installed, jax2tf also writes a SavedModel or a TFLite flat buffer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mlp_jax.checkpoint import NoCheckpointError, restore_for_inference
from mlp_jax.config import ConfigError
from mlp_jax.plot import class_names
from mlp_jax.steps import TrainState, eval_params
from mlp_jax.train import OneLineParser

PROG = "mlp_jax.export"
FORMATS = ("stablehlo", "savedmodel", "tflite")
PLATFORMS = ("cpu", "cuda", "tpu")  # lowered for each, so the artifact runs on any of them


def logits_fn(state: TrainState) -> Callable[[jax.Array], jax.Array]:
    """images uint8[B, H, W, C] -> logits float32[B, classes]; the params are closed over."""
    params = eval_params(state)  # the moving average with --ema, as evaluated

    def logits(images: jax.Array) -> jax.Array:
        return state.apply_fn({"params": params}, images, train=False)

    return logits


def export_stablehlo(
    state: TrainState, image_shape: Sequence[int], platforms: Sequence[str] = PLATFORMS
) -> jax.export.Exported:
    """The model as a `jax.export.Exported` for uint8 images with a symbolic batch size."""
    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *image_shape), jnp.uint8)
    return jax.export.export(jax.jit(logits_fn(state)), platforms=tuple(platforms))(spec)


def save_tensorflow(state: TrainState, image_shape: Sequence[int], out: str, fmt: str) -> None:
    """A SavedModel folder (fmt "savedmodel") or a .tflite file (fmt "tflite") through jax2tf.

    Signature "serving_default": uint8 images [None, H, W, C] -> float32 logits [None, classes].
    """
    import tensorflow as tf  # an optional dependency: imported only when asked for
    from jax.experimental import jax2tf

    shape = ",".join(map(str, image_shape))
    converted = jax2tf.convert(
        logits_fn(state), polymorphic_shapes=[f"(batch, {shape})"], with_gradient=False
    )
    module = tf.Module()
    module.serve = tf.function(
        converted,
        autograph=False,
        input_signature=[tf.TensorSpec([None, *image_shape], tf.uint8, name="images")],
    )
    if fmt == "savedmodel":
        tf.saved_model.save(module, out, signatures={"serving_default": module.serve})
        return
    with tempfile.TemporaryDirectory() as folder:
        tf.saved_model.save(module, folder, signatures={"serving_default": module.serve})
        flat_buffer = tf.lite.TFLiteConverter.from_saved_model(folder).convert()
    with open(out, "wb") as file:
        file.write(flat_buffer)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Export a trained run's model: uint8 images -> logits, runnable without "
        "mlp_jax.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workdir", required=True, help="the --workdir of a training run")
    parser.add_argument(
        "--best",
        action="store_true",
        help="export the checkpoint that validation selected, not the newest",
    )
    parser.add_argument(
        "--out", required=True, help="file to write (a folder for --format savedmodel)"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="stablehlo",
        help="stablehlo: serialized jax.export; savedmodel, tflite: through jax2tf (need "
        "TensorFlow)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.format != "stablehlo" and not _tensorflow_installed():
            raise ConfigError(
                "--format",
                f"{args.format} needs TensorFlow, which is not installed "
                "(pip install tensorflow-cpu); --format stablehlo needs nothing more",
            )
        _check_out(args.out)
        checkpoint = restore_for_inference(args.workdir, args.best)
    except (NoCheckpointError, ConfigError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    dataset = checkpoint.info["dataset"]
    image_shape = tuple(dataset["image_shape"])
    if args.format == "stablehlo":
        exported = export_stablehlo(checkpoint.state, image_shape)
        _write_atomically(args.out, bytes(exported.serialize()))
    else:
        temp = f"{args.out}.tmp-{os.getpid()}"
        save_tensorflow(checkpoint.state, image_shape, temp, args.format)
        if os.path.isdir(args.out):
            shutil.rmtree(args.out)
        os.replace(temp, args.out)
    metadata = _metadata(checkpoint, image_shape, args.format)
    _write_atomically(f"{args.out}.json", (json.dumps(metadata, indent=2) + "\n").encode())
    size = _size(args.out)
    print(
        f"exported {checkpoint.path} (epoch {checkpoint.epoch}) as {args.format}: {args.out} "
        f"({size:,} bytes); uint8[batch, {', '.join(map(str, image_shape))}] -> "
        f"float32[batch, {dataset['num_classes']}] logits; class names in {args.out}.json"
    )
    return 0


def _metadata(checkpoint: Any, image_shape: tuple[int, ...], fmt: str) -> dict[str, Any]:
    dataset = checkpoint.info["dataset"]
    return {
        "format": fmt,
        "input": {"dtype": "uint8", "shape": ["batch", *image_shape]},
        "output": {"dtype": "float32", "shape": ["batch", dataset["num_classes"]], "is": "logits"},
        "class_names": list(class_names(dataset["name"], dataset["num_classes"])),
        "dataset": dataset["name"],
        "checkpoint": checkpoint.path,
        "epoch": checkpoint.epoch,
    }


def _tensorflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def _check_out(out: str) -> None:
    """Refuse an --out whose folder does not exist, before the (slow) restore and export."""
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ConfigError("--out", f"the folder {folder} does not exist")
    if os.path.isdir(out) and not os.path.exists(os.path.join(out, "saved_model.pb")):
        raise ConfigError("--out", f"{out} is a folder that holds no SavedModel: not overwriting")


def _write_atomically(path: str, data: bytes) -> None:
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "wb") as file:
        file.write(data)
    os.replace(temp, path)


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


if __name__ == "__main__":
    sys.exit(main())
