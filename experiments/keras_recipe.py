"""mlp_jax's default recipe in Keras 3 on the JAX backend, `model.fit`, for time_to_accuracy.py.

python -m experiments.keras_recipe --idx-dir DIR [--epochs 10] [--steps-per-execution 32]
The 784-512-256-128-64-10 ReLU net, SGD with momentum 0.9, peak lr 0.05 with a cosine decay over
the run stepped every batch, batch 128 (the last, partial batch kept), images standardized with
the train split's mean and std, shuffled by fit every epoch; Keras' own initializers. Prints
"ready to train" once the data and the model are ready (fit compiles inside epoch 1, as
torch.compile does) and one line per epoch with the test accuracy, in torch_recipe.py's format.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from mlp_jax import Config
from mlp_jax.data import load_idx_dir, train_mean_std

HIDDEN = Config().hidden_sizes  # 784-512-256-128-64-10, as torch_recipe.py
PEAK_LR, MOMENTUM, BATCH_SIZE = 0.05, 0.9, 128  # mlp_jax's defaults (torch_recipe "default")
STEPS_PER_EXECUTION = 32  # experiments/benchmark.py's KERAS_STEPS_PER_EXECUTION (not imported:
# it imports torch, which would slow this process's start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idx-dir", required=True, help="folder of 4 IDX files")
    parser.add_argument("--epochs", type=int, default=10, help="the cosine schedule's horizon too")
    parser.add_argument("--steps-per-execution", type=int, default=STEPS_PER_EXECUTION)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = "jax"
    import keras

    keras.utils.set_random_seed(args.seed)

    dataset = load_idx_dir(args.idx_dir)
    mean, std = train_mean_std(dataset.train_images)

    def standardized(images_u8: np.ndarray) -> np.ndarray:  # uint8[N, H, W, C] -> float32[N, D]
        return (images_u8.reshape(len(images_u8), -1).astype(np.float32) / 255.0 - mean) / std

    train_images, test_images = (
        standardized(dataset.train_images),
        standardized(dataset.test_images),
    )
    steps = math.ceil(len(train_images) / BATCH_SIZE)
    schedule = keras.optimizers.schedules.CosineDecay(PEAK_LR, decay_steps=args.epochs * steps)
    layers = [keras.layers.Dense(width, activation="relu") for width in HIDDEN]
    model = keras.Sequential(
        [keras.Input((train_images.shape[1],)), *layers, keras.layers.Dense(dataset.num_classes)]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=MOMENTUM),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
        steps_per_execution=args.steps_per_execution,
    )

    class EpochLine(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs=None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            print(
                f"epoch {epoch + 1}/{args.epochs}  train loss {logs['loss']:.4f}  "
                f"test acc {100 * logs['val_accuracy']:5.2f}%  "
                f"{time.perf_counter() - self.start:.2f}s",
                flush=True,
            )

    # The whole-process timer (time_to_accuracy.py) marks this line: imports, data and model done.
    print(f"ready to train: {len(train_images)} images, keras {keras.__version__}", flush=True)
    model.fit(
        train_images,
        dataset.train_labels,
        batch_size=BATCH_SIZE,
        epochs=args.epochs,
        shuffle=True,
        validation_data=(test_images, dataset.test_labels),
        validation_batch_size=1000,
        callbacks=[EpochLine()],
        verbose=0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
