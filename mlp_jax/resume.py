"""Resuming a run and restoring its checkpoints: what must match, what may change, what is
restored. A run of K models is one `Progress`; a checkpoint holds all of it, and with the epoch
keys (state.epoch_keys) that is all a resume needs to continue bit for bit.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from mlp_jax.config import Config, ConfigError
from mlp_jax.data import Dataset, load_dataset
from mlp_jax.model import MLP, mlp_from_config
from mlp_jax.optim import make_optimizer
from mlp_jax.results import picked_model
from mlp_jax.selection import Selection, selection_from_json
from mlp_jax.state import new_train_state, sweep_models
from mlp_jax.steps import TrainState, steps_per_epoch
from mlp_jax.workdir import CHECKPOINTS, CONFIG, NoCheckpointError, Record, Workdir

if TYPE_CHECKING:  # orbax loads only where a run reads or writes checkpoints
    from mlp_jax.checkpoint import Checkpoint, Checkpointer

# Config fields that change the shapes or the meaning of the saved state, or the data order: a
# resume with any of them different would not continue the same run. Everything else (epochs, lr
# and the schedule, evaluation, where the data lives, checkpointing) may change on resume.
MUST_MATCH = (
    *("dataset", "idx_dir", "normalize", "layers", "hidden_sizes", "activation", "dropout"),
    *("bias", "optimizer", "momentum", "weight_decay", "clip_norm", "batch_size", "seed"),
    "grad_accum",  # adds the accumulated gradients to the optimizer state
    *("seeds", "lr_sweep"),  # --seeds and --lr-sweep stack K models into one state
    *("validation_split", "overfit_batches", "fast_dev_run"),  # which images are used
    "monitored",  # what the early-stopping state and the best checkpoint refer to
    "plateau_schedule",  # adds its state to the optimizer state
    # Augmentation, regularisers and the loss change what the state means (--ema its shapes).
    *("augment", "input_dropout", "max_norm", "label_smoothing", "ema", "loss"),
)
# What identifies the data a run was trained on (the config alone does not: offline fallback).
DATASET_FACTS = ("name", "num_train", "num_test", "image_shape", "num_classes")


@dataclasses.dataclass
class Progress:
    """Where K models stand after `epoch` epochs: all a checkpoint holds and a resume needs."""

    epoch: int
    states: TrainState  # K = 1: one state; K > 1: stacked, a leading axis of K on every leaf
    history: list[list[Record]]  # history[k]: model k's records of epochs 1..epoch
    selections: list[Selection] | None  # per model, when something is monitored

    @property
    def stopped(self) -> bool:
        """Early stopping ended every model."""
        return self.selections is not None and all(s.should_stop for s in self.selections)

    def selections_json(self) -> list[dict[str, Any]] | None:
        return None if self.selections is None else [s.to_json() for s in self.selections]

    def selected_epochs(self) -> list[int]:
        return [s.best_epoch for s in self.selections or () if s.best_epoch is not None]


def dataset_facts(dataset: Dataset) -> dict[str, Any]:
    """What config.json and each checkpoint record about the data: DATASET_FACTS, where it came
    from, and `validation` (the split's sizes and how it was drawn)."""
    names = ("name", "source", "note", "num_train", "num_test", "image_shape", "num_classes")
    facts = {name: getattr(dataset, name) for name in (*names, "validation")}
    return facts | {"image_shape": list(dataset.image_shape)}


def as_saved(config: Config) -> Config:
    """`config` with absolute data paths: evaluate and plot may run from another directory."""
    paths = {name: getattr(config, name) for name in ("idx_dir", "data_dir", "manual_dir")}
    return config.replace(
        **{name: os.path.abspath(path) for name, path in paths.items() if path is not None}
    )


def run_config(config: Config, run_info: dict[str, Any], layer_sizes: list[int]) -> dict:
    """What DIR/config.json records: the config (data paths absolute), the dataset's facts
    that a resume checks, the layer sizes and the devices."""
    return {
        "config": as_saved(config).to_dict(),
        "dataset": run_info["dataset"],
        "layer_sizes": layer_sizes,
        "devices": [str(d) for d in jax.devices()],
    }


def check_resumable(
    config: Config, info: dict[str, Any], facts: dict[str, Any], source: str = "config.json"
) -> None:
    """Raise ConfigError listing every MUST_MATCH field (and dataset fact) that differs, or
    naming `source` if its config is not one a run writes."""
    saved = Config.from_dict(info["config"], source)
    if saved.idx_dir is not None:  # older runs saved it as typed
        saved = saved.replace(idx_dir=os.path.abspath(saved.idx_dir))
    saved_facts = info.get("dataset", {})
    differences = [
        f"{name} {_show(getattr(saved, name, None))} -> {_show(getattr(config, name, None))}"
        for name in MUST_MATCH
        if getattr(saved, name, None) != getattr(config, name, None)
    ] + [
        f"dataset {name} {_show(saved_facts.get(name))} -> {_show(facts.get(name))}"
        for name in DATASET_FACTS
        if name in saved_facts and saved_facts[name] != facts.get(name)
    ]
    if differences:
        raise ConfigError(
            "workdir",
            f"{config.workdir} holds a run with a different config ({'; '.join(differences)}); "
            "to resume, use its settings; or start over with --fresh (moves the old run aside) "
            "or use another --workdir",
        )


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) or "()"
    return str(value)


