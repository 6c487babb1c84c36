"""A mutation run: does each realistic one-line bug in the core make at least one test fail?

Each mutant is a source-text replacement (one realistic slip: a key reused, a mask dropped, a
schedule off by one). It is applied to a fresh copy of the repository, and the test files that
cover its module run against that copy (`pytest -x`, the worktree's Python, PYTHONPATH = the
copy; the copy's `mlp_jax` is checked to be the one imported). A mutant is killed when the tests
fail. Slow (minutes per mutant on 2 cores), so it is not part of the test suite:

    .venv/bin/python experiments/mutation.py                 # every mutant
    .venv/bin/python experiments/mutation.py --only steps    # the mutants of one module
    .venv/bin/python experiments/mutation.py --only steps.dropout,state.epoch   # a few
    .venv/bin/python experiments/mutation.py --list          # what the mutants are

`--tests-from REF` takes tests/ from a git ref (e.g. the commit before new tests) to score an
older suite against today's mutants. Runs share one persistent JAX compilation cache, so code a
mutant leaves alone compiles once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "results", "*.egg-info")

# Each mutant runs only the tests that claim the property it breaks (pytest arguments: files and
# -k name filters), so that a run stays within minutes per mutant on a loaded 2-core machine.
STEPS_DROPOUT = ("tests/test_steps.py", "-k", "dropout or jit or train_step or key")
STEPS_EPOCH = ("tests/test_steps.py", "-k", "epoch and not retracing")
STEPS_MASK = ("tests/test_steps.py", "-k", "mask or epoch and not retracing")
STEPS_EVAL = ("tests/test_steps.py", "-k", "evaluate or confusion or padding")
STEPS_INIT = ("tests/test_steps.py", "-k", "split or jit or dropout")
MODEL = ("tests/test_model.py",)
OPTIM = ("tests/test_optim.py",)
DATA = ("tests/test_data.py", "-k", "mean_std or subset")
STATE = (
    "tests/test_state.py",
    "tests/test_loop_properties.py",
    "tests/test_train.py",
    "-k",
    "state or key or seed or epoch or standardis or logged",
)
SWEEP = ("tests/test_sweep.py",)
LOOP_K = ("tests/test_loop.py", "-k", "selected or diagnostics")
SHARDING = ("tests/test_sharding.py", "-k", "process_rows or batch_sharding or batch_check")
LOOP = ("tests/test_loop_properties.py", "tests/test_train.py", "-k", "loop or seed or logged")
CHECKPOINT = (
    "tests/test_loop_properties.py",
    "tests/test_checkpoint.py",
    "-k",
    "resume or checkpoint or clean_stop or mismatch or extending",
)


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str  # module.what
    path: str  # file to change, relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments: the test files (missing ones skipped), -k filters


MUTANTS = [
    # steps.py
    Mutant(
        "steps.dropout_key_reused",
        "mlp_jax/steps.py",
        "jax.random.fold_in(state.rng, state.step)",
        "state.rng",
        STEPS_DROPOUT,
    ),
    Mutant(
        "steps.epoch_not_shuffled",
        "mlp_jax/steps.py",
        "order = jax.random.permutation(key, images.shape[0])",
        "order = jnp.arange(images.shape[0])",
        STEPS_EPOCH,
    ),
    Mutant(
        "steps.epoch_metrics_unweighted",
        "mlp_jax/steps.py",
        'weights = per_step["count"] / jnp.sum(per_step["count"])',
        'weights = jnp.full(per_step["loss"].shape, 1 / per_step["loss"].shape[0])',
        STEPS_EPOCH,
    ),
    Mutant(
        "steps.train_loss_ignores_mask",
        "mlp_jax/steps.py",
        'state.loss(logits, batch["label"], mask)',
        'state.loss(logits, batch["label"])',
        STEPS_MASK,
    ),
    Mutant(
        "steps.masked_mean_over_batch",
        "mlp_jax/steps.py",
        "jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1)",
        "jnp.sum(values * mask) / mask.shape[0]",
        STEPS_MASK,
    ),
    Mutant(
        "steps.train_accuracy_ignores_mask",
        "mlp_jax/steps.py",
        '"accuracy": _masked_mean(correct, mask)',
        '"accuracy": jnp.mean(correct)',
        STEPS_MASK,
    ),
    Mutant(
        "steps.eval_correct_counts_padding",
        "mlp_jax/steps.py",
        'jnp.sum(out["correct"] & mask)',
        'jnp.sum(out["correct"])',
        STEPS_EVAL,
    ),
    Mutant(
        "steps.eval_loss_counts_padding",
        "mlp_jax/steps.py",
        'jnp.sum(out["loss"] * mask)',
        'jnp.sum(out["loss"])',
        STEPS_EVAL,
    ),
    Mutant(
        "steps.eval_confusion_counts_padding",
        "mlp_jax/steps.py",
        "dtype=jnp.int32) * mask[:, None]",
        "dtype=jnp.int32)",
        STEPS_EVAL,
    ),
    Mutant(
        "steps.eval_divides_by_padded_size",
        "mlp_jax/steps.py",
        'accuracy = totals["correct"] / n',
        'accuracy = totals["correct"] / indices.size',
        STEPS_EVAL,
    ),
    Mutant(
        "steps.confusion_transposed",
        "mlp_jax/steps.py",
        "truth.T @ predicted",
        "predicted.T @ truth",
        STEPS_EVAL,
    ),
    Mutant(
        "steps.padding_points_at_index_0",
        "mlp_jax/steps.py",  # equivalent: it is masked
        "jnp.full((padding,), order[0], order.dtype)",
        "jnp.zeros((padding,), order.dtype)",
        STEPS_MASK,
    ),
    Mutant(
        "steps.init_and_dropout_share_a_key",
        "mlp_jax/steps.py",
        "params_rng, dropout_rng = jax.random.split(rng)",
        "params_rng = dropout_rng = rng",
        STEPS_INIT,
    ),
    # model.py
    Mutant(
        "model.normalise_wrong_order",
        "mlp_jax/model.py",
        "x = (x - self.mean) / self.std",
        "x = x - self.mean / self.std",
        MODEL,
    ),
    Mutant(
        "model.dropout_in_evaluation",
        "mlp_jax/model.py",
        "nn.Dropout(self.dropout_rate, deterministic=not train)",
        "nn.Dropout(self.dropout_rate, deterministic=train)",
        MODEL,
    ),
    Mutant(
        "model.scale_keeps_train_statistics",
        "mlp_jax/model.py",
        'if config.normalize == "scale":',
        'if config.normalize == "none":',
        MODEL,
    ),
    Mutant(
        "model.no_bias_flag_ignored",
        "mlp_jax/model.py",
        "use_bias=config.bias",
        "use_bias=True",
        MODEL,
    ),
    # optim.py
    Mutant(
        "optim.step_schedule_smooth",
        "mlp_jax/optim.py",
        "config.gamma, staircase=True",
        "config.gamma, staircase=False",
        OPTIM,
    ),
    Mutant(
        "optim.exponential_schedule_staircase",
        "mlp_jax/optim.py",
        "optax.exponential_decay(peak, steps_per_epoch, config.gamma)",
        "optax.exponential_decay(peak, steps_per_epoch, config.gamma, staircase=True)",
        OPTIM,
    ),
    Mutant(
        "optim.cosine_off_by_one",
        "mlp_jax/optim.py",
        "optax.cosine_decay_schedule(peak, total_steps)",
        "optax.cosine_decay_schedule(peak, total_steps - 1)",
        OPTIM,
    ),
    Mutant(
        "optim.warmup_truncated",
        "mlp_jax/optim.py",
        "round(config.warmup_epochs * steps_per_epoch)",
        "int(config.warmup_epochs) * steps_per_epoch + 1",
        OPTIM,
    ),
    Mutant(
        "optim.schedule_one_step_ahead",
        "mlp_jax/optim.py",
        "learning_rate * shape(count)",
        "learning_rate * shape(count + 1)",
        OPTIM,
    ),
    Mutant(
        "optim.momentum_hard_coded",
        "mlp_jax/optim.py",
        "optax.sgd(lr, momentum=config.momentum)",
        "optax.sgd(lr, momentum=0.9)",
        OPTIM,
    ),
    Mutant(
        "optim.clip_after_update",
        "mlp_jax/optim.py",
        "optax.chain(optax.clip_by_global_norm(config.clip_norm), core)",
        "optax.chain(core, optax.clip_by_global_norm(config.clip_norm))",
        OPTIM,
    ),
    # data.py
    Mutant(
        "data.sample_std",
        "mlp_jax/data.py",
        "/ (n * n * 255.0**2)",
        "/ (n * (n - 1) * 255.0**2)",
        DATA,
    ),
    Mutant(
        "data.subset_test_leaks_into_train",
        "mlp_jax/data.py",
        "members[100:500]",
        "members[:400]",
        DATA,
    ),
    # state.py
    Mutant(
        "state.mean_std_from_test_split",
        "mlp_jax/state.py",
        "train_mean_std(dataset.train_images)",
        "train_mean_std(dataset.test_images)",
        STATE,
    ),
    Mutant(
        "state.data_key_equals_init_key",
        "mlp_jax/state.py",
        "fold_in(jax.random.PRNGKey(seed), 1)",
        "fold_in(jax.random.PRNGKey(seed), 0)",
        STATE,
    ),
    Mutant(
        "state.epoch_key_constant",
        "mlp_jax/state.py",
        "return jax.random.fold_in(data_key(config.seed), epoch)",
        "return data_key(config.seed)",
        STATE,
    ),
    Mutant(
        "state.seed_ignored_for_init",
        "mlp_jax/state.py",
        "[config.seed], [config.lr])",
        "[0], [config.lr])",
        STATE,
    ),
    Mutant(
        "state.schedule_sized_by_test_split",
        "mlp_jax/state.py",
        "steps_per_epoch(len(dataset.train_labels), config.batch_size))",
        "steps_per_epoch(len(dataset.test_labels), config.batch_size))",
        STATE,
    ),
    # The K-model parts of state.py, loop.py and report.py (--seeds, --lr-sweep).
    Mutant(
        "state.epoch_keys_constant",
        "mlp_jax/state.py",
        "jax.vmap(lambda seed: jax.random.fold_in(data_key(seed), epoch))",
        "jax.vmap(lambda seed: data_key(seed))",
        SWEEP,
    ),
    Mutant(
        "state.lr_not_injected",
        "mlp_jax/state.py",
        "        return state if lr is None else with_learning_rate(state, lr)\n",
        "        return state\n",
        SWEEP,
    ),
    Mutant(
        "report.population_std",
        "mlp_jax/report.py",
        "float(values.std(ddof=1))",
        "float(values.std(ddof=0))",
        SWEEP,
    ),
    Mutant(
        "loop.best_checkpoint_not_kept",
        "mlp_jax/loop.py",
        "selected = progress.selected_epochs()",
        "selected = ()",
        LOOP_K,
    ),
    Mutant(
        "loop.diagnostics_ignored",
        "mlp_jax/loop.py",
        "diagnostics=config.diagnostics,",
        "diagnostics=False,",
        LOOP_K,
    ),
    # sharding.py
    Mutant(
        "sharding.every_process_feeds_rows_0",
        "mlp_jax/sharding.py",
        "start = jax.process_index() * per_process",
        "start = 0",
        SHARDING,
    ),
    Mutant(
        "sharding.batch_replicated",
        "mlp_jax/sharding.py",
        "return NamedSharding(mesh, PartitionSpec(DATA_AXIS))",
        "return NamedSharding(mesh, PartitionSpec())",
        SHARDING,
    ),
    # loop.py (the epoch loop)
    Mutant(
        "loop.every_epoch_uses_epoch_1_key",
        "mlp_jax/loop.py",
        "key = sharding.put_replicated(state.epoch_keys(self.seeds, epoch), self.mesh)",
        "key = sharding.put_replicated(state.epoch_keys(self.seeds, 1), self.mesh)",
        LOOP,
    ),
    Mutant(
        "loop.logged_lr_one_epoch_late",
        "mlp_jax/loop.py",
        "step = (epoch - 1) * self.batches",
        "step = epoch * self.batches",
        LOOP,
    ),
    Mutant(
        "resume.repeats_the_last_epoch",
        "mlp_jax/resume.py",
        "progress = Progress(checkpoint.epoch, states,",
        "progress = Progress(checkpoint.epoch - 1, states,",
        CHECKPOINT,
    ),
    Mutant(
        "resume.seed_may_change",
        "mlp_jax/resume.py",
        '"batch_size", "seed"),',
        '"batch_size"),',
        CHECKPOINT,
    ),
    Mutant(
        "checkpoint.restored_epoch_is_the_step",
        "mlp_jax/checkpoint.py",
        'saved_epoch = int(info["epoch"])',
        'saved_epoch = int(info["step"])',
        CHECKPOINT,
    ),
]


def copy_repository(destination: Path, tests_from: str | None) -> None:
    shutil.copytree(ROOT, destination, ignore=COPY_IGNORE)
    if tests_from is not None:  # score an older suite: its tests/, today's code
        shutil.rmtree(destination / "tests")
        archive = subprocess.run(
            ["git", "archive", tests_from, "tests"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(destination, filter="data")


def apply(mutant: Mutant, tree: Path) -> None:
    path = tree / mutant.path
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(
            f"{mutant.name}: expected its text once in {mutant.path}, found "
            f"{text.count(mutant.old)} times; update the mutant"
        )
    path.write_text(text.replace(mutant.old, mutant.new))


def environment(tree: Path, cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(tree),
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def check_imports_the_copy(tree: Path, env: dict[str, str]) -> None:
    where = subprocess.run(
        [sys.executable, "-c", "import mlp_jax; print(mlp_jax.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the copy imports {where}, not its own mlp_jax: the run would lie")


def run_mutant(mutant: Mutant, base: Path, work: Path, cache: Path, timeout_s: float) -> dict:
    tree = work / mutant.name
    shutil.copytree(base, tree)
    apply(mutant, tree)
    env = environment(tree, cache)
    check_imports_the_copy(tree, env)
    tests = [arg for arg in mutant.tests if not arg.startswith("tests/") or (tree / arg).exists()]
    start = time.perf_counter()
    if not any(arg.startswith("tests/") for arg in tests):
        outcome, detail = "survived", "no test file covers it"
    else:
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
        try:
            result = subprocess.run(
                command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout_s
            )
            outcome = "survived" if result.returncode == 0 else "killed"
            failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
            detail = failed[0][len("FAILED ") :] if failed else result.stdout.strip()[-200:]
            if result.returncode not in (0, 1):  # collection error, crash: still a failing suite
                detail = f"pytest exit {result.returncode}: " + detail
        except subprocess.TimeoutExpired:
            outcome, detail = "timeout", f"tests ran past {timeout_s:.0f}s"
    shutil.rmtree(tree)
    return {
        "name": mutant.name,
        "outcome": outcome,
        "seconds": time.perf_counter() - start,
        "tests": tests,
        "detail": detail,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help="run mutants whose name contains one of these (comma-separated)"
    )
    parser.add_argument("--tests-from", help="git ref whose tests/ to score (default: worktree)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutant")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    wanted = args.only.split(",")
    mutants = [mutant for mutant in MUTANTS if any(part in mutant.name for part in wanted)]
    if args.list:
        for mutant in mutants:
            print(f"{mutant.name:40s} {mutant.path}: {mutant.old.strip()!r} -> {mutant.new!r}")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="mlp_jax-mutation-") as scratch:
        scratch = Path(scratch)
        base, cache = scratch / "base", scratch / "jax-cache"
        copy_repository(base, args.tests_from)  # once: later edits to the worktree don't leak in
        for mutant in mutants:  # every mutant's text must match before hours are spent
            if (base / mutant.path).read_text().count(mutant.old) != 1:
                apply(mutant, base)  # raises with the mutant's name
        for mutant in mutants:
            result = run_mutant(mutant, base, scratch, cache, args.timeout)
            results.append(result)
            print(
                f"{result['outcome']:8s} {result['seconds']:6.0f}s  {mutant.name:40s} "
                f"{result['detail']}",
                flush=True,
            )
    killed = sum(result["outcome"] != "survived" for result in results)
    print(
        f"\nmutation score: {killed}/{len(results)} killed "
        f"({100 * killed / max(len(results), 1):.0f}%)"
    )
    for result in results:
        if result["outcome"] == "survived":
            print(f"survived: {result['name']} ({', '.join(result['tests']) or 'no tests'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
