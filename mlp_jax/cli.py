"""What the five commands (train, evaluate, predict, export, plot) share: a parser whose errors
are one line, every error turned into one line and an exit code, the same signal handling, and
the flags that pick a checkpoint of a run (--workdir, --model, --best).

Imports no JAX: `--help` and flag errors answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlp_jax.config import Config, ConfigError
from mlp_jax.signals import exit_at_once
from mlp_jax.writers import adopt_closed_stdout, print_line, stdout_error

# JAX settings the package refuses in one line rather than computing something else.
UNSUPPORTED_JAX_FLAGS = {
    "JAX_ENABLE_X64": "training, checkpoints and exports are float32 and int32; unset it",
    "JAX_DISABLE_JIT": "the epoch is one compiled program, which would take hours; unset it",
}
# A library ConfigError names the argument it is about; a command names the flag that set it:
# these, or a Config field's own flag (batch_size: --batch-size).
ARGUMENT_FLAGS = {"directory": "--idx-dir", "fraction": "--validation-split", "model": "--model"}
CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(Config))


def flag_for(argument: str) -> str:
    """The flag (or other name) a command's user knows `argument` of a ConfigError by."""
    if argument in CONFIG_FIELDS:
        return "--" + argument.replace("_", "-")
    return ARGUMENT_FLAGS.get(argument, argument)


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on", "t", "y")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2, without the usage dump."""

    def __init__(self, prog: str, description: str):
        super().__init__(
            prog=prog,
            description=description,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(prog: str, run: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """`run(argv)` with one line and an exit code for every error a user can cause."""
    from mlp_jax.errors import exit_code

    with exit_at_once(prog):
        _quiet_failed_save_noise()
        adopt_closed_stdout()
        try:
            for name, why in UNSUPPORTED_JAX_FLAGS.items():
                if _truthy(os.environ.get(name)):
                    raise ConfigError(name, f"is set, and mlp_jax does not support it ({why})")
            code = run(argv)
        except SystemExit as stop:  # argparse: --help, or a usage error it printed in one line
            return stop.code if isinstance(stop.code, int) else 1
        except (Exception, KeyboardInterrupt) as error:
            code = exit_code(error)
            if code is None:
                raise  # a bug: its traceback is what we need to see
            if isinstance(error, ConfigError):
                error = f"{flag_for(error.argument)}: {error.message}"
            kind = "error: " if code in (1, 2) else ""
            print(f"{prog}: {kind}{error or 'interrupted'}", file=sys.stderr)
            return code
    failure = stdout_error()
    if failure is not None and code == 0:  # e.g. `| head` quit early: the work is done
        if not isinstance(failure, BrokenPipeError):
            reason = failure.strerror or failure
            print(
                f"{prog}: stdout cannot be written ({reason}); the command finished",
                file=sys.stderr,
            )
        return 1
    return code


def add_checkpoint_flags(
    parser: argparse.ArgumentParser, *, epoch: bool = False, data: bool = False
) -> None:
    """--workdir, --model, --best (and --epoch): which checkpoint of which model to use; with
    `data`, --data-dir and --idx-dir: where the run's dataset lives now, if it moved."""
    if data:
        for flag in ("--data-dir", "--idx-dir"):
            parser.add_argument(
                flag, type=path_text, help=f"the run's {flag}, if it moved (default: as trained)"
            )
    parser.add_argument(
        "--workdir", required=True, type=path_text, help="the --workdir of a training run"
    )
    parser.add_argument(
        "--model",
        type=int,
        metavar="K",
        help="model K of a --seeds/--lr-sweep run (default: the one validation picked, else 0)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--best",
        action="store_true",
        help="the checkpoint of the epoch that validation selected (best --monitor value)",
    )
    if epoch:
        which.add_argument(
            "--epoch", type=int, help="this epoch's checkpoint (default: the newest)"
        )


def writable_folder(path: str | os.PathLike, flag: str) -> Path:
    """`path` as a folder that exists (made now if need be) and can be written; else ConfigError
    naming `flag`."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = f"cannot create {folder} ({error.strerror}); give a writable folder"
        raise ConfigError(flag, reason) from None
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(flag, f"{folder} is not a writable folder")
    return folder


def path_text(text: str) -> str:
    """argparse type: a path that is not empty (an unset variable) and is valid UTF-8."""
    if not text:
        raise argparse.ArgumentTypeError("is empty (an unset shell variable?); give a path")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("is not valid UTF-8; rename it") from None
    return text


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (ASCII digits)."""
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def restore(args: argparse.Namespace, prog: str) -> Any:
    """The checkpoint `args` name (see add_checkpoint_flags), one model of it; says which."""
    from mlp_jax import resume
    from mlp_jax.results import picked_model

    epoch = getattr(args, "epoch", None)
    checkpoint = resume.restore_checkpoint(args.workdir, epoch, best=args.best, model=args.model)
    for message in checkpoint.skipped:
        print(f"{prog}: {message}: skipped it", file=sys.stderr)
    if checkpoint.config.num_models > 1 and checkpoint.model is None:
        checkpoint = resume.one_model(checkpoint, resume.default_model(checkpoint.info))
    if checkpoint.model is not None:
        picked = picked_model(resume.saved_selections(checkpoint.info) or [])
        why = (
            "--model"
            if args.model is not None
            else "picked by validation (the best monitored value)"
            if picked is not None
            else "the run monitored nothing, so model 0; choose with --model K"
        )
        print_line(f"{resume.describe_model(checkpoint)}: {why}")
    return checkpoint


def _quiet_failed_save_noise() -> None:
    """A failed save is reported in one line (CheckpointError); silence orbax's echoes of it.

    orbax logs a traceback through absl; the other writes of the same save fail too, and asyncio
    logs each as "Task exception was never retrieved" when its task is collected (or, once
    orbax has closed its event loop, TensorStore reports it as an unraisable error).
    """
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    # The compilation cache is optional: a full or read-only cache folder costs recompiling.
    warnings.filterwarnings("ignore", "Error (writing|reading) persistent compilation cache entry")
    # A full disk also fails writer threads (TensorBoard's): the run says it in its one line.
    previous_thread_hook = threading.excepthook

    def thread_hook(failure: Any) -> None:
        if not isinstance(failure.exc_value, OSError):
            previous_thread_hook(failure)

    threading.excepthook = thread_hook
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not (
            isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"
        ):
            previous(unraisable)

    sys.unraisablehook = hook
