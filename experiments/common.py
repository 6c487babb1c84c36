"""What the experiment scripts share: flags, data, runs over seeds, CSV, Markdown, figures.

Scripts build `mlp_jax.Config`s in Python; the flags here only pick the data, seeds and epochs.
The seeds of a configuration (and the lrs of a sweep) train as one vmapped program: the same
`mlp_jax.train_many` engine as `python -m mlp_jax.train --seeds K --lr-sweep ...`.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # scripts run headless; set before pyplot is imported anywhere

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mlp_jax import Config, Dataset, load_dataset, train_many  # noqa: E402
from mlp_jax.loop import DivergedError, RunResult, train_and_evaluate  # noqa: E402
from mlp_jax.plot import dataset_title  # noqa: E402

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
        self.title = dataset_title(self.dataset.name) + (" (quick)" if self.quick else "")
        tag = self.title.split(" ")[0].lower().replace("-", "_")
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
                result = DivergedError(bad["epoch"], bad["train_loss"], bad["lr"])
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

    def run_each(self, config: Config, label: str) -> list[RunResult]:
        """`config` trained once per seed as separate runs, so each run's seconds are its own."""
        return [self.train(config.replace(seed=seed), label) for seed in range(self.seeds)]

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
    """Train on a fixed (5/6) part of the train split, "test" on the held-out rest.

    Hyperparameters are chosen on this split, so the test split only scores the chosen ones.
    """
    order = np.random.default_rng(0).permutation(dataset.num_train)
    held_out, kept = (
        order[: round(fraction * dataset.num_train)],
        order[round(fraction * dataset.num_train) :],
    )
    return dataset._replace(
        name=dataset.name + "/validation",
        train_images=dataset.train_images[kept],
        train_labels=dataset.train_labels[kept],
        test_images=dataset.train_images[held_out],
        test_labels=dataset.train_labels[held_out],
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
