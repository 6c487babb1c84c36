"""A tiny synthetic Dataset whose sizes divide nothing and whose splits differ in their statistics.

37 train examples (batches of 10 leave a last batch of 7) and 23 test examples (eval batches of 16
leave 9 padded slots), 8x8 pixels: train in [0, 128), test in [100, 256), so a mean or std taken
from the wrong split shows.
"""

import numpy as np

from mlp_jax import Dataset


def tiny_dataset(num_train: int = 37, num_test: int = 23, num_classes: int = 3) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(
        name="tiny",
        train_images=rng.integers(0, 128, (num_train, 8, 8, 1), dtype=np.uint8),
        train_labels=(np.arange(num_train) % num_classes).astype(np.int32),
        test_images=rng.integers(100, 256, (num_test, 8, 8, 1), dtype=np.uint8),
        test_labels=rng.permutation(np.arange(num_test) % num_classes).astype(np.int32),
        num_classes=num_classes,
        source="synthetic",
    )
