"""The trained model as a file that runs without mlp_jax: a serialized `jax.export` (StableHLO)
function, uint8[batch, H, W, C] images -> float32[batch, classes] logits, with the weights and
the normalisation inside and a symbolic batch size; or, where TensorFlow is installed, a
SavedModel or TFLite flat buffer through jax2tf.

Load the StableHLO file with jax (and `flatbuffers`, which jax's deserializer imports):
`jax.export.deserialize(open(FILE, "rb").read()).call(images)`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mlp_jax.data import class_names
from mlp_jax.steps import TrainState, eval_params

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
    temp = f"{out}.tmp-{os.getpid()}"  # written whole, then moved over `out`
    if fmt == "savedmodel":
        tf.saved_model.save(module, temp, signatures={"serving_default": module.serve})
    else:
        with tempfile.TemporaryDirectory() as folder:
            tf.saved_model.save(module, folder, signatures={"serving_default": module.serve})
            flat_buffer = tf.lite.TFLiteConverter.from_saved_model(folder).convert()
        with open(temp, "wb") as file:
            file.write(flat_buffer)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.replace(temp, out)


def describe_artifact(fmt: str, dataset: dict, checkpoint: Any) -> dict:
    """What FILE.json says about an exported model: its input, output, classes and origin."""
    return {
        "format": fmt,
        "input": {"dtype": "uint8", "shape": ["batch", *dataset["image_shape"]]},
        "output": {"dtype": "float32", "shape": ["batch", dataset["num_classes"]], "is": "logits"},
        "class_names": list(class_names(dataset["name"], dataset["num_classes"])),
        "dataset": dataset["name"],
        "checkpoint": checkpoint.path,
        "epoch": checkpoint.epoch,
        "model": checkpoint.model,
    }


def artifact_bytes(path: str) -> int:
    """The size of a file, or of all files in a folder (a SavedModel)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )
