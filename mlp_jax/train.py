"""`python -m mlp_jax.train`: parse the flags (one per Config field), call the loop, and turn
its errors into one-line messages and exit codes.

Imports no JAX until the flags are parsed, so `--help` and flag errors answer at once.
Until the first epoch starts, SIGINT/SIGTERM exit at once (130/143) with one line: nothing is
being trained yet, and leaving from a Python handler never interrupts JAX mid-initialisation.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from mlp_jax.config import PRESETS, Config, ConfigError, preset_flags

PROG = "mlp_jax.train"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2, without the usage dump (every CLI uses it)."""

    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _list_of(kind: type) -> Callable[[str], tuple]:
    """argparse type for comma-separated values, e.g. --hidden 1000,1500."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__}s, got {text!r}"
            ) from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    """One flag per Config field, with the field's default and help."""
    parser = OneLineParser(
        prog=PROG,
        description="Train and evaluate an MLP on MNIST-like data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        kwargs: dict[str, Any] = {"default": field.default, "help": field.metadata["help"]}
        if field.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif field.type.startswith("tuple"):
            kwargs["type"] = _list_of(float if "float" in field.type else int)
        else:
            kwargs["type"] = {"int": int, "float": float}.get(field.type.split(" ")[0], str)
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        parser.add_argument(flag, **kwargs)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="start from a named recipe; other flags override it. "
        + "; ".join(f"{name}: {preset_flags(name)}" for name in PRESETS),
    )
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> Config:
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    if preset is not None:
        parser.set_defaults(**PRESETS[preset])
    args = vars(parser.parse_args(argv))
    del args["preset"]
    return Config(**args)


def _quiet_failed_save_noise() -> None:
    """A failed save is reported in one line (CheckpointError); silence orbax's echoes of it.

    orbax logs a traceback through absl; the other writes of the same save fail too, and asyncio
    logs each as "Task exception was never retrieved" when its task is collected (or, once
    orbax has closed its event loop, TensorStore reports it as an unraisable error).
    """
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not (
            isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"
        ):
            previous(unraisable)

    sys.unraisablehook = hook


def _exit_during_start_up(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM outside the epochs (start-up, the final evaluation): one line, then leave
    without unwinding through JAX (which can crash natively when interrupted mid-import)."""
    from mlp_jax.workdir import clear_held_locks  # already imported once a lock is held

    name = signal.Signals(signum).name
    with contextlib.suppress(Exception):  # keep the start-up lines already printed
        sys.stdout.flush()
    line = f"{PROG}: {name}: exiting now (no epoch was running; saved checkpoints are intact)"
    os.write(2, (line + "\n").encode())
    clear_held_locks()
    os._exit(128 + signum)


def _handle_start_up_signals() -> dict[int, Any]:
    """Install `_exit_during_start_up`; return the handlers to restore. The loop replaces it
    with its own (stop after the epoch) once training starts. A signal the caller ignores
    (SIG_IGN, e.g. a background job's SIGINT) stays ignored."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _exit_during_start_up)
    return previous


def main(argv: Sequence[str] | None = None) -> int:
    previous = _handle_start_up_signals()
    try:
        return _main(argv)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _what(config: Config) -> str:
    """What the run will do, in a few words: the first line the user sees."""
    data = f"--idx-dir {config.idx_dir}" if config.idx_dir else config.dataset
    models = f", {config.num_models} models" if config.num_models > 1 else ""
    return (
        f"{config.layers}-layer MLP on {data}, {config.epochs} epochs of batch "
        f"{config.batch_size}{models}"
    )


def _main(argv: Sequence[str] | None) -> int:
    try:
        config = config_from_args(argv)
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    if config.process_id in (None, 0):  # an answer within a second, before JAX takes its time
        from mlp_jax.writers import print_line  # numpy and tqdm only

        print_line(f"{PROG}: {_what(config)}; starting JAX")
    try:  # JAX and flax load here, after the flags are known to be good (orbax with --workdir)
        from mlp_jax.loop import (
            DivergedError,
            StoppedByOutput,
            StoppedBySignal,
            train_and_evaluate,
            train_and_evaluate_many,
        )
        from mlp_jax.workdir import CheckpointError, WorkdirError
        from mlp_jax.writers import stdout_error
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    _quiet_failed_save_noise()
    try:
        if config.num_models > 1:
            train_and_evaluate_many(config)
        else:
            train_and_evaluate(config)
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except (DivergedError, CheckpointError, WorkdirError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except StoppedBySignal as stopped:
        print(f"{PROG}: {stopped}", file=sys.stderr)
        return 128 + stopped.signum
    except StoppedByOutput as stopped:
        print(f"{PROG}: {stopped}", file=sys.stderr)
        return 128 + signal.SIGPIPE if isinstance(stopped.error, BrokenPipeError) else 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    if stdout_error() is not None:
        reason = stdout_error().strerror or stdout_error()
        print(f"{PROG}: stdout cannot be written ({reason}); the run finished", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
