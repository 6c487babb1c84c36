"""The run folder as users meet it: relative paths from any current directory, one writer per
workdir (the lock), readers while it trains, hand-edited files, disks that refuse writes."""

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlp_jax import Config, restore_checkpoint
from mlp_jax.workdir import RunFileError, Workdir, WorkdirBusy, WorkdirError, write_atomically

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--layers", "2", "--hidden", "16", "--batch-size", "50", "--eval-batch-size", "100"]

# The CLI, with PAUSE_EPOCH=N: the N-th epoch this process trains prints PAUSED and waits
# (in short sleeps, so signals are handled) until the file named by PAUSE_UNTIL exists.
WRAPPER = r"""
import os, sys, time
import mlp_jax.loop as loop
import mlp_jax.train as train
pause_epoch, trained = int(os.environ.get("PAUSE_EPOCH", "0")), []
original_fetch = loop._fetch
def fetch(tree):
    if isinstance(tree, dict) and "train_loss" in tree:
        trained.append(1)
        if len(trained) == pause_epoch:
            print("PAUSED", flush=True)
            while not os.path.exists(os.environ["PAUSE_UNTIL"]):
                time.sleep(0.02)
    return original_fetch(tree)
loop._fetch = fetch
sys.exit(train.main(sys.argv[1:]))
"""