def resume(
    config: Config,
    workdir: Workdir,
    start: Progress,
    run_info: dict[str, Any],
    log: Callable[[str], None],
) -> Progress:
    """The run in `workdir` continued from its newest readable checkpoint (`start` if there is
    none). Everything that can refuse (another config, no readable checkpoint, too few epochs)
    runs before anything in the workdir changes; then unreadable newer checkpoints are set
    aside and metrics.jsonl is cut to the epochs the checkpoint holds."""
    if not workdir.holds_run():
        return start
    workdir.read_metrics()  # a hand-edited or corrupted line refuses before anything changes
    checkpoint, reader = _newest_checkpoint(config, workdir, start.states, run_info)
    progress = start
    if checkpoint is None:
        if os.path.exists(workdir.file(CONFIG)):
            info, shown = workdir.read_config(), workdir.show(CONFIG)
            check_resumable(as_saved(config), info, run_info["dataset"], shown)
        done, skipped = 0, ()
        where = f"{workdir.shown}: no checkpoint yet, starting at epoch 1"
    else:
        done, skipped = checkpoint.epoch, checkpoint.skipped
        if done > config.epochs:
            raise ConfigError(
                "epochs", f"must be {done} or more (the run in {workdir.shown} is at epoch {done})"
            )
        progress = _restored(config, checkpoint, start)
        where = (
            f"from checkpoint {checkpoint.path} (epoch {done}/{config.epochs}, "
            f"step {checkpoint.info['step']})"
        )
    if jax.process_index() != 0:  # process 0 alone changes the workdir
        return progress
    newer = sorted((e for e in reader.epochs() if e > done), reverse=True) if reader else []
    for epoch, reason in zip(newer, skipped, strict=True):
        log(f"{reason}: moved it to {reader.set_aside(epoch)}")
    records, dropped = workdir.keep_metrics_until(done)
    note = f"; dropped {dropped} metrics.jsonl lines after epoch {done}" if dropped else ""
    if sorted({record["epoch"] for record in records}) != list(range(1, done + 1)):
        note += f"; metrics.jsonl lacks some of epochs 1..{done}"
    log(f"resuming {where}{note}")
    return dataclasses.replace(progress, history=_per_model(config, records, len(start.history)))


def _newest_checkpoint(
    config: Config, workdir: Workdir, states: TrainState, run_info: dict[str, Any]
) -> tuple[Checkpoint | None, Checkpointer | None]:
    if not os.path.isdir(workdir.file(CHECKPOINTS)):
        return None, None
    from mlp_jax.checkpoint import Checkpointer

    reader = Checkpointer(workdir, read_only=True)
    if not reader.epochs():
        return None, reader
    try:
        checkpoint = reader.restore(
            lambda info: states,
            check=lambda info: check_resumable(as_saved(config), info, run_info["dataset"]),
        )
    except NoCheckpointError as error:
        raise ConfigError(
            "workdir", f"{error}; --fresh moves this run aside and starts over"
        ) from None
    return checkpoint, reader


