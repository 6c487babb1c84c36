"""Checkpoints and resume: exact after clean stops and kills, safe with bad checkpoints and configs.

The runs are tiny (mnist_subset, 784-32-10, 4 epochs). Subprocess runs go through a wrapper that
can pause a run at a chosen epoch or inside orbax's save (before the checkpoint is renamed into
place), so that kills land exactly there; the wrapper patches nothing else.
"""

import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import chex
import jax
import pytest

from mlp_jax import Config, ConfigError, restore_checkpoint, restore_params
from mlp_jax.data import load_mnist_subset
from mlp_jax.loop import StoppedBySignal, train_and_evaluate
from mlp_jax.model import summary
from mlp_jax.optim import make_schedule
from mlp_jax.resume import model_from_info
from mlp_jax.train import main
from mlp_jax.workdir import Workdir, open_workdir, read_metrics

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--dataset", "mnist_subset", "--layers", "2", "--hidden", "32", "--dropout", "0.1"]
EPOCHS = 4

# Runs mlp_jax.train with PAUSE_AT=epoch:N (the N-th epoch this process trains waits PAUSE_S
# seconds before its result is read) or PAUSE_AT=save:N (orbax waits before renaming checkpoint N
# into place, i.e. mid-save). It prints PAUSED when the pause starts.
WRAPPER = r"""
import asyncio, os, resource, signal, sys, time
if "FSIZE_LIMIT" in os.environ:  # the disk "fills up" past this many bytes per file
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get the error, not the signal
    limit = int(os.environ["FSIZE_LIMIT"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
kind, _, number = os.environ.get("PAUSE_AT", "none:0").partition(":")
pause_s = float(os.environ.get("PAUSE_S", "600"))
if kind == "save":
    from orbax.checkpoint._src.path import atomicity
    original_finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def finalize(self, *args, **kwargs):
        if self.get_final().name == number:
            print("PAUSED", flush=True)
            await asyncio.sleep(pause_s)
        return await original_finalize(self, *args, **kwargs)
    atomicity.AtomicRenameTemporaryPath.finalize = finalize
import mlp_jax.loop as loop
import mlp_jax.train as train
if kind == "epoch":
    original_fetch, trained = loop._fetch, []
    def fetch(tree):
        if isinstance(tree, dict) and "train_loss" in tree:
            trained.append(1)
            if len(trained) == int(number):
                print("PAUSED", flush=True)
                deadline = time.monotonic() + pause_s
                while time.monotonic() < deadline:  # short sleeps: signal handlers run meanwhile
                    time.sleep(0.01)
        return original_fetch(tree)
    loop._fetch = fetch
sys.exit(train.main(sys.argv[1:]))
"""


# Subprocesses share a persistent compilation cache: after the first run, each restart loads the
# same compiled epoch from disk instead of spending seconds compiling it again.
COMPILATION_CACHE = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


NO_CACHE = {"JAX_ENABLE_COMPILATION_CACHE": "false"}  # its writes would hit the file-size limit


