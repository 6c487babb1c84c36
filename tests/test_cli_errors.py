"""Every bad input or fault of issue 11 gives one line and a non-zero exit (or the right result):
no traceback, no hang, no native crash, nothing saved lost. In-process `main(argv)` where the
process adds nothing; a subprocess for signals, closed stdout, the environment, coordinators."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from test_workdir import TINY, _env, one_line_error, start, wait_for_pause, write_idx_dir

from mlp_jax import Config, ConfigError
from mlp_jax.config import MAX_LAYERS, MIN_DEFAULT_WIDTH
from mlp_jax.data import load_idx_dir
from mlp_jax.figures import plot_curves
from mlp_jax.loop import DivergedError, train_and_evaluate
from mlp_jax.plot import main as plot_main
from mlp_jax.report import format_models_epoch, sample_std
from mlp_jax.train import main

SUBSET = ["--dataset", "mnist_subset", *TINY, "--epochs", "1"]


def exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


# ----------------------------------------------------------------------------- flags

BAD_FLAGS = [
    (["--lr", "1e-320"], "--lr", "float32"),  # > 0, but 0 in float32
    (["--lr", "1e-40"], "--lr", "float32"),  # subnormal in float32
    (["--lr", "1e39"], "--lr", "float32"),  # inf in float32
    (["--lr-sweep", "0.1,1e-320"], "--lr-sweep", "float32"),
    (["--lr-sweep", "0.1,0.1", "--seeds", "2"], "--lr-sweep", "more than once"),
    (
        ["--schedule", "warmup_cosine", "--warmup-epochs", "3", "--epochs", "2"],
        "--warmup-epochs",
        "never reach its peak",
    ),
    (["--warmup-epochs", "inf"], "--warmup-epochs", "finite"),
    (["--weight-decay", "inf"], "--weight-decay", "finite"),
    (["--seed", str(2**63)], "--seed", "2147483647"),
    (["--seed", "-1"], "--seed", "2147483647"),
    (["--seed", str(2**31 - 1), "--seeds", "2"], "--seeds", "32-bit"),
    (["--layers", "10000"], "--layers", f"in [1, {MAX_LAYERS}]"),
    (["--num-processes", "2"], "--coordinator", "needs --coordinator"),
    (["--coordinator-timeout", "0"], "--coordinator-timeout", "[1, 86400]"),
    (["--layers", "2", "--hidden", "100000000"], "--hidden", "needs about"),
]


@pytest.mark.parametrize(
    "argv, flag, words", BAD_FLAGS, ids=[" ".join(argv) for argv, _, _ in BAD_FLAGS]
)
def test_bad_flag_is_one_line_naming_it_exit_2(tmp_path, argv, flag, words, capsys):
    workdir = tmp_path / "w"
    base = ["--dataset", "mnist_subset", "--epochs", "1"]
    if "--layers" not in argv:
        base += TINY
    assert exit_code([*base, *argv, "--workdir", str(workdir)]) == 2
    one_line_error(capsys.readouterr().err, "mlp_jax.train: error:", flag, words)
    assert not (workdir / "config.json").exists()


def test_the_memory_estimate_names_what_the_device_has(capsys):
    assert exit_code(["--dataset", "mnist_subset", "--layers", "2", "--hidden", "100000000"]) == 2
    err = capsys.readouterr().err
    assert "needs about 1.1 TiB" in err or "needs about" in err
    assert "cpu:0 (host memory) has" in err and "params and optimizer state" in err


# ----------------------------------------------------------------------------- data


def _labels_with(value, index=7, dtype=0x08):
    labels = np.arange(200) % 4
    labels[index] = value
    return labels, dtype


BAD_LABELS = [
    ("stray 255", *_labels_with(255), "label 255 at index 7", "class 4 never occurs"),
    ("stray 4", *_labels_with(4), "label 4 at index 7", "rare"),
    ("2**31-1", *_labels_with(2**31 - 1, dtype=0x0C), "label 2147483647 at index 7", "classes"),
    ("negative", *_labels_with(-3, dtype=0x0C), "label -3 at index 7", "negative"),
]


@pytest.mark.parametrize(
    "labels, label_type, where, why", [c[1:] for c in BAD_LABELS], ids=[c[0] for c in BAD_LABELS]
)
def test_a_corrupt_train_label_is_caught_naming_file_value_and_index(
    tmp_path, labels, label_type, where, why, capsys
):
    # A stray label among 0..3 (50 each) would otherwise make a 5- to 2**31-class model.
    write_idx_dir(tmp_path, train_labels=labels, label_type=label_type)
    started = time.monotonic()
    assert exit_code([*TINY, "--epochs", "1", "--idx-dir", str(tmp_path)]) == 2
    assert time.monotonic() - started < 60
    one_line_error(capsys.readouterr().err, "train-labels-idx1-ubyte.gz", where, why)


def test_a_test_label_outside_the_train_classes_is_caught(tmp_path):
    test_labels = np.arange(100) % 4
    test_labels[5] = 9
    write_idx_dir(tmp_path, test_labels=test_labels)
    with pytest.raises(ConfigError, match="t10k-labels.*label 9 at index 5.*\\[0, 3\\]"):
        load_idx_dir(tmp_path)


def test_images_that_never_vary_are_refused_not_blamed_on_the_lr(tmp_path, capsys):
    write_idx_dir(tmp_path, pixels=7)
    assert exit_code([*TINY, "--epochs", "1", "--idx-dir", str(tmp_path)]) == 2
    one_line_error(capsys.readouterr().err, "--idx-dir", "is 7 (std 0)")


# ----------------------------------------------------------------------------- silent results


def test_default_widths_never_narrower_than_the_classes():
    deep = Config(layers=12)
    assert min(deep.hidden_sizes) == MIN_DEFAULT_WIDTH
    assert deep.hidden_sizes[:4] == (512, 256, 128, 64)
    assert min(deep.hidden_sizes_for(47)) == 47  # e.g. EMNIST balanced
    assert Config(layers=5).hidden_sizes == (512, 256, 128, 64)  # unchanged where it was fine


def test_nan_message_names_weight_decay_when_it_is_set(tmp_path):
    write_idx_dir(tmp_path)
    config = Config(
        idx_dir=str(tmp_path),
        layers=2,
        hidden=(16,),
        epochs=1,
        batch_size=50,
        weight_decay=1e30,
        schedule="constant",
    )
    with pytest.raises(DivergedError, match="--weight-decay 1e\\+30 too large.*smaller --lr"):
        train_and_evaluate(config, log=lambda line: None)


def _sweep_records(epoch=1):
    records = []
    for lr, accuracies in ((0.1, (0.9, 0.8)), (0.01, (0.5, 0.7))):
        for seed, accuracy in enumerate(accuracies):
            records.append(
                {
                    "epoch": epoch,
                    "seed": seed,
                    "peak_lr": lr,
                    "train_loss": 1.0 - accuracy,
                    "train_accuracy": accuracy,
                    "test_loss": 1.0 - accuracy,
                    "test_accuracy": accuracy,
                    "lr": lr,
                    "epoch_seconds": 1.0,
                    "examples_per_second": 100.0,
                }
            )
    return records


def test_sweep_epoch_line_groups_by_lr_with_the_sample_std():
    line = format_models_epoch(_sweep_records(), 2)
    assert "lr 0.1: train loss 0.1500 ± 0.0707 test acc 85.00 ± 7.07%" in line, line
    assert "lr 0.01: train loss 0.4000 ± 0.1414 test acc 60.00 ± 14.14%" in line, line
    assert sample_std([0.9, 0.8]) == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert sample_std([0.9]) == 0.0


def test_plot_of_a_sweep_draws_one_line_per_lr_and_counts_epochs(tmp_path, capsys):
    history = _sweep_records(1) + _sweep_records(2)
    figure = plot_curves(history, "sweep")
    loss_axes = figure.axes[0]
    assert len(loss_axes.lines) == 2 * 2  # train and test, for each of 2 lrs (2 seeds each)
    assert all(list(line.get_xdata()) == [1, 2] for line in loss_axes.lines)  # no zig-zag
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "config": {},
                "layer_sizes": [784, 16, 10],
                "dataset": {"name": "mnist_subset", "num_classes": 10, "num_train": 4000},
            }
        )
    )
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    assert plot_main(["--workdir", str(tmp_path)]) == 0
    assert "no confusion matrix" in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize("out", ["a_file", "a_file/below"])
def test_plot_out_that_cannot_be_a_folder_is_one_line(tmp_path, out, capsys):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "config": {},
                "dataset": {"name": "x", "num_classes": 2, "num_train": 1},
            }
        )
    )
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}) + "\n"
    )
    (tmp_path / "a_file").write_text("keep")
    assert plot_main(["--workdir", str(tmp_path), "--out", str(tmp_path / out)]) == 2
    one_line_error(capsys.readouterr().err, "--out", "writable folder")
    assert (tmp_path / "a_file").read_text() == "keep"


# ----------------------------------------------------------------------------- the process


def run_cli(cwd, *argv, env=None, timeout=300, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "mlp_jax.train", *argv],
        cwd=cwd,
        env=_env(env),
        text=True,
        timeout=timeout,
        **kwargs,
    )


def test_help_imports_no_jax(tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mlp_jax.train", "--help"],
        cwd=tmp_path,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines()]
    assert not [name for name in imported if name == "jax" or name.startswith("jax.")]


def test_jax_platforms_without_that_device_is_one_line(tmp_path):
    result = run_cli(tmp_path, *SUBSET, env={"JAX_PLATFORMS": "rocm"}, capture_output=True)
    assert result.returncode == 2
    one_line_error(result.stderr, "JAX_PLATFORMS", "unset it")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("process_id", ["0", "1"])
def test_a_coordinator_nobody_answers_fails_in_bounded_time_naming_it(tmp_path, process_id):
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    result = run_cli(
        tmp_path,
        *SUBSET,
        "--coordinator",
        address,
        "--num-processes",
        "2",
        "--process-id",
        process_id,
        "--coordinator-timeout",
        "3",
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 2 and time.monotonic() - started < 60
    one_line_error(result.stderr, "--coordinator", address, "3s")


def test_stdout_closed_mid_training_saves_stops_and_resumes(tmp_path):
    """`train | head`: once stdout is gone the run saves the epoch it finished and stops."""
    write_idx_dir(tmp_path / "data")
    argv = [*TINY, "--idx-dir", "data", "--epochs", "4", "--workdir", "w"]
    process = start(tmp_path, *argv, pause_epoch=2)
    wait_for_pause(process)
    process.stdout.close()  # the pager quits
    (tmp_path / "go").touch()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 128 + signal.SIGPIPE
    one_line_error(err, "stdout cannot be written (Broken pipe)", "w/checkpoints/2 is saved")
    result = run_cli(tmp_path, *argv, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert "resuming from checkpoint w/checkpoints/2" in result.stdout


@pytest.mark.parametrize("module", ["mlp_jax.train", "mlp_jax.evaluate"])
def test_stdout_full_is_one_line_without_traceback(tmp_path, module):
    write_idx_dir(tmp_path / "data")
    argv = [*TINY, "--idx-dir", "data", "--epochs", "1", "--workdir", "w"]
    if module == "mlp_jax.evaluate":
        assert run_cli(tmp_path, *argv, capture_output=True).returncode == 0
        argv = ["--workdir", "w"]
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", module, *argv],
            cwd=tmp_path,
            env=_env(None),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert result.returncode == 1
    one_line_error(result.stderr, "No space left on device")


@pytest.mark.parametrize(
    "module, args",
    [
        ("evaluate", []),
        ("export", ["--out", "m.bin"]),
        ("plot", ["--out", "f"]),
        ("predict", ["d.png"]),
    ],
)
def test_a_reading_command_into_a_closed_pipe_is_quiet(tmp_path, module, args):
    write_idx_dir(tmp_path / "data")
    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (12, 6, 16, 22))
    digit.save(tmp_path / "d.png")
    argv = [*TINY, "--idx-dir", "data", "--epochs", "1", "--workdir", "w"]
    assert run_cli(tmp_path, *argv, capture_output=True).returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", f"mlp_jax.{module}", "--workdir", "w", *args],
        cwd=tmp_path,
        env=_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()  # `| head -0`
    err = process.stderr.read()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in err and "Exception ignored" not in err, err


# Start-up phases by the line printed just before them (None: during the imports).
PHASES = [None, "devices:", "dataset:", "training:"]


@pytest.mark.parametrize("after", PHASES, ids=["imports", "data", "init", "compile"])
def test_ctrl_c_during_start_up_exits_130_with_one_line(tmp_path, after):
    write_idx_dir(tmp_path / "data")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlp_jax.train", *TINY, "--idx-dir", "data", "--epochs", "1"],
        cwd=tmp_path,
        env=_env({"JAX_ENABLE_COMPILATION_CACHE": "false"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if after is None:  # once jaxlib's library is loading: the imports after the flags
        deadline = time.monotonic() + 60
        while "jaxlib" not in _maps(process.pid) and time.monotonic() < deadline:
            time.sleep(0.005)
    else:
        for line in process.stdout:
            if line.startswith(after):
                break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip(f"start-up after {after!r} ended before the signal arrived")
    assert process.returncode == 130, err
    assert "Segmentation" not in err
    one_line_error(err, "SIGINT")


def _maps(pid):
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return maps.read()
    except OSError:
        return ""


def test_kill_resume_experiment_runs_with_a_relative_workdir(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            str(root / "experiments/kill_resume.py"),
            "--kills",
            "1",
            "--keep-dirs",
            str(tmp_path),
            "--",
            *TINY[:4],
            "--dataset",
            "mnist_subset",
            "--epochs",
            "3",
        ],
        cwd=tmp_path,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--workdir killed" in result.stdout or "relative" in result.stdout
    assert os.path.isdir(tmp_path / "killed/checkpoints")
