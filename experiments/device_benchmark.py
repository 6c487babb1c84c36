"""The same code on an accelerator: correctness checks and timings in one command, one table.

python -m experiments.device_benchmark --idx-dir DIR [--out DIR] [--quick]
python -m experiments.device_benchmark --idx-dir DIR --write-cpu-reference   (once, on a CPU)

Checks, on the default recipe (Config() with --idx-dir, 10 epochs):
- the test accuracy of seeds 0-7 against the same 8 seeds trained on a CPU (a paired comparison
  with the reference file that --write-cpu-reference writes);
- a rerun gives bit-identical parameters, optimizer state and records;
- --seeds 8 (one vmapped program) equals 8 single runs, within float tolerance;
- --dtype bfloat16 scores within the test set's noise of float32.
Times: epoch seconds at batch 128 and 1024, K = 1, 8, 64 models in one program against K single
runs, and the step time against PyTorch's eager loop on the same device. Writes one Markdown
table (and the figures as JSON) to --out, named after the device.
"""

from __future__ import annotations

import os

# PyTorch shares the device in this process: JAX must not take 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.flatten_util  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from experiments.benchmark import machine  # noqa: E402
from experiments.common import markdown_table  # noqa: E402
from experiments.stats import noise_floor  # noqa: E402
from mlp_jax import (  # noqa: E402
    Config,
    Dataset,
    evaluate,
    load_dataset,
    steps_per_epoch,
    train_and_evaluate,
    train_epoch,
    train_many,
)
from mlp_jax.state import build_model, epoch_key, init_state  # noqa: E402

try:
    import torch

    from experiments.benchmark import TorchLoop
except ImportError:  # the optional extra `.[bench]`
    torch = None

OUT_DIR = Path(__file__).resolve().parent / "results" / "device_benchmark"
REFERENCE = OUT_DIR / "cpu_reference.json"
SEEDS = 8  # the accuracy and --seeds checks
MODEL_COUNTS = (1, 8, 64)
BATCH_SIZES = (128, 1024)
TIMED_EPOCHS = 4  # the median of epochs 2..4 is an epoch's time (epoch 1 warms caches)
TIMING_FIELDS = ("epoch_seconds", "examples_per_second")
Row = dict[str, Any]


def recipe(args: argparse.Namespace) -> Config:
    """The default recipe on --idx-dir; --quick: a 2-layer net for 2 epochs on the 5k subset."""
    if args.quick:
        return Config(dataset="mnist_subset", layers=2, hidden=(32,), epochs=2)
    return Config(idx_dir=args.idx_dir)


def _quiet(line: str) -> None:
    pass


def _run(config: Config, dataset: Dataset):
    return train_and_evaluate(config, dataset, log=_quiet)


def _steady(history: list[Row]) -> float:
    """An epoch's seconds: the median after the first epoch (which warms caches)."""
    return statistics.median(r["epoch_seconds"] for r in history[1:] or history)


def _without_timing(history: list[Row]) -> list[Row]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in history]


def _bit_identical(a: Any, b: Any) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
        for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def _max_relative_difference(a: Any, b: Any) -> float:
    """max |a - b| / (max |b| + tiny) over the leaves of two float trees."""
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / (np.max(np.abs(y)) + 1e-30))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _row(what: str, measured: str, goal: str, met: bool | None) -> Row:
    shown = "-" if met is None else ("yes" if met else "**no**")
    return {"what": what, "measured": measured, "goal": goal, "met": shown}


# ----------------------------------------------------------------------------- the checks


def check_rerun(config: Config, dataset: Dataset, seen: dict[str, float]) -> list[Row]:
    """The default run twice: the same bits in the parameters, optimizer state and records."""
    first, second = _run(config, dataset), _run(config, dataset)
    seen["float32_accuracy"] = float(first.test["accuracy"])
    same = _bit_identical(first.state.params, second.state.params)
    same &= _bit_identical(first.state.opt_state, second.state.opt_state)
    same &= _without_timing(first.history) == _without_timing(second.history)
    accuracy = 100 * float(first.test["accuracy"])
    return [
        _row("default run: test accuracy (seed 0)", f"{accuracy:.2f}%", "-", None),
        _row("a rerun is bit-identical", "yes" if same else "no", "identical", same),
    ]


