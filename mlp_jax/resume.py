"""Resuming a run and restoring its checkpoints: what must match, what may change, what is
restored. A run of K models is one `Progress`; a checkpoint holds all of it, and with the epoch
keys (state.epoch_keys) that is all a resume needs to continue bit for bit."""

from __future__ import annotations

import dataclasses
import os
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
from mlp_jax.workdir import CONFIG, Log, NoCheckpointError, Record, Workdir

if TYPE_CHECKING:  # orbax loads only where a run reads or writes checkpoints
    from mlp_jax.checkpoint import Checkpoint, Checkpointer

# Config fields that change the saved state (--seeds/--lr-sweep stack K models; grad_accum,
# plateau and ema add state; early stopping watches `monitored`) or which images come in which
# order: to resume, they must match. The rest (epochs, lr, evaluation, paths...) may change.
MUST_MATCH = (
    *("dataset", "idx_dir", "normalize", "layers", "hidden_sizes", "activation", "dropout"),
    *("bias", "optimizer", "momentum", "weight_decay", "clip_norm", "batch_size", "seed"),
    *("grad_accum", "seeds", "lr_sweep", "validation_split", "overfit_batches", "fast_dev_run"),
    *("monitored", "plateau_schedule", "augment", "input_dropout", "max_norm", "label_smoothing"),
    *("ema", "loss"),
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
    names = ("name", "source", "note", *DATASET_FACTS[1:], "validation")
    return {n: getattr(dataset, n) for n in names} | {"image_shape": list(dataset.image_shape)}


def as_saved(config: Config, **moved: str | None) -> Config:
    """`config` with absolute data paths, those in `moved` (when not None) first: evaluate and
    plot may run from another directory."""
    paths = {n: getattr(config, n) for n in ("idx_dir", "data_dir", "manual_dir")}
    paths |= {name: path for name, path in moved.items() if path is not None}
    return config.replace(**{n: os.path.abspath(p) for n, p in paths.items() if p is not None})


def run_config(config: Config, run_info: dict[str, Any], layer_sizes: list[int]) -> dict:
    """What DIR/config.json records: the config, the dataset's facts, layer sizes, devices."""
    return {
        "config": as_saved(config).to_dict(),
        "dataset": run_info["dataset"],
        "layer_sizes": layer_sizes,
        "devices": [str(d) for d in jax.devices()],
    }


def check_resumable(config: Config, info: dict, facts: dict, source: str = "config.json") -> None:
    """ConfigError listing each MUST_MATCH field and dataset fact that differs in `info`."""
    saved, trained = Config.from_dict(info["config"], source), info.get("dataset", {})
    pairs = [(name, getattr(saved, name), getattr(config, name)) for name in MUST_MATCH]
    pairs += [(f"dataset {n}", trained[n], facts.get(n)) for n in DATASET_FACTS if n in trained]

    def show(value: Any) -> str:
        return ",".join(map(str, value)) or "()" if isinstance(value, tuple | list) else str(value)

    differences = [f"{name} {show(old)} -> {show(new)}" for name, old, new in pairs if old != new]
    if differences:
        raise ConfigError(
            "workdir",
            f"{config.workdir} holds a run with a different config ({'; '.join(differences)}); "
            "to resume, use its settings; or start over with --fresh (moves the old run aside) "
            "or use another --workdir",
        )


def resume(config: Config, workdir: Workdir, start: Progress, run_info: dict, log: Log) -> Progress:
    """The run in `workdir` continued from its newest readable checkpoint (else `start`). All
    refusals come before any change; then unreadable newer checkpoints are set aside and
    metrics.jsonl is cut to the epochs the checkpoint holds."""
    if not workdir.holds_run():
        return start
    workdir.read_metrics()  # a hand-edited or corrupted line refuses before anything changes
    saved_config, facts = as_saved(config), run_info["dataset"]

    def same_run(info: dict) -> TrainState:  # restore's target: refuses another run's checkpoint
        check_resumable(saved_config, info, facts)
        return start.states

    reader = _reader(workdir)
    kept = reader.epochs()
    if not kept:
        if os.path.exists(workdir.file(CONFIG)):
            check_resumable(saved_config, workdir.read_config(), facts, workdir.show(CONFIG))
        progress, done, skipped = start, 0, ()
        where = f"{workdir.shown}: no checkpoint yet, starting at epoch 1"
    else:
        try:
            checkpoint = reader.restore(same_run)
        except NoCheckpointError as error:
            message = f"{error}; --fresh moves this run aside and starts over"
            raise ConfigError("workdir", message) from None
        done, skipped = checkpoint.epoch, checkpoint.skipped
        if done > config.epochs:
            message = f"must be {done} or more (the run in {workdir.shown} is at epoch {done})"
            raise ConfigError("epochs", message)
        states = checkpoint.state
        if checkpoint.config.lr != config.lr:  # the peak lr lives in the optimizer state: today's
            hyperparams = start.states.opt_state.hyperparams
            states = states.replace(opt_state=states.opt_state._replace(hyperparams=hyperparams))
        saved = checkpoint.info.get("selections")  # None iff it monitored nothing (MUST_MATCH)
        changed = checkpoint.config.early_stopping != config.early_stopping
        selections = start.selections
        if saved:
            selections = [selection_from_json(config, s, changed) for s in saved]
        progress = Progress(checkpoint.epoch, states, start.history, selections)
        step = checkpoint.info["step"]
        where = f"from checkpoint {checkpoint.path} (epoch {done}/{config.epochs}, step {step})"
    if jax.process_index() != 0:  # process 0 alone changes the workdir
        return progress
    for epoch, reason in zip([e for e in reversed(kept) if e > done], skipped, strict=True):
        log(f"{reason}: moved it to {reader.set_aside(epoch)}")
    records, dropped = workdir.keep_metrics_until(done)
    note = f"; dropped {dropped} metrics.jsonl lines after epoch {done}" if dropped else ""
    if sorted({record["epoch"] for record in records}) != list(range(1, done + 1)):
        note += f"; metrics.jsonl lacks some of epochs 1..{done}"
    if progress.stopped and done < config.epochs:
        note += "; early stopping had ended it (raise --early-stopping, or leave it out, to go on)"
    log(f"resuming {where}{note}")
    return dataclasses.replace(progress, history=_per_model(config, records, len(start.history)))


def _reader(workdir: Workdir) -> Checkpointer:
    """A read-only Checkpointer of DIR/checkpoints (without that folder: no epochs)."""
    from mlp_jax.checkpoint import Checkpointer

    return Checkpointer(workdir, read_only=True)


def newest_selections(workdir: str | Workdir, checkpoint: Checkpoint) -> list[dict] | None:
    """Each model's selection as the newest checkpoint records it (an older one's is as of its
    own epoch); `checkpoint`'s own if the newest cannot be read."""
    reader = _reader(Workdir.of(workdir))
    try:
        return reader.read_info(reader.epochs()[-1]).get("selections")
    except Exception:  # unreadable (it was skipped when restoring): the checkpoint's own
        return checkpoint.info.get("selections")


def _per_model(config: Config, records: list[Record], num_models: int) -> list[list[Record]]:
    """metrics.jsonl's records regrouped per model (a sweep's carry their seed and peak lr)."""
    if num_models == 1:
        return [records]
    models = zip(*sweep_models(config), strict=True)  # (seed, peak lr) of each
    return [[r for r in records if (r.get("seed"), r.get("peak_lr")) == model] for model in models]


# ------------------------------------------------------------------------ restoring for use


def model_from_info(info: dict[str, Any]) -> MLP:
    """The MLP of a checkpoint record, with the normalisation constants it was trained with."""
    hidden = tuple(info["hidden_sizes"])  # as trained: the default widths' rule may change
    config = Config.from_dict(info["config"]).replace(hidden=hidden, layers=len(hidden) + 1)
    return mlp_from_config(config, info["dataset"]["num_classes"], info["mean"], info["std"])


def abstract_state(info: dict[str, Any]) -> TrainState:
    """Shapes and dtypes of the TrainState(s) a checkpoint record describes, computing nothing."""
    config, dataset = Config.from_dict(info["config"]), info["dataset"]
    model, sample = model_from_info(info), jnp.zeros((1, *dataset["image_shape"]), jnp.uint8)
    tx = make_optimizer(config, steps_per_epoch(dataset["num_train"], config.batch_size))

    def create(key: jax.Array) -> TrainState:
        return new_train_state(config, key, model, tx, sample)

    keys = jnp.zeros((config.num_models, 2), jnp.uint32)
    if config.num_models == 1:
        return jax.eval_shape(create, keys[0])
    return jax.eval_shape(jax.vmap(create), keys)  # --seeds/--lr-sweep: a stack of states


def restore_checkpoint(
    workdir: str | Workdir, epoch: int | None = None, best: bool = False, model: int | None = None
) -> Checkpoint:
    """The newest readable checkpoint of `workdir` (or that of `epoch`), for research code; newer
    unreadable ones are named in `.skipped`. `model=k`: a sweep's model k alone, None: the stack.
    `best=True`: the epoch validation selected (of the model it picked, for `model=None`). Needs
    no dataset (`.state.apply_fn`, `.params` are ready). NoCheckpointError; ConfigError("workdir")
    for no run's folder, ConfigError("model") for a model not there."""
    workdir = Workdir.of(workdir)  # relative paths are relative to the current directory
    workdir.check_is_run()
    reader = _reader(workdir)
    checkpoint = reader.restore(abstract_state, epoch=epoch)
    num_models = checkpoint.config.num_models
    if model is not None and not 0 <= model < num_models:
        trained = f"models 0 .. {num_models - 1}" if num_models > 1 else "one model (model 0)"
        raise ConfigError("model", f"the run in {workdir.shown} trained {trained}, got {model}")
    if best:  # the run's own choice: a newer checkpoint's, though its arrays are unreadable
        selections = newest_selections(workdir, checkpoint)
        if model is None:  # the model validation picked (the best monitored value), else 0
            model = picked_model(selections or []) or 0
        chosen = selections[model].get("best_epoch") if selections else None
        if chosen is None:
            why = "it monitored nothing: train with --validation-split F or --monitor"
            raise NoCheckpointError(f"the run in {workdir.shown} selected no best epoch ({why})")
        if chosen != checkpoint.epoch:
            checkpoint = reader.restore(abstract_state, epoch=chosen)
    return checkpoint if model is None or num_models == 1 else one_model(checkpoint, model)


def describe_model(checkpoint: Checkpoint) -> str:
    """`model 3 of 6 (seed 1, lr 0.05)`, for the commands' first line ("" for a single run)."""
    if checkpoint.model is None:
        return ""
    config, models = checkpoint.config, checkpoint.info["config_models"]
    return f"model {checkpoint.model} of {models} (seed {config.seed}, lr {config.lr:g})"


def one_model(checkpoint: Checkpoint, k: int) -> Checkpoint:
    """Model k of a sweep's checkpoint, unstacked, with a config that trains it alone."""
    config, (seeds, lrs) = checkpoint.config, sweep_models(checkpoint.config)
    state = jax.tree.map(lambda leaf: leaf[k], checkpoint.state)
    alone = config.replace(seed=seeds[k], seeds=1, lr=lrs[k], lr_sweep=None)
    info = {**checkpoint.info, "config_models": config.num_models}
    return dataclasses.replace(checkpoint, state=state, config=alone, info=info, model=k)


def restore_params(workdir: str | Workdir, epoch: int | None = None, model: int | None = None):
    """Just the params of the newest readable checkpoint of `workdir` (see `restore_checkpoint`)."""
    return restore_checkpoint(workdir, epoch, model=model).state.params


def dataset_of(
    checkpoint: Checkpoint, data_dir: str | None = None, idx_dir: str | None = None
) -> Dataset:
    """The dataset `checkpoint` was trained on, loaded again (from `data_dir` / `idx_dir` if it
    moved); ConfigError if it now loads differently (another size, shape or classes)."""
    config, saved = checkpoint.config, checkpoint.info["dataset"]
    if saved["name"] == "mnist_subset":  # also when training fell back to it offline
        config = config.replace(dataset="mnist_subset", idx_dir=None)
    config = as_saved(config, data_dir=data_dir, idx_dir=idx_dir)
    facts = dataset_facts(dataset := load_dataset(config))
    moved_name = ("name",) if idx_dir is not None else ()  # an IDX dataset is named by its folder
    differing = [n for n in DATASET_FACTS if n not in moved_name and saved.get(n) != facts[n]]
    if differing:
        changes = ", ".join(f"{n} {saved.get(n)} -> {facts[n]}" for n in differing)
        flag = "idx_dir" if config.idx_dir is not None else "data_dir"
        raise ConfigError(flag, f"the dataset loads differently now than in training ({changes})")
    return dataset
