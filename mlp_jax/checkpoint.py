"""Orbax checkpoints of a run, `DIR/checkpoints/<epoch>/`: saving, restoring, which to keep.
Each is the whole TrainState (of all K models) plus a JSON record (epoch, config, dataset,
normalisation, selections, a hash of the state); what it must match to resume is resume.py's."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mlp_jax.config import Config
from mlp_jax.steps import TrainState
from mlp_jax.workdir import (
    CHECKPOINTS,
    CheckpointError,
    NoCheckpointError,
    Workdir,
    reason,
    unused_path,
)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A restored checkpoint: the state after `epoch` epochs and what it was trained with."""

    state: TrainState
    epoch: int
    config: Config
    info: dict[str, Any]  # the JSON record saved with it (see `Checkpointer.save`)
    path: str  # DIR/checkpoints/<epoch>
    skipped: tuple[str, ...] = ()  # one message per newer checkpoint that could not be read
    model: int | None = None  # which model of a sweep `state` is (None: all, or a single run)


class Checkpointer:
    """Saves checkpoints of one workdir asynchronously, keeps the newest `keep`, restores.
    `read_only=True` writes nothing until `save`/`set_aside` (orbax's own option logs warnings)."""

    def __init__(self, workdir: str | Workdir, keep: int = 3, *, keep_best=False, read_only=False):
        self.workdir = Workdir.of(workdir)
        self.directory = self.workdir.file(CHECKPOINTS)  # absolute, as orbax needs
        # The newest `keep`, and with keep_best each model's selected epoch (a CustomSteps that
        # `save` sets; BestN wants one value for all models and evicts the newest: orbax#526).
        self._keep_best, self._policies = keep_best, [ocp.checkpoint_managers.LatestN(keep)]
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(self._policies),
            cleanup_tmp_directories=not read_only,  # saves a kill interrupted: never used
            create=False,  # orbax cannot create it with `active_processes` set (below)
            # In a multi-process run only process 0 saves: no barriers with the others.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=jax.process_index(), active_processes={jax.process_index()}
            ),
        )
        self._last_saved: int | None = None
        if not read_only:
            os.makedirs(self.directory, exist_ok=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def epochs(self) -> list[int]:
        """Epochs of the complete checkpoints, oldest first (interrupted saves are not listed)."""
        return sorted(self._manager.all_steps())

    def read_info(self, epoch: int) -> dict[str, Any]:
        """The JSON record of epoch's checkpoint alone (no arrays are read)."""
        return self._restore(epoch, info=ocp.args.JsonRestore()).info

    def path(self, epoch: int | None = None) -> str:
        """DIR/checkpoints(/<epoch>) as the user typed it (for messages)."""
        return self.workdir.show(CHECKPOINTS, *([] if epoch is None else [str(epoch)]))

    def save(
        self, epoch: int, state: TrainState, config: Config, run_info: dict, selected_epochs=()
    ) -> str:
        """Start writing epoch's checkpoint (copied to the host first: the caller may donate it);
        return its path. CheckpointError if this or the previous save failed."""
        if self._keep_best:
            self._policies[1:] = [ocp.checkpoint_managers.CustomSteps(selected_epochs)]
        host_state = jax.device_get(state)
        info = {
            **run_info,
            "epoch": epoch,
            "step": int(np.ravel(host_state.step)[0]),  # a sweep's models share the count
            "config": config.to_dict(),
            "state_sha256": _state_hash(host_state),
        }
        items = {"state": ocp.args.StandardSave(host_state), "info": ocp.args.JsonSave(info)}
        previous, self._last_saved = self._last_saved, epoch
        try:
            self._manager.wait_until_finished()  # the previous save: its failure is its own
            self._manager.check_for_errors()
        except Exception as error:
            raise self._save_error(previous, error) from error
        try:
            self._manager.save(epoch, args=ocp.args.Composite(**items), force=True)
        except Exception as error:
            raise self._save_error(epoch, error) from error
        return self.path(epoch)

    def close(self) -> None:
        """Wait for the last save to be on disk (CheckpointError if it failed), release orbax."""
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as error:
            raise self._save_error(self._last_saved, error) from error
        finally:
            self._manager.close()

    def restore(
        self, target: Callable[[dict], TrainState], epoch: int | None = None, retries: int = 3
    ) -> Checkpoint:
        """The newest checkpoint that reads back intact (or exactly `epoch`), naming the newer ones
        in `.skipped`. `target(info)` gives the saved state's structure, or raises to refuse. One
        that vanished meanwhile (a run writing the workdir dropped it) is not unreadable: the
        checkpoints are listed again, up to `retries` times."""
        kept = self.epochs()
        where = self.path() if epoch is None else f"epoch {epoch} in {self.path()}"
        if epoch is not None and epoch not in kept:
            listed = ", ".join(map(str, kept)) or "none"
            raise NoCheckpointError(f"no checkpoint of {where} (epochs: {listed})")
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        skipped = []
        for candidate in [epoch] if epoch is not None else reversed(kept):
            path = self.path(candidate)
            try:  # a record edited by hand or corrupted: skipped too
                info = self.read_info(candidate)
                config = Config.from_dict(info["config"], f"{path}/info")
                saved_epoch = int(info["epoch"])
            except Exception as error:
                if self._vanished(candidate, epoch, retries):
                    return self.restore(target, retries=retries - 1)
                skipped.append(f"checkpoint {path} cannot be read ({reason(error)})")
                continue
            abstract = jax.tree.map(  # orbax needs a sharding for each array
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding or device),
                target(info),
            )
            try:
                state = self._restore(candidate, state=ocp.args.StandardRestore(abstract)).state
                if _state_hash(jax.device_get(state)) != info.get("state_sha256"):
                    raise ValueError("corrupted: its arrays do not match their hash")
            except Exception as error:
                if self._vanished(candidate, epoch, retries):
                    return self.restore(target, retries=retries - 1)
                skipped.append(f"checkpoint {path} cannot be read ({reason(error)})")
                continue
            return Checkpoint(state, saved_epoch, config, info, path, tuple(skipped))
        reasons = "; ".join(skipped) or "there is none"
        raise NoCheckpointError(f"no readable checkpoint of {where}: {reasons}")

    def _vanished(self, candidate: int, epoch: int | None, retries: int) -> bool:
        """Whether the newest checkpoint should be looked for again: `candidate` is gone."""
        if epoch is not None or retries == 0:  # an exact epoch is not looked for again
            return False
        if os.path.isdir(os.path.join(self.directory, str(candidate))):
            return False
        self._manager.reload()
        return True

    def _restore(self, epoch: int, **items: Any) -> Any:
        return self._manager.restore(epoch, args=ocp.args.Composite(**items))

    def set_aside(self, epoch: int) -> str:
        """Move one (unreadable) checkpoint out of the way, to DIR/unreadable-checkpoints/."""
        folder = self.workdir.file("unreadable-checkpoints")
        os.makedirs(folder, exist_ok=True)
        moved = unused_path(os.path.join(folder, f"{epoch}-"))
        os.rename(os.path.join(self.directory, str(epoch)), moved)
        self._manager.reload()
        return self.workdir.show(os.path.relpath(moved, self.workdir.path))

    def _save_error(self, epoch: int | None, error: Exception) -> CheckpointError:
        # From the disk, not the manager: orbax already forgot the one it planned to delete.
        names = [name.partition(".") for name in os.listdir(self.directory)]
        kept = sorted(int(epoch) for epoch, dot, _ in names if epoch.isdigit() and not dot)
        # A save's failure may surface at the next save: the failed one left its temp folder.
        unfinished = [int(e) for e, _, rest in names if e.isdigit() and "checkpoint-tmp" in rest]
        epoch = max(unfinished, default=epoch)
        return CheckpointError(
            f"cannot write checkpoint {self.path(epoch)}: {reason(error)}; the complete "
            f"checkpoints are intact (epochs {', '.join(map(str, kept)) or 'none'})"
        )


def _state_hash(host_state: TrainState) -> str:
    """sha256 over every array of the state (dtype, shape, bytes): catches silently bad restores."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(host_state):
        leaf = np.ascontiguousarray(leaf)
        digest.update(f"{leaf.dtype}{leaf.shape}".encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()
