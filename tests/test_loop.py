"""The one loop behaves the same for one model and for a sweep (K = 1 and K = 2), run as users
run it: the CLI as a subprocess, in a temporary current directory, with relative paths. The
workdir of either is then a first-class run for evaluate, predict, export and plot."""

import json
import signal

import numpy as np
import pytest
from PIL import Image
from test_workdir import TINY, cli, one_line_error, start, wait_for_pause

from mlp_jax import restore_checkpoint

FLAGS = [
    *TINY,
    "--dataset",
    "mnist_subset",
    "--epochs",
    "3",
    "--validation-split",
    "0.1",
    "--diagnostics",
    "--log-every",
    "5",
]
MODELS = {1: [], 2: ["--seeds", "2"]}

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="reading event files back needs the tensorboard package (the test extra)",
)


@pytest.fixture(scope="module", params=[1, 2], ids=["K=1", "K=2"])
def run(request, tmp_path_factory):
    """(cwd, K, train's stdout) of a finished run in cwd/run."""
    cwd = tmp_path_factory.mktemp(f"k{request.param}")
    code, out, err = cli(cwd, *FLAGS, *MODELS[request.param], "--workdir", "run")
    assert code == 0, err
    return cwd, request.param, out


def records(cwd):
    return [json.loads(line) for line in (cwd / "run" / "metrics.jsonl").read_text().splitlines()]


def test_diagnostics_are_logged_for_every_model(run):
    cwd, k, _ = run
    lines = records(cwd)
    assert len(lines) == 3 * k
    assert all(np.isfinite(record["grad_norm"]) for record in lines)


def test_each_models_selected_epoch_keeps_its_checkpoint(run):
    cwd, k, _ = run
    newest = restore_checkpoint(cwd / "run")
    selections = newest.info["selections"]
    assert len(selections) == k
    for model, selection in enumerate(selections):
        best = restore_checkpoint(cwd / "run", best=True, model=model)
        assert best.epoch == selection["best_epoch"]
        assert best.model == (model if k > 1 else None)
        val = [r["val_loss"] for r in records(cwd) if r.get("seed", 0) == model]
        assert best.epoch == 1 + int(np.argmin(val))


@pytest.mark.parametrize("k", [1, 2], ids=["K=1", "K=2"])
def test_the_selected_epochs_checkpoint_outlives_keep(tmp_path, monkeypatch, k):
    """--keep 1 keeps the newest checkpoint and each model's selected one besides."""
    from mlp_jax import Config, selection, train_and_evaluate

    # Every epoch looks worse than the one before: validation selects epoch 1, deterministically.
    monkeypatch.setattr(selection, "monitored_value", lambda record, monitor: record["epoch"])
    config = Config(
        dataset="mnist_subset",
        layers=2,
        hidden=(16,),
        epochs=3,
        validation_split=0.1,
        seeds=k,
        keep=1,
        workdir=str(tmp_path / "run"),
    )
    train_and_evaluate(config, log=lambda line: None)
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()) == [1, 3]
    for model in range(k):
        assert restore_checkpoint(tmp_path / "run", best=True, model=model).epoch == 1


def test_tensorboard_has_step_losses_and_a_confusion_image_per_model(run):
    cwd, k, _ = run
    logdir = cwd / "run" / "tensorboard"
    runs = [logdir] if k == 1 else sorted(p for p in logdir.iterdir() if p.is_dir())
    assert len(runs) == k
    for folder in runs:
        reader = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
        reader.Reload()
        assert len(reader.Scalars("train/loss_per_step")) >= 3
        (image,) = reader.Images("test/confusion_matrix")
        assert image.step == 3 * 72  # 3 epochs of 3,600 images in batches of 50


def test_the_final_report_and_selection_json(run):
    cwd, k, out = run
    saved = json.loads((cwd / "run" / "selection.json").read_text())
    if k == 1:
        assert "selected epoch" in out and saved["selected"]["epoch"] >= 1
    else:
        assert "validation picks lr" in out and saved["model"] in (0, 1)
        # The commands' default model is said, and it is the one `evaluate` then uses.
        default = f"evaluate, predict, export and plot default to model {saved['model']} (seed"
        assert default in out and "the lowest val_loss of the 2 models" in out, out
        code, first, err = cli(cwd, "--workdir", "run", module="mlp_jax.evaluate")
        assert code == 0 and first.startswith(f"model {saved['model']} of 2"), err


