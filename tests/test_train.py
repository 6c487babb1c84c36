"""The command line and the epoch loop: output, workdir files, reproducibility, bad input."""

import json
import os
import subprocess
import sys

import chex
import pytest

from mlp_jax import Config
from mlp_jax.data import load_mnist_subset
from mlp_jax.loop import DivergedError, train_and_evaluate
from mlp_jax.train import build_parser, main

FAST = ["--dataset", "mnist_subset", "--layers", "2", "--hidden", "64", "--epochs", "1"]


@pytest.fixture(scope="module")
def subset():
    return load_mnist_subset()


def test_cli_trains_on_mnist_subset_and_writes_workdir(tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlp_jax.train",
            "--dataset",
            "mnist_subset",
            "--layers",
            "3",
            "--epochs",
            "2",
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "devices:" in out and "parameters" in out and "compiled" in out
    assert "784-512-256-10" in out
    final = [line for line in out.splitlines() if line.startswith("test accuracy")]
    accuracy = float(final[0].split()[2].rstrip("%"))
    assert accuracy > 80.0, out  # 2 epochs on 4,000 real digits
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert {
            "epoch",
            "train_loss",
            "train_accuracy",
            "test_loss",
            "test_accuracy",
            "lr",
            "epoch_seconds",
        } <= set(record)
        assert "grad_norm" not in record  # a diagnostic, computed only with --diagnostics
    assert "grad norm" not in out
    assert records[-1]["test_accuracy"] == pytest.approx(accuracy / 100, abs=1e-4)
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["config"]["layers"] == 3 and saved["dataset"]["num_train"] == 4000


def test_cli_diagnostics_log_the_mean_grad_norm(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mlp_jax.train", *FAST, "--diagnostics", "--workdir", "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    epoch_line = next(line for line in result.stdout.splitlines() if line.startswith("epoch 1/1"))
    shown = float(epoch_line.split("grad norm ")[1].split()[0])
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert record["grad_norm"] > 0 and shown == pytest.approx(record["grad_norm"], rel=1e-2)


def test_same_seed_gives_identical_runs(subset):
    config = Config(dataset="mnist_subset", layers=2, hidden=(32,), epochs=2, dropout=0.1)
    first = train_and_evaluate(config, subset, log=lambda line: None)
    second = train_and_evaluate(config, subset, log=lambda line: None)
    chex.assert_trees_all_equal(first.state.params, second.state.params)
    strip = [{k: v for k, v in r.items() if "second" not in k} for r in first.history]
    assert strip == [{k: v for k, v in r.items() if "second" not in k} for r in second.history]


def test_eval_every_and_lr_are_logged(subset):
    config = Config(
        dataset="mnist_subset",
        layers=1,
        epochs=3,
        eval_every=2,
        schedule="step",
        step_every=1,
        gamma=0.5,
        lr=0.1,
    )
    history = train_and_evaluate(config, subset, log=lambda line: None).history
    assert [r["test_accuracy"] is not None for r in history] == [False, True, True]
    assert [r["lr"] for r in history] == pytest.approx([0.1, 0.05, 0.025])


def test_batch_of_whole_training_set_and_of_one(subset):
    whole = Config(dataset="mnist_subset", layers=1, epochs=1, batch_size=4000)
    result = train_and_evaluate(whole, subset, log=lambda line: None)
    assert int(result.state.step) == 1
    tiny = subset._replace(
        train_images=subset.train_images[:50], train_labels=subset.train_labels[:50]
    )
    one = train_and_evaluate(whole.replace(batch_size=1), tiny, log=lambda line: None)
    assert int(one.state.step) == 50


def test_nan_loss_stops_with_epoch_and_advice(subset, capsys):
    config = Config(
        dataset="mnist_subset", layers=3, epochs=2, optimizer="sgd", lr=1e4, schedule="constant"
    )
    with pytest.raises(DivergedError, match="epoch 1.*smaller --lr"):
        train_and_evaluate(config, subset, log=lambda line: None)


def test_help_shows_every_default():
    text = build_parser().format_help()
    flags = "--layers --hidden --activation --dropout --no-bias --optimizer --schedule --normalize"
    for flag in (flags + " --idx-dir --manual-dir --eval-every").split():
        assert flag in text
    assert "(default: 5)" in text and "(default: momentum)" in text
    assert "(default: None)" not in text  # an unset flag's help says what happens instead


@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "plot"])
def test_a_commands_help_states_each_default_once(command):
    import subprocess
    import sys

    argv = [sys.executable, "-m", f"mlp_jax.{command}", "--help"]
    text = " ".join(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split())
    assert "(default: None)" not in text and "(default: newest)" in text


