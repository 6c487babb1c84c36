"""The trained model as a file that runs without mlp_jax: uint8[batch, H, W, C] images ->
float32[batch, classes] logits, weights and normalisation inside. A serialized `jax.export`
(StableHLO), loaded by `jax.export.deserialize(open(FILE, "rb").read()).call(images)` (jax's
deserializer needs `flatbuffers`), or with TensorFlow installed a SavedModel or TFLite file."""

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


def logits_fn(state: TrainState) -> Callable[[jax.Array], jax.Array]:
    """images uint8[B, H, W, C] -> logits float32[B, classes]; the params are closed over."""
    params = eval_params(state)  # the moving average with --ema, as evaluated
    return lambda images: state.apply_fn({"params": params}, images, train=False)


def export_stablehlo(
    state: TrainState, image_shape: Sequence[int], platforms: Sequence[str] = ("cpu", "cuda", "tpu")
) -> jax.export.Exported:
    """The model as a `jax.export.Exported` for uint8 images with a symbolic batch size, lowered
    for each of `platforms` (by default it runs on any of them)."""
    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *image_shape), jnp.uint8)
    return jax.export.export(jax.jit(logits_fn(state)), platforms=tuple(platforms))(spec)


def save_tensorflow(state: TrainState, image_shape: Sequence[int], out: str, fmt: str) -> None:
    """A SavedModel folder (fmt "savedmodel") or a .tflite file (fmt "tflite") through jax2tf,
    written whole, then moved over `out`. Its "serving_default" signature: uint8 images
    [None, H, W, C] -> float32 logits [None, classes]."""
    import tensorflow as tf  # an optional dependency: imported only when asked for
    from jax.experimental import jax2tf

    shapes = [f"(batch, {','.join(map(str, image_shape))})"]
    converted = jax2tf.convert(logits_fn(state), polymorphic_shapes=shapes, with_gradient=False)
    images = tf.TensorSpec([None, *image_shape], tf.uint8, name="images")
    module = tf.Module()
    module.serve = tf.function(converted, autograph=False, input_signature=[images])
    signatures = {"serving_default": module.serve}
    temp = f"{out}.tmp-{os.getpid()}"
    if fmt == "savedmodel":
        tf.saved_model.save(module, temp, signatures=signatures)
    else:
        with tempfile.TemporaryDirectory() as folder:
            tf.saved_model.save(module, folder, signatures=signatures)
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
    files = (os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    return sum(map(os.path.getsize, files))