@pytest.mark.parametrize("command", ["evaluate", "plot", "export", "predict"])
@pytest.mark.parametrize("which", [[], ["--best"], ["--model", "0", "--best"], ["--epoch", "2"]])
def test_every_command_takes_the_run(run, command, which):
    cwd, k, _ = run
    extra = {
        "export": ["--out", "model.bin"],
        "predict": ["digit.png"],
        "plot": [],
        "evaluate": [],
    }[command]
    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (12, 6, 16, 22))  # a "1": predict refuses a blank image
    digit.save(cwd / "digit.png")
    code, out, err = cli(cwd, "--workdir", "run", *which, *extra, module=f"mlp_jax.{command}")
    assert code == 0, err
    if k > 1:  # says which model, and why
        first = out.splitlines()[0]
        assert first.startswith("model ") and "of 2 (seed" in first, out
        assert ("--model" in first) == ("--model" in which), first
        assert ("picked by its lowest val_loss of the 2 models" in first) != ("--model" in which)


def test_evaluate_best_names_the_models_selected_epoch(run):
    cwd, k, _ = run
    code, out, err = cli(
        cwd, "--workdir", "run", "--best", "--model", "0", module="mlp_jax.evaluate"
    )
    assert code == 0, err
    epoch = restore_checkpoint(cwd / "run").info["selections"][0]["best_epoch"]
    assert f"(epoch {epoch}," in out and "selected by val_loss" in out


def test_only_the_runs_selected_epoch_is_labelled_selected(run):
    """An older checkpoint's record holds the selection as of its own epoch; the label follows
    the run's newest record, so only the epoch the run selected says so."""
    cwd, k, _ = run
    best = restore_checkpoint(cwd / "run").info["selections"][0]["best_epoch"]
    for epoch in (1, 2, 3):
        code, out, err = cli(
            cwd,
            "--workdir",
            "run",
            "--epoch",
            str(epoch),
            "--model",
            "0",
            module="mlp_jax.evaluate",
        )
        assert code == 0, err
        assert ("selected by val_loss" in out) == (epoch == best), (epoch, best, out)


def test_a_model_that_is_not_there_is_one_line(run):
    cwd, k, _ = run
    code, _, err = cli(cwd, "--workdir", "run", "--model", "5", module="mlp_jax.evaluate")
    assert code == 2
    one_line_error(
        err, "--model: ", f"trained {'models 0 .. 1' if k > 1 else 'one model'}", "got 5"
    )


@pytest.mark.parametrize("command", ["evaluate", "plot", "export", "predict"])
def test_an_epoch_without_a_checkpoint_is_one_line_and_writes_nothing(run, command):
    cwd, _, _ = run
    Image.new("L", (28, 28), 255).save(cwd / "x.png")  # predict reads its files first
    extra = {"export": ["--out", "gone/m.bin"], "predict": ["x.png"], "plot": ["--out", "gone"]}
    argv = ["--workdir", "run", "--epoch", "7", *extra.get(command, [])]
    code, _, err = cli(cwd, *argv, module=f"mlp_jax.{command}")
    assert code == 2
    one_line_error(err, "no checkpoint of epoch 7", "(epochs: 1, 2, 3)")
    assert not (cwd / "gone" / "curves.png").exists()


@pytest.mark.parametrize("k", [1, 2], ids=["K=1", "K=2"])
def test_sigterm_after_an_epoch_saves_and_resume_finishes(tmp_path, k):
    argv = [*FLAGS, *MODELS[k], "--workdir", "run"]
    process = start(tmp_path, *argv, pause_epoch=2)
    wait_for_pause(process)
    process.send_signal(signal.SIGTERM)
    (tmp_path / "go").touch()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint run/checkpoints/2 is saved" in err
    code, out, err = cli(tmp_path, *argv)
    assert code == 0, err
    assert "resuming from checkpoint run/checkpoints/2" in out
    assert [r["epoch"] for r in records(tmp_path)] == sorted([1, 2, 3] * k)


def test_evaluate_takes_any_model_of_a_sweep_that_monitored_nothing(tmp_path):
    """No --validation-split: no selections saved, yet every model is there to score."""
    flags = [*TINY, "--dataset", "mnist_subset", "--epochs", "1", "--seeds", "2"]
    code, _, err = cli(tmp_path, *flags, "--workdir", "run")
    assert code == 0, err
    for model in ("0", "1"):
        code, out, err = cli(
            tmp_path, "--workdir", "run", "--model", model, module="mlp_jax.evaluate"
        )
        assert code == 0, err
        assert f"model {model} of 2" in out and "(identical)" in out, out