def write_idx_dir(directory, train_labels=None, test_labels=None, pixels=None, label_type=0x08):
    """A tiny MNIST-like IDX folder: 200 train / 100 test images of 4 classes, 8x8 pixels."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train_labels = np.arange(200) % 4 if train_labels is None else np.asarray(train_labels)
    test_labels = np.arange(100) % 4 if test_labels is None else np.asarray(test_labels)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        images = rng.integers(0, 256, (len(labels), 8, 8), dtype=np.uint8)
        images[:, labels % 8, :] = 255  # a learnable pattern: row `label` is bright
        if pixels is not None:
            images[:] = pixels
        _write(directory / f"{prefix}-images-idx3-ubyte.gz", 0x08, images.shape, images.tobytes())
        dtype = {0x08: ">u1", 0x0C: ">i4"}[label_type]
        _write(
            directory / f"{prefix}-labels-idx1-ubyte.gz",
            label_type,
            labels.shape,
            labels.astype(dtype).tobytes(),
        )
    return directory


def _write(path, type_code, shape, payload):
    header = bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    with gzip.open(path, "wb") as file:
        file.write(header + payload)


def cli(cwd, *argv, module="mlp_jax.train", env=None, timeout=300):
    """Run `python -m module argv` in `cwd`, as a user would; (returncode, stdout, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", module, *argv],
        cwd=cwd,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout, result.stderr


def start(cwd, *argv, pause_epoch=0, env=None):
    env = _env({"PAUSE_EPOCH": str(pause_epoch), "PAUSE_UNTIL": str(cwd / "go"), **(env or {})})
    return subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _env(extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def wait_for_pause(process):
    for line in process.stdout:
        if line.strip() == "PAUSED":
            return
    raise AssertionError(f"ended before pausing: {process.wait()} {process.stderr.read()}")


def wait_for_checkpoint(workdir, epoch, timeout_s=60):
    """Until the asynchronous save of `epoch` is complete (orbax writes this file last)."""
    done = Path(workdir) / "checkpoints" / str(epoch) / "commit_success.txt"
    deadline = time.monotonic() + timeout_s
    while not done.exists():
        assert time.monotonic() < deadline, f"checkpoint {epoch} never completed"
        time.sleep(0.05)
    time.sleep(0.2)


def snapshot(directory):
    return {
        str(path.relative_to(directory)): path.read_bytes() if path.is_file() else None
        for path in sorted(Path(directory).rglob("*"))
    }


def epochs_in(metrics_path):
    return [json.loads(line)["epoch"] for line in Path(metrics_path).read_text().splitlines()]


def one_line_error(err, *words):
    assert "Traceback" not in err, err
    assert err.count("\n") == 1, err
    for word in words:
        assert word in err, err


# ----------------------------------------------------------------------------- relative paths


def test_relative_paths_train_stop_resume_evaluate_and_plot(tmp_path):
    write_idx_dir(tmp_path / "data")
    train = [*TINY, "--idx-dir", "data", "--epochs", "3", "--workdir", "runs/a"]
    process = start(tmp_path, *train, pause_epoch=2)
    wait_for_pause(process)
    process.send_signal(signal.SIGINT)  # stop after epoch 2: saved, exit 130
    (tmp_path / "go").touch()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "checkpoint runs/a/checkpoints/2 is saved" in err  # the path as typed
    code, out, err = cli(tmp_path, *train)
    assert code == 0, err
    assert "resuming from checkpoint runs/a/checkpoints/2" in out
    assert epochs_in(tmp_path / "runs/a/metrics.jsonl") == [1, 2, 3]
    (tmp_path / "elsewhere").mkdir()  # readers from another directory, with ../
    code, out, err = cli(
        tmp_path / "elsewhere", "--workdir", "../runs/a", module="mlp_jax.evaluate"
    )
    assert code == 0, err
    assert "checkpoint: ../runs/a/checkpoints/3 (epoch 3" in out and "identical" in out
    code, out, err = cli(
        tmp_path / "elsewhere", "--workdir", "../runs/a", "--out", "figs", module="mlp_jax.plot"
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "elsewhere/figs").iterdir()) == [
        "confusion.png",
        "curves.png",
    ]


def test_workdir_dot_and_dot_slash_work(tmp_path):
    write_idx_dir(tmp_path / "data")
    (tmp_path / "run").mkdir()
    code, out, err = cli(
        tmp_path / "run", *TINY, "--idx-dir", "../data", "--epochs", "1", "--workdir", "."
    )
    assert code == 0, err
    assert (tmp_path / "run/checkpoints/1").is_dir()
    code, _, err = cli(tmp_path, "--workdir", "./run", module="mlp_jax.evaluate")
    assert code == 0, err


def test_restore_checkpoint_takes_a_relative_path(tmp_path, monkeypatch):
    write_idx_dir(tmp_path / "data")
    code, _, err = cli(tmp_path, *TINY, "--idx-dir", "data", "--epochs", "1", "--workdir", "a")
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    checkpoint = restore_checkpoint("a")
    assert checkpoint.epoch == 1 and checkpoint.path == os.path.join("a", "checkpoints", "1")
    assert checkpoint.config.idx_dir == str(tmp_path / "data")  # saved absolute


def test_workdir_resolves_once_and_shows_what_was_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    workdir = Workdir.of("runs/a")
    monkeypatch.chdir("/")
    assert workdir.path == str(tmp_path / "runs/a") and workdir.show("x") == "runs/a/x"


# ----------------------------------------------------------------------------- the lock


def test_a_second_run_on_a_busy_workdir_is_refused_and_changes_nothing(tmp_path):
    write_idx_dir(tmp_path / "data")
    train = [*TINY, "--idx-dir", "data", "--epochs", "3", "--workdir", "w"]
    first = start(tmp_path, *train, pause_epoch=2)
    wait_for_pause(first)
    wait_for_checkpoint(tmp_path / "w", 1)  # the paused run writes nothing more meanwhile
    before = snapshot(tmp_path / "w")
    began = time.monotonic()
    code, _, err = cli(tmp_path, *train)
    assert code == 2 and time.monotonic() - began < 30
    one_line_error(err, "w is in use by pid", str(first.pid))
    assert snapshot(tmp_path / "w") == before
    (tmp_path / "go").touch()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert epochs_in(tmp_path / "w/metrics.jsonl") == [1, 2, 3]  # one line per epoch
    assert (tmp_path / "w/.lock").read_text() == ""  # ended cleanly: nothing to take over


def test_a_lock_left_by_a_killed_run_is_taken_over_and_the_run_resumes(tmp_path):
    write_idx_dir(tmp_path / "data")
    train = [*TINY, "--idx-dir", "data", "--epochs", "3", "--workdir", "w"]
    first = start(tmp_path, *train, pause_epoch=2)
    wait_for_pause(first)
    first.kill()
    first.communicate(timeout=60)
    assert str(first.pid) in (tmp_path / "w/.lock").read_text()
    code, out, err = cli(tmp_path, *train)
    assert code == 0, err
    assert f"took over the lock of w from pid {first.pid}" in out
    assert epochs_in(tmp_path / "w/metrics.jsonl") == [1, 2, 3]


def test_lock_refuses_a_second_holder_in_process(tmp_path):
    workdir = Workdir.of(tmp_path)
    lines = []
    with workdir.lock(lines.append):
        with pytest.raises(WorkdirBusy, match=f"in use by pid {os.getpid()}"):
            with Workdir.of(tmp_path).lock(lines.append):
                pass
    with workdir.lock(lines.append):  # released: taken again, silently
        pass
    assert lines == []


def test_evaluate_and_plot_read_a_workdir_while_it_trains(tmp_path):
    write_idx_dir(tmp_path / "data")
    train = [*TINY, "--idx-dir", "data", "--epochs", "3", "--workdir", "w"]
    first = start(tmp_path, *train, pause_epoch=2)
    wait_for_pause(first)
    wait_for_checkpoint(tmp_path / "w", 1)
    code, out, err = cli(tmp_path, "--workdir", "w", module="mlp_jax.evaluate")
    assert code == 0 and "(epoch 1," in out, err
    code, _, err = cli(tmp_path, "--workdir", "w", module="mlp_jax.plot")
    assert code == 0, err
    (tmp_path / "go").touch()
    first.communicate(timeout=120)
    assert first.returncode == 0


# ----------------------------------------------------------------------------- bad run files

BAD_METRICS_LINES = [
    ("{not json\n", "not JSON"),
    ("[1, 2]\n", "holds a list"),
    ('{"epoch": "two", "train_loss": 1, "train_accuracy": 0.5}\n', '"epoch" must be'),
    ('{"epoch": 2, "train_accuracy": 0.5}\n', '"train_loss" must be a number'),
]


@pytest.mark.parametrize("line, problem", BAD_METRICS_LINES, ids=[p for _, p in BAD_METRICS_LINES])
def test_a_bad_metrics_line_is_named_by_file_and_line(tmp_path, line, problem):
    good = json.dumps({"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}) + "\n"
    (tmp_path / "metrics.jsonl").write_text(good + line + good)
    with pytest.raises(RunFileError, match=f"metrics.jsonl line 2: {problem}"):
        Workdir.of(tmp_path).read_metrics()


def test_a_torn_last_metrics_line_is_not_an_error(tmp_path):
    good = json.dumps({"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}) + "\n"
    (tmp_path / "metrics.jsonl").write_text(good + '{"epoch": 2, "tr')
    assert Workdir.of(tmp_path).read_metrics() == ([json.loads(good)], 1)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    write_idx_dir(root / "data")
    code, _, err = cli(root, *TINY, "--idx-dir", "data", "--epochs", "2", "--workdir", "w")
    assert code == 0, err
    return root


DAMAGED = [  # (file, command): every reader of each file
    ("metrics.jsonl", "mlp_jax.train"),
    ("metrics.jsonl", "mlp_jax.evaluate"),
    ("metrics.jsonl", "mlp_jax.plot"),
    ("config.json", "mlp_jax.train"),  # read when no checkpoint holds the config
    ("config.json", "mlp_jax.plot"),
]


@pytest.mark.parametrize("damaged, module", DAMAGED, ids=[" ".join(case) for case in DAMAGED])
def test_resume_evaluate_and_plot_name_the_bad_file_and_line(
    finished_run, tmp_path, damaged, module
):
    import shutil

    shutil.copytree(finished_run / "w", tmp_path / "w")
    shutil.copytree(finished_run / "data", tmp_path / "data")
    path = tmp_path / "w" / damaged
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = "oops, edited by hand\n"
    path.write_text("".join(lines))
    argv = ["--workdir", "w"]
    if module == "mlp_jax.train":
        argv = [*TINY, "--idx-dir", "data", "--epochs", "3", *argv]
        if damaged == "config.json":
            shutil.rmtree(tmp_path / "w/checkpoints")
    before = snapshot(tmp_path / "w")
    code, out, err = cli(tmp_path, *argv, module=module)
    assert code == 2 and "test loss" not in out  # refused before any result
    one_line_error(err, f"w/{damaged} line 2", "fix or delete that line")
    if module == "mlp_jax.train":
        del before[".lock"]
        after = snapshot(tmp_path / "w")
        del after[".lock"]
        assert after == before


# ----------------------------------------------------------------------------- refusing disks


def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path):
    (tmp_path / "config.json").mkdir()  # os.replace onto a directory fails
    with pytest.raises(WorkdirError, match="cannot write shown/config.json"):
        write_atomically(str(tmp_path / "config.json"), "{}", "shown/config.json")
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_full_disk_before_the_first_checkpoint_is_one_line_and_leaves_no_temp(tmp_path):
    """RLIMIT_FSIZE makes every write past 200 bytes fail, as a full disk would (root ignores
    read-only permissions, so this is how the test refuses writes)."""
    write_idx_dir(tmp_path / "data")
    limit = (
        "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200)); sys.argv[0] = 'x'; "
        "runpy.run_module('mlp_jax.train', run_name='__main__')"
    )
    argv = [*TINY, "--idx-dir", "data", "--epochs", "1", "--workdir", "w"]
    result = subprocess.run(
        [sys.executable, "-c", limit, *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env({"JAX_ENABLE_COMPILATION_CACHE": "false"}),
        timeout=300,
    )
    assert result.returncode == 1
    one_line_error(result.stderr, "cannot write w/config.json", "File too large")
    assert not [p for p in (tmp_path / "w").iterdir() if "tmp" in p.name]


@pytest.mark.parametrize("name", ["checkpoints", "metrics.jsonl"])
def test_a_run_file_of_the_wrong_kind_is_refused(tmp_path, name, capsys):
    from mlp_jax.train import main

    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / name).mkdir() if name != "checkpoints" else (workdir / name).write_text("x")
    code = main(["--dataset", "mnist_subset", *TINY, "--epochs", "1", "--workdir", str(workdir)])
    assert code == 2
    one_line_error(capsys.readouterr().err, f"{name} is a", "move it away")


def test_fresh_moves_a_locked_run_aside_and_locks_the_new_one(tmp_path):
    from mlp_jax.workdir import open_workdir

    (tmp_path / "w").mkdir()
    (tmp_path / "w/metrics.jsonl").write_text("")
    config = Config(dataset="mnist_subset", workdir=str(tmp_path / "w"), fresh=True)
    lines = []
    with open_workdir(config, lines.append) as workdir:
        assert not workdir.holds_run()
        with pytest.raises(WorkdirBusy):
            with Workdir.of(tmp_path / "w").lock(lines.append):
                pass
    assert lines[0].startswith("--fresh: moved the previous run")


def test_data_and_manual_dirs_reach_tfds_as_absolute_paths(tmp_path, monkeypatch):
    from mlp_jax import data

    seen = {}

    def load_tfds(name, data_dir, manual_dir):  # records what TFDS would get, then stops
        seen.update(d=data_dir, m=manual_dir)
        raise LookupError("stub")

    monkeypatch.setattr(data, "load_tfds", load_tfds)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LookupError, match="stub"):
        data.load_dataset(Config(dataset="mnist", data_dir="tfds", manual_dir="raw"))
    assert seen == {"d": str(tmp_path / "tfds"), "m": str(tmp_path / "raw")}
