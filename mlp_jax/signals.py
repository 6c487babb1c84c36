"""SIGINT/SIGTERM, the same in every command: outside the epochs they exit at once with one line;
during the epochs the first stops the loop after the current epoch (saving with --workdir) and
the second exits at once."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_WITHIN_S = 0.25  # the same signal again this soon is one delivery seen twice, not a second


def _exit_now(prog: str, signum: int, message: str) -> None:
    """`prog: SIGNAME{message}` on fd 2 (safe in a signal handler, unlike print); exit at once."""
    os.write(2, f"{prog}: {signal.Signals(signum).name}{message}\n".encode())
    os._exit(128 + signum)


@contextlib.contextmanager
def _handling(handler: Callable[[int, Any], None], keep_ignored: bool = False):
    """`handler` for SIGINT and SIGTERM within the block, then the previous ones again;
    `keep_ignored` leaves a SIG_IGN signal ignored."""
    main = threading.current_thread() is threading.main_thread()  # no other may set handlers
    ignored = {s for s in SIGNALS if keep_ignored and signal.getsignal(s) is signal.SIG_IGN}
    previous = {s: signal.signal(s, handler) for s in SIGNALS if main and s not in ignored}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


def exit_at_once(prog: str) -> contextlib.AbstractContextManager:
    """Within the block, SIGINT/SIGTERM print one line and leave without unwinding through JAX
    (which can crash natively when interrupted mid-import). A SIG_IGN signal (e.g. a background
    job's SIGINT) stays ignored."""

    def leave(signum: int, frame: Any) -> None:
        from mlp_jax.workdir import clear_held_locks  # already imported once a lock is held

        with contextlib.suppress(Exception):  # keep the lines already printed
            sys.stdout.flush()
        clear_held_locks()
        _exit_now(prog, signum, ": exiting now (no epoch was running: checkpoints are intact)")

    return _handling(leave, keep_ignored=True)


@contextlib.contextmanager
def exit_on_signal_while_blocked(prog: str, what: str):
    """While the main thread waits in native code, where Python runs no signal handler (joining
    the other processes), a helper thread exits with one line on SIGINT/SIGTERM: Python's C-level
    handler writes each signal's number to the wakeup fd, whichever thread it lands on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def wait() -> None:
        while received := os.read(read_end, 64):  # b"" (end of file) when the block is over
            for signum in received:
                if signum in SIGNALS:
                    _exit_now(prog, signum, f": exiting now (while {what})")

    helper = threading.Thread(target=wait, name="mlp_jax-signals", daemon=True)
    helper.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write_end)
        helper.join()
        os.close(read_end)


@contextlib.contextmanager
def stop_after_epoch(prog: str, saves: bool = True):
    """Within the epochs: the first SIGINT/SIGTERM sets the yielded request's `signum` (the loop
    stops after the current epoch, saving if `saves`); the second exits at once. The handlers
    only write to fd 2 and set a flag: safe whatever the loop is doing."""
    request = types.SimpleNamespace(signum=None, at=0.0)

    def handle(signum: int, frame: Any) -> None:
        # GNU `timeout -s INT` signals the command, then its process group: one request that
        # arrives twice within milliseconds. A person's second Ctrl-C comes later than this.
        if signum == request.signum and time.monotonic() - request.at < REPEAT_WITHIN_S:
            return
        if request.signum is not None:
            _exit_now(prog, signum, " again: exiting now, without saving")
        # SIGTERM asks a process to end; with nothing to save there is no reason to wait. A first
        # Ctrl-C still ends the epoch (a notebook's interrupt must not kill the kernel).
        if signum == signal.SIGTERM and not saves:
            _exit_now(prog, signum, ": exiting now (no --workdir: nothing to save)")
        request.signum, request.at = signum, time.monotonic()
        name = signal.Signals(signum).name
        then = "saving and stopping" if saves else "stopping (no --workdir: nothing to save)"
        message = f"finishing this epoch, then {then} ({name} again exits at once)"
        os.write(2, f"{prog}: {name}: {message}\n".encode())

    with _handling(handle):
        yield request
