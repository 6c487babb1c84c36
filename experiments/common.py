"""What the experiment scripts share: flags, data, runs over seeds, CSV, Markdown, figures.

Scripts build `mlp_jax.Config`s in Python; the flags here only pick the data, seeds and epochs.
The seeds of a configuration (and the lrs of a sweep) train as one vmapped program: the same
`mlp_jax.train_many` engine as `python -m mlp_jax.train --seeds K --lr-sweep ...`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")  # scripts run headless; set before pyplot is imported anywhere

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import mlp_jax  # noqa: E402
from experiments import stats  # noqa: E402
from mlp_jax import Config, Dataset, count_params, eval_step, load_dataset, train_many  # noqa: E402
from mlp_jax.figures import dataset_title  # noqa: E402
from mlp_jax.loop import DivergedError, RunResult, train_and_evaluate  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# --quick: a slice of mnist_subset and a tiny net, so a script finishes in seconds (a smoke test).
QUICK_TRAIN, QUICK_TEST = 512, 256
QUICK_NET = {"layers": 2, "hidden": (32,), "epochs": 2}


def make_parser(description: str, *, seeds: int = 3, epochs: int = 10) -> argparse.ArgumentParser:
    """The flags every study has; a script adds its own and passes its default seeds/epochs."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--dataset", default="mnist_subset", help="mlp_jax --dataset name")
    parser.add_argument(
        "--idx-dir", default=None, help="folder of 4 IDX files (overrides --dataset)"
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir")
    parser.add_argument("--epochs", type=int, default=epochs, help="epochs per run")
    parser.add_argument("--seeds", type=int, default=seeds, help="runs per configuration (0..N-1)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the PNG and CSV")
    parser.add_argument("--quick", action="store_true", help="tiny data, net and grid: smoke test")
    return parser


class Study:
    """One experiment's data, base config and output files, from its parsed flags."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name, self.args, self.quick = name, args, args.quick
        config = Config(
            dataset=args.dataset, idx_dir=args.idx_dir, data_dir=args.data_dir, epochs=args.epochs
        )
        self.dataset = load_dataset(config)
        if self.quick:
            self.dataset = subsample(self.dataset, QUICK_TRAIN, QUICK_TEST)
            config = config.replace(**QUICK_NET)
        self.base = config
        self.seeds = 1 if self.quick else args.seeds
        tag = dataset_title(self.dataset.name).split(" ")[0].lower().replace("-", "_")
        self.title = human_title(self.dataset.name) + (" (quick)" if self.quick else "")
        self.stem = args.out / f"{name}_{'quick' if self.quick else tag}"
        args.out.mkdir(parents=True, exist_ok=True)
        print(
            f"{name}: {self.dataset.name} ({self.dataset.num_train} train / "
            f"{self.dataset.num_test} test), {self.seeds} seed(s), {config.epochs} epochs",
            flush=True,
        )

    @property
    def csv_path(self) -> Path:
        return self.stem.with_suffix(".csv")

    @property
    def png_path(self) -> Path:
        return self.stem.with_suffix(".png")

    def run(
        self, config: Config, label: str, dataset: Dataset | None = None, progress: bool = False
    ) -> list[RunResult]:
        """`config` trained once per seed 0..seeds-1, all seeds in one compiled program.

        This is the `--seeds` engine (`mlp_jax.train_many`); a diverged seed raises its
        DivergedError, as train_and_evaluate would.
        """
        results = self.sweep(config, label, [config.lr], dataset, progress=progress)[config.lr]
        for result in results:
            if isinstance(result, DivergedError):
                raise result
        return results  # type: ignore[return-value]

    def sweep(
        self,
        config: Config,
        label: str,
        lrs: Sequence[float],
        dataset: Dataset | None = None,
        seeds: Sequence[int] | None = None,
        progress: bool = False,
    ) -> dict[float, list[RunResult | DivergedError]]:
        """One model per (lr, seed), all in one compiled program (`train_many`, `--lr-sweep`).

        Returns, per peak lr, one result per seed (default 0..seeds-1). A model whose running
        train loss became NaN/inf gets the DivergedError that the train loop's NaN guard would
        have raised (same epoch); the other models are unaffected by it. `progress` prints a line
        per epoch (for long runs).
        """
        seeds = range(self.seeds) if seeds is None else seeds
        start = time.perf_counter()
        on_epoch = _print_epoch if progress else None
        many = train_many(config, dataset or self.dataset, seeds=seeds, lrs=lrs, on_epoch=on_epoch)
        seconds = time.perf_counter() - start
        results: dict[float, list[RunResult | DivergedError]] = {}
        for k, (seed, lr) in enumerate(zip(many.seeds, many.lrs, strict=True)):
            history = many.history[k]
            bad = next((r for r in history if not math.isfinite(r["train_loss"])), None)
            if bad is not None:
                result = DivergedError(bad["epoch"], bad["train_loss"], bad["lr"], config)
                verdict = f"diverged in epoch {bad['epoch']}"
            else:
                result = RunResult(many.state(k), history, many.test[k], many.dataset)
                verdict = f"test accuracy {100 * many.test[k]['accuracy']:.2f}%"
            lr_label = f" lr {lr:.2g}" if len(lrs) > 1 else ""
            print(f"  {label}{lr_label} seed {seed}: {verdict}", flush=True)
            results.setdefault(lr, []).append(result)
        print(
            f"  ({len(many.seeds)} models in one program: compile {many.compile_seconds:.1f}s, "
            f"{seconds:.1f}s in all)",
            flush=True,
        )
        return results

    def train(self, config: Config, label: str, dataset: Dataset | None = None) -> RunResult:
        """One run, with one line of progress."""
        result = train_and_evaluate(config, dataset or self.dataset, log=_quiet)
        print(
            f"  {label} seed {config.seed}: test accuracy {100 * result.test['accuracy']:.2f}% "
            f"({sum(r['epoch_seconds'] for r in result.history):.1f}s)",
            flush=True,
        )
        return result

    def save(self, rows: list[dict[str, Any]], figure: Figure) -> None:
        write_csv(rows, self.csv_path)
        figure.savefig(self.png_path, dpi=110)
        print(f"wrote {self.csv_path} and {self.png_path}")

    @property
    def validation(self) -> Dataset:
        """5/6 of the train split to train on, the held-out 1/6 to choose on (never the test)."""
        return validation_split(self.dataset)


def per_example_correct(state: Any, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """bool[n]: which of these images the model classifies right (eval_step, in batches of 1000).

    The paired tests of experiments/stats.py need this per image; a confusion matrix is not enough.
    """
    correct = []
    for start in range(0, len(labels), 1000):
        batch = {"image": images[start : start + 1000], "label": labels[start : start + 1000]}
        correct.append(np.asarray(eval_step(state, batch)["correct"]))
    return np.concatenate(correct)


def correct_on_test(results: Sequence[RunResult | DivergedError], dataset: Dataset) -> np.ndarray:
    """bool[k, n]: per-example correctness of each final model on `dataset`'s test split.

    A diverged model gets every image wrong (it is shown as diverged, never dropped).
    """
    return np.stack(
        [
            np.zeros(dataset.num_test, bool)
            if isinstance(result, DivergedError)
            else per_example_correct(result.state, dataset.test_images, dataset.test_labels)
            for result in results
        ]
    )


def accuracies(results: Sequence[RunResult | DivergedError]) -> list[float]:
    """Final test accuracy per seed; NaN for a diverged seed (so tables can name it)."""
    return [
        math.nan if isinstance(result, DivergedError) else float(result.test["accuracy"])
        for result in results
    ]


def num_params(result: RunResult) -> int:
    return count_params(result.state.params)


def noise_floor_note(dataset: Dataset, accuracy: float) -> str:
    """The sentence every table on a small test set carries."""
    return (
        f"Noise floor: one model's accuracy near {100 * accuracy:.0f}% on these "
        f"{dataset.num_test:,} test images has a 95% interval of ± "
        f"{100 * stats.noise_floor(dataset.num_test, accuracy):.2f} points."
    )


def human_title(dataset_name: str) -> str:
    """The dataset's name for a slide: "MNIST, 4,000-image subset", "Fashion-MNIST"."""
    title = dataset_title(dataset_name)
    return "MNIST, 4,000-image subset" if title == "mnist_subset" else title


@dataclasses.dataclass
class Measured:
    """One configuration trained with k seeds twice: on 5/6 of train (scored on validation,
    where choices are made) and on all of train (scored once on test)."""

    label: str
    config: Config
    params: int
    validation: list[float]  # accuracy per seed, NaN if diverged
    test: list[float]  # accuracy per seed, NaN if diverged
    test_correct: np.ndarray  # bool[k, num_test]
    seconds: float  # wall seconds of the k test-split models trained together
    num_validation: int
    num_test: int
    results: list[RunResult | DivergedError]  # the test-split models

    def row(self, reference: Measured | None = None, significance: bool = False) -> dict[str, Any]:
        """A table row: size, budget, wall time, both accuracies with 95% intervals, and a
        paired bootstrap test against `reference` (over the same test images); `significance`
        adds a column that says whether that difference is significant at the 5% level."""
        row = {
            "config": self.label,
            "params": f"{self.params:,}",
            "epochs": self.config.epochs,
            f"wall s ({len(self.test)} seeds)": f"{self.seconds:.0f}",
            "validation (%)": stats.accuracy_cell(self.validation, self.num_validation),
            "test (%)": stats.accuracy_cell(self.test, self.num_test),
        }
        if reference is not None:
            if reference is self:
                row[f"test: minus {reference.label}"] = "(reference)"
                verdict = "-"
            else:
                comparison = stats.paired_bootstrap(self.test_correct, reference.test_correct)
                row[f"test: minus {reference.label}"] = comparison.percent()
                verdict = "yes" if comparison.significant else "no"
            if significance:
                row["significant (p < 0.05)"] = verdict
        return row


def measure(
    study: Study,
    config: Config,
    label: str,
    test: bool = True,
    validation_accuracies: Sequence[float] | None = None,
) -> Measured:
    """`config` with the study's seeds on the validation split, then (if `test`) on the test split.

    `validation_accuracies` (per seed, from a sweep that already ran `config` on validation)
    skips the validation run. Diverged seeds stay in the lists as NaN (and score 0 images right),
    never dropped.
    """
    validation = study.validation
    if validation_accuracies is None:
        on_validation = study.sweep(config, f"{label} [validation]", [config.lr], validation)
        validation_accuracies = accuracies(on_validation[config.lr])
    start = time.perf_counter()
    results = study.sweep(config, f"{label} [test]", [config.lr])[config.lr] if test else []
    seconds = time.perf_counter() - start
    first = next((r for r in results if not isinstance(r, DivergedError)), None)
    return Measured(
        label=label,
        config=config,
        params=num_params(first) if first is not None else 0,
        validation=list(validation_accuracies),
        test=accuracies(results),
        test_correct=correct_on_test(results, study.dataset) if results else np.zeros((0, 0)),
        seconds=seconds,
        num_validation=validation.num_test,
        num_test=study.dataset.num_test,
        results=results,
    )


def best_lr(validation: dict[float, Sequence[float]]) -> float:
    """The lr whose seeds have the highest mean validation accuracy (a diverged seed counts 0)."""
    return max(validation, key=lambda lr: float(np.mean(np.nan_to_num(validation[lr], nan=0.0))))


def best_on_validation(measured: Sequence[Measured]) -> Measured:
    """The configuration with the highest mean validation accuracy (a diverged seed counts 0)."""
    return max(measured, key=lambda m: float(np.mean(np.nan_to_num(m.validation, nan=0.0))))


def train_custom(
    dataset: Dataset,
    model: Any,
    tx: Any,
    seed: int,
    epochs: int,
    batch_size: int,
    epoch_fn: Any = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Train `model` with optimizer `tx` for the demos that step outside Config (a custom
    optimizer, loss or batch sampler); the keys come from `seed` as in a package run.

    `epoch_fn(state, images, labels, key, batch_size) -> (state, metrics)` defaults to
    `mlp_jax.train_epoch`. Returns the final state and one record per epoch (train loss, test
    accuracy and loss, epoch seconds).
    """
    from mlp_jax import create_train_state, evaluate, train_epoch
    from mlp_jax.state import data_key, init_key

    epoch_fn = epoch_fn or train_epoch
    state = create_train_state(init_key(seed), model, tx, dataset.train_images[:1])
    images, labels = jax.device_put((dataset.train_images, dataset.train_labels))
    test_images, test_labels = jax.device_put((dataset.test_images, dataset.test_labels))
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        key = jax.random.fold_in(data_key(seed), epoch)
        state, metrics = epoch_fn(state, images, labels, key, batch_size)
        train_loss = float(metrics["train_loss"])
        seconds = time.perf_counter() - start
        test = evaluate(state, test_images, test_labels)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_accuracy": float(metrics["train_accuracy"]),
                "test_loss": float(test["loss"]),
                "test_accuracy": float(test["accuracy"]),
                "epoch_seconds": seconds,
            }
        )
    return state, history


def train_model_many(
    config: Config,
    dataset: Dataset,
    model: Any,
    seeds: Sequence[int],
    lrs: Sequence[float],
    epoch_fn: Any = None,
) -> tuple[list[list[dict[str, Any]]], Any]:
    """`train_many` for a model that Config cannot describe (e.g. other input scalings): one model
    per (seed, lr), vmapped, optimizer and keys from `config` as in a package run.

    Returns per model (lr-major, as sweep_models) one record per epoch (train loss, test
    accuracy), and the stacked final states (`stacked_correct` scores them per example).
    `epoch_fn` (default `mlp_jax.train_epoch`) is called as epoch_fn(state, images, labels, key,
    batch_size).
    """
    from mlp_jax import evaluate, train_epoch
    from mlp_jax.state import epoch_keys, init_states, sweep_models

    seeds, lrs = sweep_models(config, seeds, lrs)
    states = init_states(config, dataset, model, seeds, lrs, stacked=True)
    epoch_fn = epoch_fn or train_epoch
    run_epoch = jax.jit(
        jax.vmap(
            lambda state, images, labels, key: epoch_fn(
                state, images, labels, key, config.batch_size
            ),
            in_axes=(0, None, None, 0),
        )
    )
    run_eval = jax.jit(jax.vmap(evaluate, in_axes=(0, None, None)))
    train = jax.device_put((dataset.train_images, dataset.train_labels))
    test = jax.device_put((dataset.test_images, dataset.test_labels))
    history: list[list[dict[str, Any]]] = [[] for _ in seeds]
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        states, metrics = run_epoch(states, *train, epoch_keys(seeds, epoch, stacked=True))
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - start
        scores = jax.device_get(run_eval(states, *test))
        for k, (seed, lr) in enumerate(zip(seeds, lrs, strict=True)):
            history[k].append(
                {
                    "epoch": epoch,
                    "seed": seed,
                    "peak_lr": lr,
                    "train_loss": float(metrics["train_loss"][k]),
                    "test_accuracy": float(scores["accuracy"][k]),
                    "epoch_seconds": seconds,
                    **{
                        name: float(value[k])
                        for name, value in metrics.items()
                        if name not in ("train_loss", "examples") and np.ndim(value[k]) == 0
                    },
                }
            )
    return history, states


def stacked_correct(states: Any, history: list[list[dict[str, Any]]], dataset: Dataset):
    """bool[k, n]: per-example test correctness of each of a stack of k states; a model whose
    train loss went non-finite (diverged) gets every image wrong."""
    rows = []
    for k, run in enumerate(history):
        if not math.isfinite(run[-1]["train_loss"]):
            rows.append(np.zeros(dataset.num_test, bool))
            continue
        state = jax.tree.map(lambda leaf, k=k: leaf[k], states)
        rows.append(per_example_correct(state, dataset.test_images, dataset.test_labels))
    return np.stack(rows)


def band_axes(
    axes: Any,
    histories: dict[str, Sequence[Sequence[dict[str, Any]]]],
    key: str,
    colors: dict[str, str],
    scale: float = 100.0,
) -> None:
    """Per label: the mean of `key` over its seeds' histories as a line, min-max over seeds as a
    band; integer epoch ticks. A seed with a non-finite value shows as a break, not a mean."""
    from matplotlib.ticker import MaxNLocator

    for label, runs in histories.items():
        values = scale * np.array([[record[key] for record in run] for run in runs], np.float64)
        epochs = np.arange(1, values.shape[1] + 1)
        axes.plot(epochs, values.mean(axis=0), color=colors[label], label=label, lw=2)
        axes.fill_between(
            epochs, values.min(axis=0), values.max(axis=0), color=colors[label], alpha=0.25
        )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.grid(alpha=0.3)


def _quiet(line: str) -> None:
    pass


def _print_epoch(epoch: int, records: list[dict[str, Any]]) -> None:
    accuracy = [r["test_accuracy"] for r in records if r["test_accuracy"] is not None]
    shown = f", accuracy {100 * np.mean(accuracy):.2f}%" if accuracy else ""
    print(
        f"    epoch {epoch}: {records[0]['epoch_seconds']:.0f}s for {len(records)} models{shown}",
        flush=True,
    )


def subsample(dataset: Dataset, num_train: int, num_test: int) -> Dataset:
    """The first `num_train` / `num_test` examples of each split (mnist_subset is pre-shuffled)."""
    return dataset._replace(
        train_images=dataset.train_images[:num_train],
        train_labels=dataset.train_labels[:num_train],
        test_images=dataset.test_images[:num_test],
        test_labels=dataset.test_labels[:num_test],
    )


def validation_split(dataset: Dataset, fraction: float = 1 / 6) -> Dataset:
    """Train on the rest of the train split, "test" on its held-out, stratified `fraction`.

    The split is the package's (`mlp_jax.validation_split`, as --validation-split): it does not
    depend on the seed. Hyperparameters are chosen on it, so the test split only scores the
    chosen ones.
    """
    split = mlp_jax.validation_split(dataset, fraction)
    return split._replace(
        name=dataset.name + "/validation",
        test_images=split.val_images,
        test_labels=split.val_labels,
        val_images=None,
        val_labels=None,
        validation=None,
    )


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for one value) of the finite values; NaN if none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def pm(values: Iterable[float], scale: float = 100.0, digits: int = 2) -> str:
    """ "mean ± std" of values (as percentages by default), or "-" if none is finite."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "-"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def final(results: Sequence[RunResult], key: str = "test_accuracy") -> list[float]:
    """The last epoch's `key` of each run."""
    return [result.history[-1][key] for result in results]


def mean_curve(results: Sequence[RunResult], key: str) -> np.ndarray:
    """float[epochs]: `key` per epoch, averaged over the runs."""
    return np.mean([[record[key] for record in result.history] for result in results], axis=0)


def run_row(label: str, seed: int, result: RunResult, **extra: Any) -> dict[str, Any]:
    """One CSV row: a run's final metrics and its total training seconds.

    For models trained together (`Study.run`, `Study.sweep`) the seconds are the whole
    program's, shared by all its models.
    """
    last = result.history[-1]
    return {
        "config": label,
        **extra,
        "seed": seed,
        "epochs": len(result.history),
        "train_loss": round(last["train_loss"], 5),
        "train_accuracy": round(last["train_accuracy"], 5),
        "test_loss": round(last["test_loss"], 5),
        "test_accuracy": round(last["test_accuracy"], 5),
        "train_seconds": round(sum(r["epoch_seconds"] for r in result.history), 3),
    }


def curve_rows(label: str, seed: int, result: RunResult, **extra: Any) -> list[dict[str, Any]]:
    """One CSV row per epoch of a run, for curve figures."""
    return [{"config": label, **extra, "seed": seed, **record} for record in result.history]


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))  # union, first-seen order
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of `rows` (dicts), one column per key."""
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def print_table(title: str, rows: Sequence[dict[str, Any]]) -> None:
    print(f"\n### {title}\n\n{markdown_table(rows)}\n", flush=True)