def _restored(config: Config, checkpoint: Checkpoint, start: Progress) -> Progress:
    """The checkpoint's progress (its states with today's peak lr, which may change)."""
    states = checkpoint.state
    if checkpoint.config.lr != config.lr:  # the peak lr lives in the optimizer state: take today's
        hyperparams = start.states.opt_state.hyperparams
        states = states.replace(opt_state=states.opt_state._replace(hyperparams=hyperparams))
    saved = saved_selections(checkpoint.info)
    selections = start.selections
    if selections is not None and saved:
        selections = [selection_from_json(config, s) for s in saved]
    return Progress(checkpoint.epoch, states, start.history, selections)


def saved_selections(info: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Each model's selection in a checkpoint record (a single run's older records: one)."""
    if info.get("selections"):
        return info["selections"]
    return [info["selection"]] if info.get("selection") else None


def _per_model(config: Config, records: list[Record], num_models: int) -> list[list[Record]]:
    """metrics.jsonl's records regrouped per model (a sweep's carry their seed and peak lr)."""
    if num_models == 1:
        return [records]
    index = {model: k for k, model in enumerate(zip(*sweep_models(config), strict=True))}
    history: list[list[Record]] = [[] for _ in range(num_models)]
    for record in records:
        k = index.get((record.get("seed"), record.get("peak_lr")))
        if k is not None:
            history[k].append(record)
    return history


# ------------------------------------------------------------------------ restoring for use


def model_from_info(info: dict[str, Any]) -> MLP:
    """The MLP of a checkpoint record, with the normalisation constants it was trained with."""
    config = Config.from_dict(info["config"])
    if "hidden_sizes" in info:  # as trained: the default widths' rule may change
        hidden = tuple(info["hidden_sizes"])
        config = config.replace(hidden=hidden, layers=len(hidden) + 1)
    return mlp_from_config(config, info["dataset"]["num_classes"], info["mean"], info["std"])


def abstract_state(info: dict[str, Any]) -> TrainState:
    """Shapes and dtypes of the TrainState(s) a checkpoint record describes, computing nothing."""
    config = Config.from_dict(info["config"])
    dataset = info["dataset"]
    model = model_from_info(info)
    tx = make_optimizer(config, steps_per_epoch(dataset["num_train"], config.batch_size))
    sample = jnp.zeros((1, *dataset["image_shape"]), jnp.uint8)

    def create(key: jax.Array) -> TrainState:
        return new_train_state(config, key, model, tx, sample)

    keys = jnp.zeros((config.num_models, 2), jnp.uint32)  # --seeds/--lr-sweep: a stack of states
    if config.num_models == 1:
        return jax.eval_shape(create, keys[0])
    return jax.eval_shape(jax.vmap(create), keys)


def restore_checkpoint(
    workdir: str | Workdir, epoch: int | None = None, best: bool = False, model: int | None = None
) -> Checkpoint:
    """Restore the newest readable checkpoint of `workdir` (or that of `epoch`), for research code.

    A sweep's checkpoint (--seeds, --lr-sweep) holds all its models: `model=k` gives model k
    alone (its `config` has its seed and peak lr), `model=None` the stack of all. With
    `best=True`, the checkpoint of the epoch that validation selected (for a sweep: model k's;
    `model=None` means the model validation picked). Needs no dataset: the model (with its
    normalisation) is rebuilt from the saved record, so `ckpt.state.apply_fn` and
    `ckpt.state.params` are ready to use. Newer checkpoints that cannot be read are listed in
    `ckpt.skipped`. Raises NoCheckpointError, or ConfigError("model") for a model not there.
    """
    workdir = Workdir.of(workdir)  # relative paths are relative to the current directory
    if not os.path.isdir(workdir.file(CHECKPOINTS)):
        raise NoCheckpointError(
            f"no checkpoints in {workdir.shown} (expected {CHECKPOINTS}/ there)"
        )
    from mlp_jax.checkpoint import Checkpointer

    checkpointer = Checkpointer(workdir, read_only=True)
    checkpoint = checkpointer.restore(abstract_state, epoch=epoch)
    num_models = checkpoint.config.num_models
    if model is not None and not 0 <= model < num_models:
        trained = f"models 0 .. {num_models - 1}" if num_models > 1 else "one model (model 0)"
        raise ConfigError("model", f"the run in {workdir.shown} trained {trained}, got {model}")
    if best:
        if model is None and num_models > 1:
            model = default_model(checkpoint.info)
        selections = saved_selections(checkpoint.info)
        chosen = selections[model or 0].get("best_epoch") if selections else None
        if chosen is None:
            raise NoCheckpointError(
                f"the run in {workdir.shown} selected no best epoch (it monitored nothing: "
                "train with --validation-split F or --monitor)"
            )
        if chosen != checkpoint.epoch:
            checkpoint = checkpointer.restore(abstract_state, epoch=chosen)
    return checkpoint if model is None or num_models == 1 else one_model(checkpoint, model)


def default_model(info: dict[str, Any]) -> int:
    """The model validation picked (the best monitored value), else model 0."""
    picked = picked_model(saved_selections(info) or [])
    return 0 if picked is None else picked


def describe_model(checkpoint: Checkpoint) -> str:
    """`model 3 of 6 (seed 1, lr 0.05)`, for the commands' first line ("" for a single run)."""
    if checkpoint.model is None:
        return ""
    return (
        f"model {checkpoint.model} of {checkpoint.info['config_models']} "
        f"(seed {checkpoint.config.seed}, lr {checkpoint.config.lr:g})"
    )