def start_run(workdir, *extra, pause_at="none:0", pause_s=600, env=None):
    env = {
        **os.environ,
        **COMPILATION_CACHE,
        "PAUSE_AT": pause_at,
        "PAUSE_S": str(pause_s),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    argv = [*FLAGS, "--epochs", str(EPOCHS), "--workdir", str(workdir), *extra]
    return subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(workdir, *extra, **kwargs):
    process = start_run(workdir, *extra, **kwargs)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def wait_for_pause(process):
    for line in process.stdout:
        if line.strip() == "PAUSED":
            return
    raise AssertionError(f"the run ended before pausing: {process.wait()} {process.stderr.read()}")


def wait_until(condition, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def kill(process):
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


def without_timings(records):
    return [
        {k: v for k, v in r.items() if k not in ("epoch_seconds", "examples_per_second")}
        for r in records
    ]


def snapshot(directory):
    """Every path under `directory` with its bytes (None for directories) and mode."""
    return {
        str(path.relative_to(directory)): (
            path.stat().st_mode,
            path.read_bytes() if path.is_file() else None,
        )
        for path in sorted(Path(directory).rglob("*"))
    }


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    COMPILATION_CACHE["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax-cache"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted CLI run: its workdir, stdout, final params and metrics records."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    code, out, err = run(workdir)
    assert code == 0, err
    return {
        "workdir": workdir,
        "out": out,
        "params": restore_params(str(workdir)),
        "records": without_timings(read_metrics(str(workdir))[0]),
    }


@pytest.fixture
def copy_of_reference(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference["workdir"], workdir)
    return workdir


def assert_same_run(workdir, reference):
    records, unreadable = read_metrics(str(workdir))
    assert unreadable == 0
    assert without_timings(records) == reference["records"]  # one line per epoch, same values
    chex.assert_trees_all_equal(restore_params(str(workdir)), reference["params"])


def test_resume_after_clean_stop_matches_uninterrupted_run(reference, tmp_path):
    dataset = load_mnist_subset()
    config = Config(dataset="mnist_subset", layers=2, hidden=(32,), dropout=0.1, epochs=EPOCHS)

    def stop_after_epoch_2(line):  # a Ctrl-C that arrives during epoch 2
        if line.startswith("epoch 2/"):
            os.kill(os.getpid(), signal.SIGINT)

    stopped = config.replace(workdir=str(tmp_path / "run"))
    # What the caller had: Python's KeyboardInterrupt handler, or SIG_IGN under `nohup ... &`.
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(StoppedBySignal, match="after epoch 2/4.*checkpoints/2"):
        train_and_evaluate(stopped, dataset, log=stop_after_epoch_2)
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers  # restored
    lines = []
    resumed = train_and_evaluate(stopped, dataset, log=lines.append)
    assert sum(line.startswith("resuming from checkpoint") for line in lines) == 1
    assert without_timings(resumed.history) == reference["records"]
    chex.assert_trees_all_equal(resumed.state.params, reference["params"])
    assert_same_run(stopped.workdir, reference)


def test_sigkill_mid_epoch_and_mid_save_then_restart_matches_uninterrupted_run(reference, tmp_path):
    workdir = tmp_path / "run"
    checkpoints = workdir / "checkpoints"
    # Killed while epoch 2 is running, once checkpoint 1 is complete.
    process = start_run(workdir, pause_at="epoch:2")
    wait_for_pause(process)
    wait_until(lambda: (checkpoints / "1").is_dir())
    kill(process)
    assert [r["epoch"] for r in read_metrics(str(workdir))[0]] == [1]
    # Restarted, then killed while checkpoint 3 is being written (epochs 2 and 3 of this run).
    process = start_run(workdir, pause_at="save:3")
    wait_for_pause(process)
    kill(process)
    assert sorted(p.name for p in checkpoints.iterdir() if p.name[0].isdigit())[-1].startswith(
        "3.orbax-checkpoint-tmp"
    )
    # Restarted: resumes from checkpoint 2, the last complete one, and finishes.
    code, out, err = run(workdir)
    assert code == 0, err
    assert f"resuming from checkpoint {checkpoints / '2'} (epoch 2/4" in out
    assert_same_run(workdir, reference)


def test_sigterm_writes_a_checkpoint_that_resumes_exactly(reference, tmp_path):
    workdir = tmp_path / "run"
    process = start_run(workdir, pause_at="epoch:2", pause_s=1)
    wait_for_pause(process)
    process.send_signal(signal.SIGTERM)  # arrives during epoch 2: the run finishes epoch 2
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM after epoch 2/4" in err
    assert f"checkpoint {workdir / 'checkpoints' / '2'} is saved" in err
    assert restore_checkpoint(str(workdir)).epoch == 2
    code, out, err = run(workdir)
    assert code == 0, err
    assert_same_run(workdir, reference)


def test_second_sigint_exits_at_once_and_keeps_the_previous_checkpoint(reference, tmp_path):
    workdir = tmp_path / "run"
    process = start_run(workdir, pause_at="epoch:2")  # epoch 2 would take 600 s more
    wait_for_pause(process)
    wait_until(lambda: (workdir / "checkpoints" / "1").is_dir())
    process.send_signal(signal.SIGINT)
    for line in process.stderr:  # the first one is taken: it will stop after this epoch
        if "SIGINT: finishing this epoch" in line:
            break
    time.sleep(0.5)  # a person's second Ctrl-C (one within 0.25 s is the first seen twice)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)  # not the 600 s the epoch still had to run
    assert process.returncode == 130, err
    assert "SIGINT again: exiting now, without saving" in err
    assert restore_checkpoint(str(workdir)).epoch == 1
    code, out, err = run(workdir)
    assert code == 0, err
    assert_same_run(workdir, reference)


def test_sigint_delivered_twice_at_once_stops_after_the_epoch_and_saves(reference, tmp_path):
    # `timeout -s INT` signals the command and then its process group: the same SIGINT twice.
    workdir = tmp_path / "run"
    process = start_run(workdir, pause_at="epoch:2", pause_s=2)
    wait_for_pause(process)
    process.send_signal(signal.SIGINT)
    for line in process.stderr:
        if "SIGINT: finishing this epoch" in line:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "again" not in err and "stopped by SIGINT after epoch 2/4" in err
    assert restore_checkpoint(str(workdir)).epoch == 2


def test_partial_checkpoint_is_ignored(copy_of_reference):
    checkpoints = copy_of_reference / "checkpoints"
    partial = checkpoints / "5.orbax-checkpoint-tmp-1700000000000000"  # as a kill mid-save leaves
    shutil.copytree(checkpoints / "4", partial)
    (partial / "commit_success.txt").unlink()
    shutil.rmtree(partial / "state")
    lines = []
    config = Config(
        dataset="mnist_subset",
        layers=2,
        hidden=(32,),
        dropout=0.1,
        epochs=5,
        workdir=str(copy_of_reference),
    )
    train_and_evaluate(config, load_mnist_subset(), log=lines.append)
    assert any(line.startswith(f"resuming from checkpoint {checkpoints / '4'}") for line in lines)
    assert sorted(int(p.name) for p in checkpoints.iterdir()) == [3, 4, 5]  # partial one cleaned
    assert [r["epoch"] for r in read_metrics(str(copy_of_reference))[0]] == [1, 2, 3, 4, 5]


def test_corrupted_checkpoint_is_named_moved_aside_and_the_previous_one_used(
    reference, copy_of_reference
):
    checkpoints = copy_of_reference / "checkpoints"
    for path in (checkpoints / "4" / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(bytes(path.stat().st_size))  # same size, all zeros
    lines = []
    config = Config(
        dataset="mnist_subset",
        layers=2,
        hidden=(32,),
        dropout=0.1,
        epochs=EPOCHS,
        workdir=str(copy_of_reference),
    )
    train_and_evaluate(config, load_mnist_subset(), log=lines.append)
    named = [line for line in lines if line.startswith(f"checkpoint {checkpoints / '4'}")]
    assert len(named) == 1 and "moved it to" in named[0], lines
    assert list((copy_of_reference / "unreadable-checkpoints").iterdir())  # kept, not deleted
    assert any(line.startswith(f"resuming from checkpoint {checkpoints / '3'}") for line in lines)
    assert_same_run(copy_of_reference, reference)


def test_config_mismatch_is_refused_and_leaves_the_workdir_unchanged(copy_of_reference, capsys):
    before = snapshot(copy_of_reference)
    argv = [
        "--dataset",
        "mnist_subset",
        "--layers",
        "2",
        "--hidden",
        "64",
        "--optimizer",
        "adam",
        "--epochs",
        "6",
        "--workdir",
        str(copy_of_reference),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mlp_jax.train: error: --workdir"), err
    assert "hidden_sizes 32 -> 64" in err and "optimizer momentum -> adam" in err
    assert "dropout 0.1 -> 0.0" in err and "epochs" not in err  # epochs may differ
    assert snapshot(copy_of_reference) == before


def test_too_few_epochs_to_resume_are_refused_naming_the_argument(copy_of_reference):
    before = snapshot(copy_of_reference)
    config = Config(
        dataset="mnist_subset",
        layers=2,
        hidden=(32,),
        dropout=0.1,
        epochs=EPOCHS - 1,
        workdir=str(copy_of_reference),
    )
    with pytest.raises(ConfigError, match=f"^epochs: must be {EPOCHS} or more"):
        train_and_evaluate(config, load_mnist_subset(), log=lambda line: None)
    assert snapshot(copy_of_reference) == before


def test_failed_save_is_one_clear_error_and_keeps_earlier_checkpoints(copy_of_reference):
    # Running as root, chmod cannot make a directory read-only, so the disk "fills up" with
    # RLIMIT_FSIZE instead: every write past 64 KiB fails (EFBIG) in orbax's real write path.
    # The checkpoint's arrays are ~200 KB; config.json and metrics.jsonl stay far below it.
    code, out, err = run(
        copy_of_reference, "--epochs", "5", env=NO_CACHE | {"FSIZE_LIMIT": "65536"}
    )
    assert code == 1, err
    assert err.count("\n") == 1, err
    assert err.startswith("mlp_jax.train: error: cannot write checkpoint"), err
    assert "File too large (errno 27)" in err and "(epochs 2, 3, 4)" in err
    assert "checkpoints/5:" in err, err
    checkpoint = restore_checkpoint(str(copy_of_reference))  # hash-checked: intact
    assert checkpoint.epoch == 4 and not checkpoint.skipped


def test_evaluate_cli_matches_what_training_printed(reference, capsys):
    # runpy, not import: importing the module would rebind mlp_jax.evaluate (the function).
    argv = ["mlp_jax.evaluate", "--workdir", str(reference["workdir"])]
    with mock.patch.object(sys, "argv", argv), pytest.raises(SystemExit) as exit:
        runpy.run_module("mlp_jax.evaluate", run_name="__main__")
    assert exit.value.code == 0
    out = capsys.readouterr().out
    trained = [line for line in reference["out"].splitlines() if line.startswith("test accuracy")]
    accuracy = trained[0].split()[2]  # "91.80%"
    loss = trained[0].split("loss ")[1].split(")")[0]
    assert f"test loss {loss}  accuracy {accuracy}" in out
    assert "(identical)" in out  # to the bit, against metrics.jsonl
    model = model_from_info(restore_checkpoint(str(reference["workdir"])).info)
    table = summary(model, (28, 28, 1))
    assert table in out  # the layers, their shapes and parameter counts
    assert "confusion matrix" in out
    assert len(out.strip().splitlines()) == 5 + 11 + len(table.splitlines())


def test_extending_epochs_continues_with_the_schedule_of_the_new_config(copy_of_reference):
    config = Config(
        dataset="mnist_subset",
        layers=2,
        hidden=(32,),
        dropout=0.1,
        epochs=6,
        workdir=str(copy_of_reference),
    )
    result = train_and_evaluate(config, load_mnist_subset(), log=lambda line: None)
    records = read_metrics(str(copy_of_reference))[0]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    schedule = make_schedule(config, steps_per_epoch=32)  # 4000 / 128 rounded up
    assert records[4]["lr"] == pytest.approx(float(schedule(4 * 32)))
    assert int(result.state.step) == 6 * 32


def test_torn_and_later_metrics_lines_are_dropped_atomically(copy_of_reference):
    path = copy_of_reference / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines) + lines[-1] + '{"epoch": 5, "train_lo')  # duplicate + torn
    records, dropped = Workdir.of(copy_of_reference).keep_metrics_until(3)
    assert [r["epoch"] for r in records] == [1, 2, 3] and dropped == 3
    assert path.read_text() == "".join(lines[:3])
    assert [p.name for p in copy_of_reference.iterdir() if "tmp" in p.name] == []


def test_fresh_moves_the_old_run_aside(copy_of_reference):
    before = snapshot(copy_of_reference)
    lines = []
    config = Config(dataset="mnist_subset", workdir=str(copy_of_reference), fresh=True)
    with open_workdir(config, lines.append):
        pass
    aside = Path(lines[0].split(" to ")[-1])
    assert aside.name.startswith("run.previous-") and snapshot(aside) == before
    assert [p.name for p in copy_of_reference.iterdir()] == [".lock"]  # the new run's, released


def test_checkpointer_keeps_each_models_selected_epoch_and_the_newest_across_restarts(tmp_path):
    """BestN alone would delete the newest checkpoint (google/orbax#526) and knows one value for
    all models; each model's selected epoch and the newest `keep` must all stay, also after the
    Checkpointer is made anew (a resume)."""
    from mlp_jax.checkpoint import Checkpointer
    from mlp_jax.state import build_model, init_state

    config = Config(dataset="mnist_subset", layers=1, epochs=8, validation_split=0.1, keep=2)
    dataset = load_mnist_subset()
    state = init_state(config, dataset, build_model(config, dataset))
    run_info = {"dataset": {}, "mean": 0.0, "std": 1.0}
    # Two models' best epochs so far, after each epoch.
    selected = {
        1: [1, 1],
        2: [2, 1],
        3: [2, 3],
        4: [2, 3],
        5: [2, 3],
        6: [6, 3],
        7: [6, 3],
        8: [6, 3],
    }
    checkpointer = Checkpointer(str(tmp_path), keep=2, keep_best=True)
    for epoch in range(1, 5):
        checkpointer.save(epoch, state, config, run_info, selected_epochs=selected[epoch])
    checkpointer.close()
    assert checkpointer.epochs() == [2, 3, 4]
    checkpointer = Checkpointer(str(tmp_path), keep=2, keep_best=True)
    for epoch in range(5, 9):
        checkpointer.save(epoch, state, config, run_info, selected_epochs=selected[epoch])
    checkpointer.close()
    assert checkpointer.epochs() == [3, 6, 7, 8]
    newest_only = Checkpointer(str(tmp_path / "plain"), keep=2)
    for epoch in range(1, 5):
        newest_only.save(epoch, state, config, run_info, selected_epochs=selected[epoch])
    newest_only.close()
    assert newest_only.epochs() == [3, 4]


SWEEP = [
    "--seeds",
    "2",
    "--lr-sweep",
    "0.01,0.05",
    "--validation-split",
    "0.1",
    "--schedule",
    "plateau",
    "--plateau-patience",
    "1",
]


def test_sweep_killed_mid_save_resumes_bit_identically(tmp_path):
    """4 models with a validation split, selections and plateau states: SIGKILL while epoch 3's
    checkpoint is being written, rerun the command, end equal to an uninterrupted sweep."""
    code, _, err = run(tmp_path / "reference", *SWEEP)
    assert code == 0, err
    killed = tmp_path / "killed"
    process = start_run(killed, *SWEEP, pause_at="save:3")
    wait_for_pause(process)
    kill(process)
    code, out, err = run(killed, *SWEEP)
    assert code == 0, err
    assert "resuming from checkpoint" in out and "checkpoints/2 (epoch 2/4" in out
    assert "validation picks lr" in out
    reference_records = without_timings(read_metrics(str(tmp_path / "reference"))[0])
    assert without_timings(read_metrics(str(killed))[0]) == reference_records
    assert len(reference_records) == 4 * EPOCHS  # one line per model and epoch
    # every array of the 4 stacked states: params, optimizer (plateau) state, step, rng
    states = [restore_checkpoint(str(d)).state for d in (tmp_path / "reference", killed)]
    chex.assert_trees_all_equal(*(jax.tree.leaves(state) for state in states))
    assert (killed / "selection.json").read_text() == (
        tmp_path / "reference" / "selection.json"
    ).read_text()


@pytest.mark.parametrize(
    "message",
    [
        'Error writing local file "/r/checkpoints/5/d/x": File too large [os_error_code=27]',
        # Seen once under load (which write fails first varies): the code after a JSON spec.
        'FAILED_PRECONDITION: [tensorstore_spec=\'{"kvstore": {"driver": "file"}, '
        "\"recheck\": true}'] [os_error_code=27] [source locations='tensorstore/x.cc:1']",
    ],
)
def test_the_os_reason_of_a_tensorstore_error_names_the_errno(message):
    from mlp_jax.workdir import reason

    assert reason(ValueError(message)) == "File too large (errno 27)"
    assert reason(OSError(28, "No space left on device")) == "No space left on device (errno 28)"


def test_a_checkpoint_that_vanishes_while_read_is_not_called_unreadable(tmp_path):
    """evaluate while a --keep run trains: the newest listed checkpoint may be deleted before it
    is read. The reader lists them again instead of falling back and blaming the checkpoint."""
    from mlp_jax.checkpoint import Checkpointer
    from mlp_jax.resume import abstract_state

    config = Config(dataset="mnist_subset", layers=2, hidden=(16,), epochs=3, workdir=str(tmp_path))
    train_and_evaluate(config, log=lambda line: None)
    reader = Checkpointer(tmp_path, read_only=True)
    read_info = reader.read_info

    def read_info_while_a_run_drops_epoch_3(epoch):
        if epoch == 3 and (tmp_path / "checkpoints" / "3").exists():
            shutil.move(tmp_path / "checkpoints" / "3", tmp_path / "dropped")
        return read_info(epoch)

    reader.read_info = read_info_while_a_run_drops_epoch_3
    checkpoint = reader.restore(abstract_state)
    assert (checkpoint.epoch, checkpoint.skipped) == (2, ())


def test_a_signal_while_the_last_checkpoint_is_written_waits_for_it(tmp_path, monkeypatch):
    """The save is asynchronous: a Ctrl-C during it stops after it, the checkpoint whole."""
    from mlp_jax.checkpoint import Checkpointer

    close = Checkpointer.close

    def close_after_a_ctrl_c(self):
        os.kill(os.getpid(), signal.SIGINT)  # the handler only records it: the save goes on
        close(self)

    monkeypatch.setattr(Checkpointer, "close", close_after_a_ctrl_c)
    config = Config(dataset="mnist_subset", layers=2, hidden=(16,), epochs=2, workdir=str(tmp_path))
    with pytest.raises(StoppedBySignal, match="after epoch 2/2: checkpoint .*/2 is saved"):
        train_and_evaluate(config, log=lambda line: None)
    assert restore_checkpoint(tmp_path).epoch == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1", "2"]


@pytest.mark.parametrize("saves", [True, False])
def test_a_first_sigint_promises_a_save_only_with_a_workdir(capfd, saves):
    from mlp_jax.signals import stop_after_epoch

    with stop_after_epoch("prog", saves=saves) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes
    assert stop.signum == signal.SIGINT
    err = capfd.readouterr().err
    assert ("then saving and stopping" in err) == saves, err
    assert ("then stopping (no --workdir: nothing to save)" in err) != saves, err


def test_a_failed_save_that_surfaces_at_the_next_save_is_named(tmp_path):
    """orbax reports an asynchronous save's failure when the next save starts: the checkpoint
    that failed is the one whose temp folder is left, not the one being started."""
    from mlp_jax.checkpoint import Checkpointer

    checkpointer = Checkpointer(tmp_path)
    for name in ("1", "2", "3.orbax-checkpoint-tmp"):
        (tmp_path / "checkpoints" / name).mkdir()
    error = checkpointer._save_error(4, OSError(28, "No space left on device"))
    assert f"cannot write checkpoint {tmp_path}/checkpoints/3: No space left" in str(error)
    assert "(epochs 1, 2)" in str(error)
    checkpointer.close()
