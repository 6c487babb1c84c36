"""Issue kind "signals": SIGTERM without --workdir, a signal while waiting for the other
processes, and Ctrl-C during evaluate: each exits promptly, with one line and 128 + signal."""

import signal
import subprocess
import sys
import time

from tests.faults import TINY, one_line


def _start(cwd, module, *args):
    return subprocess.Popen(
        [sys.executable, "-m", f"mlp_jax.{module}", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(process, words, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if words in line:
            return line
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no line with {words!r}")


def test_sigterm_without_a_workdir_exits_at_once_not_after_the_epoch(tmp_path):
    # 200 epochs of batch 1: one epoch takes seconds; nothing would be saved, so no wait.
    process = _start(tmp_path, "train", *TINY, "--epochs", "200", "--batch-size", "1")
    _wait_for_line(process, "compiled")
    time.sleep(2)  # inside epoch 1, which would take seconds more
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - started < 10
    assert process.returncode == 128 + signal.SIGTERM
    one_line(err, "SIGTERM", "nothing to save")


def test_a_signal_while_waiting_for_the_coordinator_exits_at_once(tmp_path):
    args = ["--coordinator", "localhost:12741", "--num-processes", "2", "--process-id", "1"]
    process = _start(tmp_path, "train", *TINY, "--epochs", "1", *args)
    time.sleep(8)  # past start-up: inside jax.distributed.initialize, which waits for process 0
    assert process.poll() is None
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - started < 5
    assert process.returncode == 128 + signal.SIGINT
    one_line(err, "SIGINT", "waiting for localhost:12741")


def test_ctrl_c_during_evaluate_is_never_swallowed(run_copy):
    for delay in (0.5, 1.5, 2.5, 4.0):  # import, restore, loading data, evaluating
        process = _start(run_copy, "evaluate", "--workdir", "run")
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        if process.returncode == 0:  # it had finished before the signal came
            assert "test loss" in out
            continue
        # 130 from our handler; -2 (killed by SIGINT) once the command is done and exiting.
        assert process.returncode in (128 + signal.SIGINT, -signal.SIGINT), (delay, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
