"""SIGINT/SIGTERM, the same in every command: outside the epochs (start-up, evaluation, the
final report) they exit at once with one line; during the epochs the first one stops the loop
after the current epoch (saving with --workdir) and the second exits at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import types
from collections.abc import Callable
from typing import Any


def _exit_now(prog: str, signum: int, message: str) -> None:
    """`prog: message` on fd 2 (safe in a signal handler, unlike print), then exit at once."""
    os.write(2, f"{prog}: {message}\n".encode())
    os._exit(128 + signum)


@contextlib.contextmanager
def _handling(handler: Callable[[int, Any], None], keep_ignored: bool = False):
    """`handler` for SIGINT and SIGTERM within the block, then the previous ones again. Only
    the main thread may set handlers; `keep_ignored` leaves a SIG_IGN signal ignored."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if not (keep_ignored and signal.getsignal(signum) is signal.SIG_IGN):
                previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


def exit_at_once(prog: str) -> contextlib.AbstractContextManager:
    """Within the block, SIGINT/SIGTERM print one line and leave without unwinding through JAX
    (which can crash natively when interrupted mid-import). A signal the caller ignores
    (SIG_IGN, e.g. a background job's SIGINT) stays ignored."""

    def leave(signum: int, frame: Any) -> None:
        from mlp_jax.workdir import clear_held_locks  # already imported once a lock is held

        with contextlib.suppress(Exception):  # keep the lines already printed
            sys.stdout.flush()
        clear_held_locks()
        intact = "no epoch was running; saved checkpoints are intact"
        _exit_now(prog, signum, f"{signal.Signals(signum).name}: exiting now ({intact})")

    return _handling(leave, keep_ignored=True)


@contextlib.contextmanager
def exit_on_signal_while_blocked(prog: str, what: str):
    """While the main thread waits inside native code, where Python runs no signal handler
    (e.g. joining the other processes), a helper thread exits with one line on SIGINT/SIGTERM.

    Python's C-level handler writes each signal's number to the wakeup fd, whichever thread
    the signal lands on; the helper reads it there. Needs the handlers of `exit_at_once`.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def wait() -> None:
        while received := os.read(read_end, 64):  # b"" (end of file) when the block is over
            for signum in received:
                if signum in (signal.SIGINT, signal.SIGTERM):
                    name = signal.Signals(signum).name
                    _exit_now(prog, signum, f"{name}: exiting now (while {what})")

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
    request = types.SimpleNamespace(signum=None)

    def handle(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if request.signum is not None:
            _exit_now(prog, signum, f"{name} again: exiting now, without saving")
        # SIGTERM asks a process to end; with nothing to save there is no reason to wait. A first
        # Ctrl-C still ends the epoch (a notebook's interrupt must not kill the kernel).
        if signum == signal.SIGTERM and not saves:
            _exit_now(prog, signum, f"{name}: exiting now (no --workdir: nothing to save)")
        request.signum = signum
        os.write(
            2,
            f"{prog}: {name}: finishing this epoch, then saving and stopping "
            f"({name} again exits at once)\n".encode(),
        )

    with _handling(handle):
        yield request