def check_seeds(config: Config, dataset: Dataset, reference: dict | None) -> list[Row]:
    """--seeds 8 against 8 single runs, and their accuracies against the CPU's same 8 seeds."""
    many = _run(config.replace(seeds=SEEDS), dataset)
    singles = [_run(config.replace(seed=seed), dataset) for seed in range(SEEDS)]
    params = max(
        _max_relative_difference(many.state(k).params, single.state.params)
        for k, single in enumerate(singles)
    )
    first_loss = max(
        abs(many.history[k][0]["train_loss"] / single.history[0]["train_loss"] - 1)
        for k, single in enumerate(singles)
    )
    many_acc = [float(t["accuracy"]) for t in many.test]
    single_acc = [float(s.test["accuracy"]) for s in singles]
    accuracy_gap = 100 * max(abs(a - b) for a, b in zip(many_acc, single_acc, strict=True))
    against = f"--seeds {SEEDS} against {SEEDS} single runs"
    rows = [
        _row(
            f"{against}: epoch 1 train loss",
            f"{first_loss:.1e} relative",
            "<= 1e-5",
            first_loss <= 1e-5,
        ),
        _row(f"{against}: final parameters", f"{params:.1e} relative", "<= 1e-3", params <= 1e-3),
        _row(
            f"{against}: final test accuracy",
            f"{accuracy_gap:.2f} points apart at most",
            "<= 0.05 points (5 test images)",
            accuracy_gap <= 0.05,
        ),
    ]
    paired = _paired(many_acc, single_acc)
    noise = noise_floor(dataset.num_test, float(np.mean(single_acc)))
    rows.append(
        _row(
            f"{against}: mean test accuracy",
            f"{np.mean(many_acc):.2%} against {np.mean(single_acc):.2%}: difference {paired}",
            f"difference within +-{100 * noise:.2f} points (one model's test noise)",
            abs(np.mean(many_acc) - np.mean(single_acc)) <= noise,
        )
    )
    return rows + [compare_with_cpu(config, dataset, many_acc, reference)]


def _paired(a: Sequence[float], b: Sequence[float]) -> str:
    """The mean of a - b with its 95% t interval, in points: "+0.01 [-0.06, +0.09] points"."""
    differences = 100 * np.subtract(a, b)
    mean, sem = float(differences.mean()), float(differences.std(ddof=1) / np.sqrt(len(a)))
    half = float(scipy_stats.t.ppf(0.975, len(a) - 1)) * sem
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] points"


def check_one_ulp(config: Config, dataset: Dataset) -> list[Row]:
    """How far float noise carries in training: one initial weight nudged by one ulp.

    Training is chaotic: a difference in the last bit grows step by step until the two runs
    are as far apart as two seeds (Summers & Dinneen 2021, "Nondeterminism and instability in
    neural network optimization"). The --seeds rows above are read against this scale.
    """
    base = init_state(config, dataset, build_model(config, dataset))
    flat, unflatten = jax.flatten_util.ravel_pytree(base.params)
    i = int(np.argmax(np.abs(flat)))  # a weight, not a zero bias (a denormal would flush to 0)
    nudged = base.replace(params=unflatten(flat.at[i].set(np.nextafter(flat[i], np.inf))))
    nudged = jax.tree.map(jax.numpy.copy, nudged)  # train_epoch donates: no shared buffers
    images, labels = jax.device_put((dataset.train_images, dataset.train_labels))
    first, states = [], [base, nudged]
    for epoch in range(1, config.epochs + 1):
        key = epoch_key(config, epoch)
        for k, state in enumerate(states):
            states[k], metrics = train_epoch(state, images, labels, key, config.batch_size)
            first += [float(metrics["train_loss"])] if epoch == 1 else []
    loss = abs(first[1] / first[0] - 1)
    params = _max_relative_difference(states[1].params, states[0].params)
    tests = [evaluate(state, dataset.test_images, dataset.test_labels) for state in states]
    gap = 100 * abs(float(tests[1]["accuracy"]) - float(tests[0]["accuracy"]))
    measured = f"epoch 1 train loss {loss:.1e}, final parameters {params:.1e} relative; "
    measured += f"test accuracy {gap:.2f} points apart"
    return [_row("one initial weight nudged by one ulp, same seed", measured, "-", None)]