BAD_INPUTS = [
    (["--layers", "0"], "--layers"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "4001"], "--batch-size"),
    (["--dropout", "1"], "--dropout"),
    (["--dropout", "-0.1"], "--dropout"),
    (["--dataset", "no_such_dataset"], "--dataset"),
    (["--activation", "swish"], "--activation"),
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--schedule", "linear"], "--schedule"),
    (["--hidden", "64,x"], "--hidden"),
    (["--idx-dir", "/no/such/dir"], "--idx-dir"),
]


@pytest.mark.parametrize("argv, flag", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_naming_the_flag_exit_2(argv, flag, capsys):
    base = ["--dataset", "mnist_subset"] if "--dataset" not in argv else []
    assert _exit_code(base + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mlp_jax.train: error:"), err
    assert flag in err


def test_idx_files_that_disagree_are_rejected(tmp_path, capsys):
    import gzip
    import struct

    def write(name, magic, dims, payload):
        with gzip.open(tmp_path / name, "wb") as file:
            file.write(struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload)

    write("train-images-idx3-ubyte.gz", 0x803, (3, 28, 28), bytes(3 * 784))
    write("train-labels-idx1-ubyte.gz", 0x801, (2,), bytes(2))  # 3 images but 2 labels
    write("t10k-images-idx3-ubyte.gz", 0x803, (1, 28, 28), bytes(784))
    write("t10k-labels-idx1-ubyte.gz", 0x801, (1,), bytes(1))
    assert main(["--idx-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--idx-dir" in err


def test_workdir_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("keep me")
    assert main(FAST + ["--workdir", str(path)]) == 2
    assert "--workdir" in capsys.readouterr().err
    assert path.read_text() == "keep me"


def test_cli_nan_exit_is_nonzero_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlp_jax.train",
            "--dataset",
            "mnist_subset",
            "--layers",
            "3",
            "--optimizer",
            "sgd",
            "--lr",
            "10000",
            "--schedule",
            "constant",
            "--epochs",
            "3",
            "--workdir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "epoch 1" in result.stderr and "smaller --lr" in result.stderr
    assert os.path.exists(tmp_path / "run" / "config.json")


def _exit_code(argv):
    """main()'s exit code, whether it returns it or argparse raises SystemExit."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def test_first_line_is_printed_before_jax_is_imported():
    # The first line must not wait for JAX (seconds): print_line sees whether jax is loaded yet.
    code = (
        "import sys\n"
        "import mlp_jax.writers as writers\n"
        "def first(line):\n"
        "    print('jax loaded' if 'jax' in sys.modules else 'no jax', '|', line)\n"
        "    raise SystemExit(0)\n"
        "writers.print_line = first\n"
        "from mlp_jax.train import main\n"
        "main(['--dataset', 'mnist_subset', '--layers', '3', '--epochs', '2'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == (
        "no jax | mlp_jax.train: 3-layer MLP on mnist_subset, 2 epochs of batch 128; starting JAX"
    ), out.stderr[-2000:]


@pytest.mark.parametrize("with_workdir", [False, True])
def test_a_run_without_workdir_imports_no_orbax_tensorboard_or_matplotlib(tmp_path, with_workdir):
    """Start-up counts (time to accuracy): orbax, tensorboardX (which imports torch when it is
    installed) and matplotlib load only when --workdir needs them."""
    heavy = ("orbax.checkpoint", "tensorboardX", "matplotlib")
    argv = ["--dataset", "mnist_subset", "--layers", "2", "--hidden", "8", "--epochs", "1"]
    argv += ["--workdir", "run"] if with_workdir else []
    code = (
        "import sys\n"
        "from mlp_jax.train import main\n"
        f"assert main({argv!r}) == 0\n"
        f"print('loaded:', *[m for m in {heavy!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    loaded = out.stdout.strip().splitlines()[-1]
    assert loaded == ("loaded: " + " ".join(heavy) if with_workdir else "loaded:"), out.stderr
