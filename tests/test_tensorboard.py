"""The TensorBoard writer: what it logs reads back, through TensorBoard's own event reader."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mlp_jax.tensorboard import TensorBoardWriter, hparam_values, scalar_tag
from mlp_jax.writers import write_epoch

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="reading event files back needs the tensorboard package (the test extra)",
)

plugin_data_pb2 = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")

NAMES = tuple(str(i) for i in range(3))


def read_events(logdir):
    reader = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    reader.Reload()
    return reader


def scalars(reader, tag):
    return [(event.step, event.value) for event in reader.Scalars(tag)]


def record(epoch, loss, test_accuracy=None):
    return {
        "epoch": epoch,
        "train_loss": loss,
        "train_accuracy": 0.5,
        "test_loss": None if test_accuracy is None else 2 * loss,
        "test_accuracy": test_accuracy,
        "lr": 0.1 / epoch,
        "examples_per_second": 1234.5,
    }


def writer_for(logdir, hparams=({},), purge_step=None):
    writer = TensorBoardWriter(str(logdir), NAMES, purge_step)
    writer.write_hparams(list(hparams))
    return writer


def test_epoch_records_become_scalars_at_the_step_reached(tmp_path):
    writer = writer_for(tmp_path, [{"lr": 0.1}])
    writer.write_scalars(5, [record(1, 0.75)])
    writer.write_scalars(10, [record(2, 0.25, test_accuracy=0.875)])
    writer.close()
    reader = read_events(tmp_path)
    assert scalars(reader, "train/loss") == [(5, 0.75), (10, 0.25)]
    assert scalars(reader, "test/accuracy") == [(10, 0.875)]  # epoch 1 did not evaluate
    assert scalars(reader, "test/loss") == [(10, 0.5)]
    assert scalars(reader, "lr") == [(5, pytest.approx(0.1)), (10, pytest.approx(0.05))]
    assert scalars(reader, "examples_per_second") == [(5, 1234.5), (10, 1234.5)]
    assert scalars(reader, "epoch") == [(5, 1), (10, 2)]


def test_per_step_loss_every_n_steps_at_its_global_step(tmp_path):
    writer = writer_for(tmp_path)
    losses = np.arange(10, dtype=np.float32)[None] / 8  # step t's loss is (t - 1) / 8
    write_epoch([writer], 5, [record(1, 0.5)], losses[:, :5], None, log_every=2)
    write_epoch([writer], 10, [record(2, 0.5)], losses[:, 5:], None, log_every=2)
    writer.close()
    logged = scalars(read_events(tmp_path), "train/loss_per_step")
    assert logged == [(t, (t - 1) / 8) for t in (2, 4, 6, 8, 10)]


def test_log_every_zero_writes_no_step_losses(tmp_path):
    writer = writer_for(tmp_path)
    write_epoch([writer], 5, [record(1, 0.5)], np.ones((1, 5), np.float32), None, log_every=0)
    writer.close()
    tags = read_events(tmp_path).Tags()["scalars"]
    assert "train/loss" in tags and "train/loss_per_step" not in tags


def test_confusion_matrix_image_and_hparams_are_logged(tmp_path):
    config = {"hidden": (512, 256), "lr": 0.05, "workdir": "/somewhere", "clip_norm": None}
    writer = writer_for(tmp_path, [config])
    confusion = np.array([[5, 1, 0], [0, 6, 0], [1, 0, 7]])
    writer.write_images(10, {"test/confusion_matrix": confusion[None]})
    writer.close()
    reader = read_events(tmp_path)
    (image,) = reader.Images("test/confusion_matrix")
    assert image.step == 10 and image.width > 100 and image.height > 100
    start = reader.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    logged = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert logged["lr"].number_value == 0.05 and logged["hidden"].string_value == "512,256"
    assert "workdir" not in logged


def test_hparams_are_scalars_and_strings_without_run_locations():
    config = {"hidden": (512, 256), "lr": 0.05, "workdir": "/w", "clip_norm": None, "bias": True}
    assert hparam_values(config) == {
        "hidden": "512,256",
        "lr": 0.05,
        "clip_norm": "none",
        "bias": True,
    }


def test_resume_purges_what_the_interrupted_run_logged_after_its_checkpoint(tmp_path):
    first = writer_for(tmp_path)
    for epoch, loss in [(1, 0.5), (2, 0.25), (3, 0.125)]:  # killed after epoch 3's line ...
        first.write_scalars(5 * epoch, [record(epoch, loss)])
    first.close()
    # ... but its newest checkpoint was of epoch 2 (step 10): the resumed run redoes epoch 3.
    resumed = writer_for(tmp_path, purge_step=11)
    resumed.write_scalars(15, [record(3, 0.1875)])
    resumed.close()
    assert scalars(read_events(tmp_path), "train/loss") == [(5, 0.5), (10, 0.25), (15, 0.1875)]


def test_sweep_models_get_one_sub_run_each_with_step_losses_and_confusion(tmp_path):
    models = [{"seed": 0, "peak_lr": 0.1}, {"seed": 0, "peak_lr": 0.01}]
    writer = writer_for(tmp_path, models)
    confusion = np.stack([np.eye(3, dtype=int) * 4, np.ones((3, 3), int)])
    records = [{**record(1, 0.5), **models[0]}, {**record(1, 0.75), **models[1]}]
    per_step_loss = np.array([[1.0] * 5, [2.0] * 5])
    write_epoch([writer], 5, records, per_step_loss, confusion, log_every=5)
    writer.close()
    for name, loss, step_loss in (("seed0-lr0.1", 0.5, 1.0), ("seed0-lr0.01", 0.75, 2.0)):
        reader = read_events(tmp_path / name)
        assert scalars(reader, "train/loss") == [(5, loss)]
        assert scalars(reader, "train/loss_per_step") == [(5, step_loss)]
        (image,) = reader.Images("test/confusion_matrix")
        assert image.step == 5


@pytest.mark.parametrize(
    "key, tag",
    [
        ("train_loss", "train/loss"),
        ("val_accuracy", "val/accuracy"),
        ("lr", "lr"),
        ("examples_per_second", "examples_per_second"),
        ("test_error_rate", "test/error_rate"),
        ("train_loss_per_step", "train/loss_per_step"),
    ],
)
def test_record_keys_map_to_tags_grouped_by_split(key, tag):
    assert scalar_tag(key) == tag


def test_training_run_logs_what_metrics_jsonl_says(trained_run):
    """conftest.py's run (2 epochs x 40 steps, --log-every 10): TensorBoard == metrics.jsonl."""
    workdir, _ = trained_run
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    reader = read_events(workdir / "tensorboard")
    for key in (
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "lr",
        "examples_per_second",
        "epoch_seconds",
    ):
        logged = scalars(reader, scalar_tag(key))
        expected = [(40 * r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in records]
        assert logged == expected, key
    assert [step for step, _ in scalars(reader, "train/loss_per_step")] == list(range(10, 81, 10))
    # The confusion matrix is drawn at the last epoch only (matplotlib is slow per epoch).
    assert [image.step for image in reader.Images("test/confusion_matrix")] == [80]


def test_cli_step_losses_average_to_the_epoch_loss(tmp_path):
    """--log-every 1, batches that divide the train set: each epoch's step losses average to the
    epoch's train_loss in metrics.jsonl (as users run it: a subprocess, a relative --workdir)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlp_jax.train",
            "--dataset",
            "mnist_subset",
            "--layers",
            "1",
            "--epochs",
            "2",
            "--batch-size",
            "500",
            "--workdir",
            "run",
            "--log-every",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Total Parameters: 7,850" in result.stdout  # the model summary at start-up
    records = [
        json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    ]
    steps = scalars(read_events(tmp_path / "run/tensorboard"), "train/loss_per_step")
    assert [step for step, _ in steps] == list(range(1, 17))  # 4000 / 500 = 8 steps per epoch
    for record in records:
        epoch_losses = [loss for step, loss in steps if (step - 1) // 8 + 1 == record["epoch"]]
        assert np.mean(epoch_losses) == pytest.approx(record["train_loss"], rel=1e-5)
