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
from typing import Any


@contextlib.contextmanager
def exit_at_once(prog: str):
    """Within the block, SIGINT/SIGTERM print one line and leave without unwinding through JAX
    (which can crash natively when interrupted mid-import). A signal the caller ignores
    (SIG_IGN, e.g. a background job's SIGINT) stays ignored."""
    previous: dict[int, Any] = {}

    def leave(signum: int, frame: Any) -> None:
        from mlp_jax.workdir import clear_held_locks  # already imported once a lock is held

        name = signal.Signals(signum).name
        with contextlib.suppress(Exception):  # keep the lines already printed
            sys.stdout.flush()
        line = f"{prog}: {name}: exiting now (no epoch was running; saved checkpoints are intact)"
        os.write(2, (line + "\n").encode())
        clear_held_locks()
        os._exit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, leave)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


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
                    os.write(2, f"{prog}: {name}: exiting now (while {what})\n".encode())
                    os._exit(128 + signum)

    helper = threading.Thread(target=wait, name="mlp_jax-signals", daemon=True)
    helper.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write_end)
        helper.join()
        os.close(read_end)


class StopRequest:
    """The first SIGINT/SIGTERM asks the loop to stop after the current epoch; the second exits.

    Handlers go in only in the main thread (Python allows no other), and the previous ones are
    restored on exit. They only write to fd 2 and set a flag: safe whatever the loop is doing.
    """

    def __init__(self, prog: str, saves: bool = True):
        self.prog, self.saves = prog, saves  # whether stopping after the epoch saves anything
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _exit(self, signum: int, message: str) -> None:
        os.write(2, f"{self.prog}: {message}\n".encode())
        os._exit(128 + signum)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            self._exit(signum, f"{name} again: exiting now, without saving")
        # SIGTERM asks a process to end; with nothing to save there is no reason to wait. A first
        # Ctrl-C still ends the epoch (a notebook's interrupt must not kill the kernel).
        if signum == signal.SIGTERM and not self.saves:
            self._exit(signum, f"{name}: exiting now (no --workdir: nothing to save)")
        self.signum = signum
        os.write(
            2,
            f"{self.prog}: {name}: finishing this epoch, then saving and stopping "
            f"({name} again exits at once)\n".encode(),
        )
