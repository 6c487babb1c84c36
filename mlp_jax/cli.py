"""What the commands share: one-line parser errors, every error as one line and an exit code,
signal handling, and the flags that pick a run's checkpoint (--workdir, --model, --best).
Imports no JAX: `--help` and flag errors answer at once."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
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
# a Config field's own flag (batch_size: --batch-size), or one of the library arguments below.
FLAGS = {field.name: "--" + field.name.replace("_", "-") for field in dataclasses.fields(Config)}
FLAGS.update(directory="--idx-dir", fraction="--validation-split", model="--model")
Run = Callable[[Sequence[str] | None], int]  # a command's main(argv); None: sys.argv[1:]


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help adds each default, unless it is None or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2, without the usage dump."""

    def __init__(self, prog: str, description: str):
        super().__init__(prog=prog, description=description, formatter_class=_DefaultsFormatter)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def command(prog: str) -> Callable[[Run], Run]:
    """Decorator for a command's `main(argv=None)`: it runs through `run_command`."""

    def decorate(run: Run) -> Run:
        return functools.wraps(run)(lambda argv=None: run_command(prog, run, argv))

    return decorate


def run_command(prog: str, run: Run, argv: Sequence[str] | None) -> int:
    """`run(argv)` with one line and an exit code for every error a user can cause."""
    from mlp_jax.errors import exit_code

    with exit_at_once(prog):
        _quiet_failed_save_noise()
        adopt_closed_stdout()
        try:
            for name, why in UNSUPPORTED_JAX_FLAGS.items():
                if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on", "t", "y"):
                    raise ConfigError(name, f"is set, and mlp_jax does not support it ({why})")
            code = run(argv)
        except SystemExit as stop:  # argparse: --help, or a usage error it printed in one line
            return stop.code if isinstance(stop.code, int) else 1
        except (Exception, KeyboardInterrupt) as error:
            code = exit_code(error)
            if code is None:
                raise  # a bug: its traceback is what we need to see
            if isinstance(error, ConfigError):
                error = f"{FLAGS.get(error.argument, error.argument)}: {error.message}"
            kind = "error: " if code in (1, 2) else ""
            print(f"{prog}: {kind}{error or 'interrupted'}", file=sys.stderr)
            return code
    failure = stdout_error()
    if failure is not None and code == 0:  # e.g. `| head` quit early: the work is done
        if not isinstance(failure, BrokenPipeError):
            reason = f"stdout cannot be written ({failure.strerror or failure})"
            print(f"{prog}: {reason}; the command finished", file=sys.stderr)
        return 1
    return code


def leave(code: int) -> None:
    """A command's exit. After a failed checkpoint save, orbax's threads wait minutes (their
    timeout) for signals that never come, and Python joins them at exit: skip that wait."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if code != 0 and any(not thread.daemon for thread in others):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def checkpoint_parser(prog: str, description: str, *, data: bool = False) -> OneLineParser:
    """A parser with --workdir, --model, --best or --epoch: which checkpoint of which model to
    use; with `data`, --data-dir and --idx-dir: where the run's dataset lives now, if it moved."""
    parser = OneLineParser(prog, description)
    for flag in ("--data-dir", "--idx-dir") if data else ():
        parser.add_argument(flag, type=path_text, help=f"the run's {flag}, if it moved")
    parser.add_argument("--workdir", required=True, type=path_text, help="a training run's folder")
    which = "model K of a --seeds/--lr-sweep run (default: the one validation picked, else 0)"
    parser.add_argument("--model", type=int, metavar="K", help=which)
    group = parser.add_mutually_exclusive_group()
    which = "the checkpoint of the epoch that validation selected (best --monitor value)"
    group.add_argument("--best", action="store_true", help=which)
    group.add_argument("--epoch", type=int, help="this epoch's checkpoint (default: newest)")
    return parser


def writable_folder(path: str | os.PathLike, flag: str) -> Path:
    """`path` as a writable folder (made now if need be); else ConfigError naming `flag`."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        message = f"cannot create {folder} ({error.strerror}); give a writable folder"
        raise ConfigError(flag, message) from None
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
    """The checkpoint `args` name (see checkpoint_parser), one model of it; says which."""
    from mlp_jax.results import picked_model
    from mlp_jax.resume import describe_model, newest_selections, one_model, restore_checkpoint

    checkpoint = restore_checkpoint(args.workdir, args.epoch, best=args.best, model=args.model)
    for message in checkpoint.skipped:
        print(f"{prog}: {message}: skipped it", file=sys.stderr)
    selections = newest_selections(args.workdir, checkpoint) or []  # the run's, not --epoch's
    if checkpoint.config.num_models > 1 and checkpoint.model is None:  # as of then
        checkpoint = one_model(checkpoint, picked_model(selections) or 0)
    if checkpoint.model is not None:
        why = "the run monitored nothing, so model 0; choose with --model K"
        if args.model is not None:
            why = "--model"
        elif picked_model(selections) is not None:
            monitor = selections[0]["monitor"]
            extreme = "highest" if monitor.endswith("accuracy") else "lowest"
            why = f"picked by its {extreme} {monitor} of the {len(selections)} models"
        print_line(f"{describe_model(checkpoint)}: {why}")
    return checkpoint


def _quiet_failed_save_noise() -> None:
    """A failed save is one line (CheckpointError): silence orbax's echoes of it (its absl
    traceback, asyncio's "Task exception was never retrieved" for the other writes of the save,
    and TensorStore's unraisable "Event loop is closed" once orbax closed its loop)."""
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    # The compilation cache is optional: a full or read-only cache folder costs recompiling.
    warnings.filterwarnings("ignore", "Error (writing|reading) persistent compilation cache entry")
    # A full disk also fails writer threads (TensorBoard's): the run says it in its one line.
    thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

    def quiet_thread_hook(failure: Any) -> None:
        if not isinstance(failure.exc_value, OSError):
            thread_hook(failure)

    def quiet_unraisable_hook(unraisable: Any) -> None:
        # orbax's reads of a damaged checkpoint leave coroutines that fail again when collected.
        error, coroutine = unraisable.exc_value, inspect.iscoroutine(unraisable.object)
        closed = isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
        if not (closed or coroutine):
            unraisable_hook(unraisable)

    threading.excepthook, sys.unraisablehook = quiet_thread_hook, quiet_unraisable_hook