def compare_with_cpu(config: Config, dataset: Dataset, accuracies: list[float], reference):
    """Paired by seed: this device's test accuracies minus the CPU reference's."""
    what = f"test accuracy of seeds 0-{SEEDS - 1} against the same seeds on a CPU"
    if reference is None or reference["config"] != _describe(config, dataset):
        return _row(what, "no CPU reference for this recipe (--write-cpu-reference)", "-", None)
    noise = noise_floor(dataset.num_test, float(np.mean(accuracies)))
    here, cpu = np.mean(accuracies), np.mean(reference["test_accuracy"])
    measured = f"{here:.2%} here, {cpu:.2%} on {reference['cpu']}: difference "
    measured += _paired(accuracies, reference["test_accuracy"])
    goal = f"difference within +-{100 * noise:.2f} points (one model's test noise)"
    return _row(what, measured, goal, abs(here - cpu) <= noise)


def check_bfloat16(config: Config, dataset: Dataset, float32_accuracy: float) -> list[Row]:
    result = _run(config.replace(dtype="bfloat16"), dataset)
    accuracy = float(result.test["accuracy"])
    noise = noise_floor(dataset.num_test, float32_accuracy)
    measured = f"{100 * accuracy:.2f}% (float32 {100 * float32_accuracy:.2f}%)"
    goal = f"within {100 * noise:.2f} points (one model's test noise)"
    return [
        _row(
            "--dtype bfloat16: test accuracy",
            measured,
            goal,
            abs(accuracy - float32_accuracy) <= noise,
        )
    ]


# ----------------------------------------------------------------------------- the timings


def time_batch_sizes(config: Config, dataset: Dataset, batch_sizes, seen: dict) -> list[Row]:
    rows = []
    for batch_size in batch_sizes:
        result = _run(config.replace(batch_size=batch_size, epochs=TIMED_EPOCHS), dataset)
        seconds = seen[f"epoch at batch {batch_size}"] = _steady(result.history)
        steps = steps_per_epoch(dataset.num_train, batch_size)
        rows.append(
            _row(
                f"epoch at batch {batch_size} (1 model, {steps} steps)",
                f"{seconds:.3f} s ({1e6 * seconds / steps:.0f} us a step)",
                "-",
                None,
            )
        )
    return rows


def time_models(config: Config, dataset: Dataset, counts: Sequence[int], seen: dict) -> list[Row]:
    """K models in one vmapped program against K single runs (K x one model's epoch)."""
    config = config.replace(epochs=TIMED_EPOCHS)
    single = seen.get(f"epoch at batch {config.batch_size}")  # time_batch_sizes' when it ran
    single = single or _steady(_run(config, dataset).history)
    rows = []
    for count in counts:
        together = _steady(train_many(config.replace(seeds=count), dataset).history[0])
        measured = (
            f"{together:.3f} s an epoch for {count}; {count} single runs "
            f"{count * single:.3f} s: {count * single / together:.1f}x"
        )
        rows.append(
            _row(f"K = {count} in one program (batch {config.batch_size})", measured, "-", None)
        )
    return rows


def time_torch(dataset: Dataset, batch_sizes: Sequence[int], seen: dict) -> list[Row]:
    """experiments/benchmark.py's PyTorch loop (the lectures': randperm, index, step), here."""
    if torch is None:
        return [_row("PyTorch step time", "torch is not installed", "-", None)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for batch_size in batch_sizes:
        loop, seconds = TorchLoop(dataset, batch_size, on=device), []
        for epoch in range(TIMED_EPOCHS):
            start = time.perf_counter()
            loop.run_epoch(epoch)
            seconds.append(time.perf_counter() - start)
        epoch = statistics.median(seconds[1:])
        steps = steps_per_epoch(dataset.num_train, batch_size)
        measured = f"{epoch:.3f} s an epoch ({1e6 * epoch / steps:.0f} us a step) on {device}"
        ours = seen.get(f"epoch at batch {batch_size}")
        measured += f"; mlp_jax {epoch / ours:.1f}x as fast" if ours else ""
        rows.append(_row(f"PyTorch eager at batch {batch_size}", measured, "-", None))
    return rows


# ----------------------------------------------------------------------------- the command


def _describe(config: Config, dataset: Dataset) -> str:
    sizes = f"{dataset.num_train}/{dataset.num_test}"
    return f"{dataset.name} {sizes}, {config.layers} layers, {config.epochs} epochs"


def write_reference(config: Config, dataset: Dataset, path: Path) -> None:
    """The CPU's test accuracies of seeds 0..SEEDS-1 (--seeds SEEDS), for compare_with_cpu."""
    many = _run(config.replace(seeds=SEEDS), dataset)
    reference = {
        "config": _describe(config, dataset),
        "cpu": machine()["cpu_model"],
        "jax": jax.__version__,
        "date": datetime.date.today().isoformat(),
        "test_accuracy": [float(t["accuracy"]) for t in many.test],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reference, indent=2) + "\n")
    print(f"wrote {path}: {reference}")


