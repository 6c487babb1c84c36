"""The errors a user can meet, each one line: bad input, unwritable files, a run that diverged
or was stopped. `exit_code` is how every command maps them to its exit status."""

from __future__ import annotations

import signal

from mlp_jax.config import Config, ConfigError
from mlp_jax.workdir import CheckpointError, NoCheckpointError, WorkdirError


class DivergedError(RuntimeError):
    """The running train loss became NaN or inf; the message lists what can cause it."""

    def __init__(self, epoch: int, loss: float, lr: float, config: Config, std: float = 1.0):
        self.epoch, self.loss, self.lr = epoch, loss, lr
        vary = f"images that barely vary (pixel std {std:.2g}) blown up by standardising"
        clip = "" if config.clip_norm is not None else " or --clip-norm"
        causes = [
            (config.weight_decay > 0, f"--weight-decay {config.weight_decay:g} too large"),
            (config.normalize == "standardize" and std < 0.01, f"{vary}: try --normalize scale"),
            (True, f"a learning rate too large for this model: try a smaller --lr{clip}"),
        ]
        message = "; ".join(cause for applies, cause in causes if applies)
        super().__init__(
            f"train loss became {loss} in epoch {epoch} (lr {lr:.4g}); possible causes: {message}"
        )


class StoppedByOutput(Exception):
    """stdout could not be written (a pager quit, a full disk): the run saved and stopped."""

    def __init__(self, error: OSError, epoch: int, epochs: int, checkpoint: str | None):
        self.error = error
        cause = f"stdout cannot be written ({error.strerror or error}), so the run stopped"
        unsaved = "nothing new was saved" + ("" if epoch else " (no epoch had started)")
        super().__init__(_stopped(cause, epoch, epochs, checkpoint, unsaved))


class StoppedBySignal(Exception):
    """SIGINT/SIGTERM stopped the run after a completed epoch (checkpointed with --workdir)."""

    def __init__(self, signum: int, epoch: int, epochs: int, checkpoint: str | None):
        self.signum = signum
        cause = f"stopped by {signal.Signals(signum).name}"
        unsaved = "nothing was saved (no --workdir)"
        super().__init__(_stopped(cause, epoch, epochs, checkpoint, unsaved))


def _stopped(cause: str, epoch: int, epochs: int, checkpoint: str | None, unsaved: str) -> str:
    saved = f"checkpoint {checkpoint} is saved; run the same command to resume"
    return f"{cause} after epoch {epoch}/{epochs}: {saved if checkpoint else unsaved}"


def exit_code(error: BaseException) -> int | None:
    """The exit status a command returns for `error`; None for an error that is a bug."""
    from mlp_jax.images import ImageError  # Pillow: only when a command got this far

    if isinstance(error, ConfigError | NoCheckpointError | ImageError):
        return 2  # bad input: flags, files, images
    if isinstance(error, DivergedError | CheckpointError | WorkdirError):
        return 1
    if isinstance(error, StoppedBySignal):
        return 128 + error.signum
    if isinstance(error, StoppedByOutput):
        return 128 + signal.SIGPIPE if isinstance(error.error, BrokenPipeError) else 1
    return 130 if isinstance(error, KeyboardInterrupt) else None