def one_model(checkpoint: Checkpoint, k: int) -> Checkpoint:
    """Model k of a sweep's checkpoint, unstacked, with a config that trains it alone."""
    config = checkpoint.config
    seeds, lrs = sweep_models(config)
    return dataclasses.replace(
        checkpoint,
        state=jax.tree.map(lambda leaf: leaf[k], checkpoint.state),
        config=config.replace(seed=seeds[k], seeds=1, lr=lrs[k], lr_sweep=None),
        info={**checkpoint.info, "config_models": config.num_models},
        model=k,
    )


def restore_params(workdir: str | Workdir, epoch: int | None = None, model: int | None = None):
    """Just the params of the newest readable checkpoint of `workdir` (see `restore_checkpoint`)."""
    return restore_checkpoint(workdir, epoch, model=model).state.params


def dataset_of(
    checkpoint: Checkpoint, data_dir: str | None = None, idx_dir: str | None = None
) -> Dataset:
    """The dataset `checkpoint` was trained on, loaded again (the subset if training fell back
    to it offline; from `data_dir` / `idx_dir` if given, where it moved); ConfigError if it now
    loads differently (another size, shape or classes)."""
    config, saved = checkpoint.config, checkpoint.info["dataset"]
    if saved["name"] == "mnist_subset":  # also when training fell back to it offline
        config = config.replace(dataset="mnist_subset", idx_dir=None)
    moved = {"data_dir": data_dir, "idx_dir": idx_dir}
    config = config.replace(
        **{name: os.path.abspath(path) for name, path in moved.items() if path is not None}
    )
    dataset = load_dataset(config)
    facts = dataset_facts(dataset)
    moved_name = ("name",) if idx_dir is not None else ()  # an IDX dataset is named by its folder
    differing = [n for n in DATASET_FACTS if n not in moved_name and saved.get(n) != facts[n]]
    if differing:
        raise ConfigError(
            "idx_dir" if config.idx_dir is not None else "data_dir",
            "the dataset loads differently now than in training "
            f"({', '.join(f'{n} {saved.get(n)} -> {facts[n]}' for n in differing)})",
        )
    return dataset