def _worsening_run(tmp_path, monkeypatch, k, sign=1, **changes):
    """train_and_evaluate of K models on a validation split that only ever worsens after epoch 1
    (the monitored value is the epoch; `sign` -1: only ever improves), in tmp_path/run: (its log
    lines, its result)."""
    from mlp_jax import Config, selection, train_and_evaluate

    monkeypatch.setattr(selection, "monitored_value", lambda record, _: sign * record["epoch"])
    fields = dict(dataset="mnist_subset", layers=2, hidden=(16,), validation_split=0.1, seeds=k)
    lines = []
    config = Config(**fields, workdir=str(tmp_path / "run"), **changes)
    return lines, train_and_evaluate(config, log=lines.append)


@pytest.mark.parametrize("k", [1, 2], ids=["K=1", "K=2"])
def test_a_run_resumes_after_metrics_lines_were_deleted(tmp_path, monkeypatch, k):
    """metrics.jsonl's advice for a bad line is to delete it: a resume then still finishes, and
    reports the selected epoch's own record."""
    _worsening_run(tmp_path, monkeypatch, k, sign=-1, epochs=2)
    metrics = tmp_path / "run" / "metrics.jsonl"
    kept = [line for line in metrics.read_text().splitlines() if json.loads(line)["epoch"] != 1]
    metrics.write_text("".join(line + "\n" for line in kept))
    lines, result = _worsening_run(tmp_path, monkeypatch, k, sign=-1, epochs=3)
    assert any("metrics.jsonl lacks some of epochs 1..2" in line for line in lines)
    assert sorted(r["epoch"] for r in records(tmp_path)) == [2] * k + [3] * k
    selected = [result.selected] if k == 1 else [result.selected(m) for m in range(k)]
    assert [record["epoch"] for record in selected] == [3] * k


@pytest.mark.parametrize("k", [1, 2], ids=["K=1", "K=2"])
def test_a_run_stopped_early_trains_on_when_resumed_with_more_patience(tmp_path, monkeypatch, k):
    _worsening_run(tmp_path, monkeypatch, k, epochs=10, early_stopping=2)
    assert max(r["epoch"] for r in records(tmp_path)) == 3  # best 1, then 2 flat evaluations
    lines, _ = _worsening_run(tmp_path, monkeypatch, k, epochs=10, early_stopping=2)
    assert any("early stopping had ended it" in line for line in lines)
    assert max(r["epoch"] for r in records(tmp_path)) == 3
    # Each as a run with that patience from the start: 1 best, then 3 (or 4) flat evaluations.
    _worsening_run(tmp_path, monkeypatch, k, epochs=10, early_stopping=3)
    assert max(r["epoch"] for r in records(tmp_path)) == 4
    _worsening_run(tmp_path, monkeypatch, k, epochs=10, early_stopping=4)
    assert max(r["epoch"] for r in records(tmp_path)) == 5
    _worsening_run(tmp_path, monkeypatch, k, epochs=7)  # no early stopping: to the last epoch
    assert max(r["epoch"] for r in records(tmp_path)) == 7


def test_evaluate_calls_a_diverged_models_nan_scores_identical(tmp_path):
    """NaN == NaN is False, yet a diverged model's NaN loss is what training logged."""
    flags = [*TINY, "--dataset", "mnist_subset", "--epochs", "1", "--optimizer", "sgd"]
    code, _, err = cli(tmp_path, *flags, "--lr-sweep", "0.05,1e6", "--workdir", "run")
    assert code == 0, err
    code, out, err = cli(tmp_path, "--workdir", "run", "--model", "1", module="mlp_jax.evaluate")
    assert code == 0, err
    assert "test loss nan" in out and "(identical)" in out, out


@pytest.mark.parametrize("k", [1, 2], ids=["K=1", "K=2"])
def test_best_refuses_when_the_selected_checkpoint_is_unreadable(tmp_path, monkeypatch, k):
    """Not an older checkpoint that was only the best so far: the run selected the newest."""
    import shutil

    from mlp_jax.workdir import NoCheckpointError

    _worsening_run(tmp_path, monkeypatch, k, sign=-1, epochs=3)  # each epoch better: 3 selected
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "3" / "state")
    for model in range(k):
        with pytest.raises(NoCheckpointError, match="epoch 3"):
            restore_checkpoint(tmp_path / "run", best=True, model=model)
    assert restore_checkpoint(tmp_path / "run", epoch=2).epoch == 2