def device_slug() -> str:
    device = jax.devices()[0]
    name = device.device_kind if device.platform != "cpu" else machine()["cpu_model"]
    return re.sub(r"[^a-z0-9]+", "-", f"{device.platform} {name}".lower()).strip("-")


def run_all(config: Config, dataset: Dataset, args: argparse.Namespace) -> list[Row]:
    """Each part in turn; a part that fails becomes a row saying so (the others still run)."""
    reference = json.loads(args.reference.read_text()) if args.reference.exists() else None
    batch_sizes = (16, 64) if args.quick else BATCH_SIZES
    counts = (1, 2, 4) if args.quick else MODEL_COUNTS
    rows: list[Row] = []
    seen: dict[str, float] = {}  # figures one part passes to a later one
    parts: list[tuple[str, Callable[[], list[Row]]]] = [
        ("rerun", lambda: check_rerun(config, dataset, seen)),
        ("seeds", lambda: check_seeds(config, dataset, reference)),
        ("one ulp", lambda: check_one_ulp(config, dataset)),
        ("bfloat16", lambda: check_bfloat16(config, dataset, seen["float32_accuracy"])),
        ("batch sizes", lambda: time_batch_sizes(config, dataset, batch_sizes, seen)),
        ("models", lambda: time_models(config, dataset, counts, seen)),
        ("torch", lambda: time_torch(dataset, batch_sizes, seen)),
    ]
    done = 0
    for name, part in parts:
        start = time.perf_counter()
        try:
            rows += part()
        # The table says which part failed, and why; the other parts still run.
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            rows.append(
                _row(name, f"failed: {type(error).__name__}: {error}".splitlines()[0], "-", False)
            )
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
        print(markdown_table(rows[done:]).split("\n", 2)[-1], flush=True)  # if later ones hang
        done = len(rows)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idx-dir", help="the 4 MNIST IDX files, .gz or not")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the .md and .json")
    parser.add_argument("--quick", action="store_true", help="a tiny net on the subset (tests)")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the CPU's accuracies")
    parser.add_argument("--write-cpu-reference", action="store_true", help="write --reference")
    args = parser.parse_args(argv)
    if not (args.idx_dir or args.quick):
        parser.error("--idx-dir DIR is needed (the 4 MNIST IDX files), or --quick")
    config = recipe(args)
    dataset = load_dataset(config)
    if args.write_cpu_reference:
        write_reference(config, dataset, args.reference)
        return 0
    start = time.perf_counter()
    facts = machine() | {
        "device_kind": jax.devices()[0].device_kind,
        "date": str(datetime.date.today()),
        "jax_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "torch_allow_tf32": torch.backends.cuda.matmul.allow_tf32 if torch else None,
    }
    print(json.dumps(facts), flush=True)
    rows = run_all(config, dataset, args)
    command = "python -m experiments.device_benchmark " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    heading = (
        f"`{command.strip()}`, {facts['date']}: {facts['device_kind']} ({facts['jax_backend']}), "
        f"jax {facts['jax']} (matmul precision {facts['jax_matmul_precision']}), "
        f"torch {facts['torch']} (allow_tf32 {facts['torch_allow_tf32']}), "
        f"host {facts['cpu_model']}; "
        f"{_describe(config, dataset)}; {time.perf_counter() - start:.0f} s in all"
    )
    table = heading + "\n\n" + markdown_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = device_slug()
    (args.out / f"{stem}.md").write_text(table + "\n")
    (args.out / f"{stem}.json").write_text(json.dumps({**facts, "rows": rows}, indent=2) + "\n")
    print(table)
    return 0 if all(row["met"] != "**no**" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
