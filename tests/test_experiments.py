"""Every experiment script's --quick mode runs in-process and writes its PNG(s) and CSV rows."""

import csv
import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest


def _rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _run(name, tmp_path):
    module = importlib.import_module(f"experiments.{name}")
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    return _rows(tmp_path / f"{name}_quick.csv")


def _tables(out):
    """The Markdown tables a script printed, each as a list of {column: cell} rows."""
    tables, lines = [], out.splitlines() + [""]
    block = []
    for line in lines:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip("|").split("|")])
        elif block:
            tables.append([dict(zip(block[0], row, strict=True)) for row in block[2:]])
            block = []
    return tables


def _picked_on_validation(rows, key):
    """Per `key` value, the lr with the highest mean validation accuracy (diverged counts 0)."""
    scores = {}
    for row in rows:
        if row["split"] == "validation":
            value = 0.0 if row["diverged"] == "True" else float(row["accuracy"])
            scores.setdefault(row[key], {}).setdefault(float(row["lr"]), []).append(value)
    return {
        k: max(by_lr, key=lambda lr: sum(by_lr[lr]) / len(by_lr[lr])) for k, by_lr in scores.items()
    }


def _assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_depth_writes_one_row_per_depth(tmp_path):
    rows = _run("depth", tmp_path)
    assert [int(row["layers"]) for row in rows] == [1, 2]
    assert all(0.0 <= float(row["test_accuracy"]) <= 1.0 for row in rows)
    # Chosen on validation (a separate score per run), with the parameter count beside it.
    assert all(0.0 <= float(row["validation_accuracy"]) <= 1.0 for row in rows)
    assert [int(row["params"]) for row in rows] == [7850, 784 * 32 + 32 + 32 * 10 + 10]
    _assert_png(tmp_path / "depth_quick.png")


def test_batch_size_compares_each_regime_with_128_at_equal_epochs(tmp_path, capsys):
    rows = _run("batch_size", tmp_path)
    # 512: the whole (quick) train split, the full batch; 2 epochs of each regime on test.
    assert [int(row["batch_size"]) for row in rows] == [16, 16, 128, 128, 512, 512]
    assert all(float(row["epoch_seconds"]) > 0 for row in rows)
    out = capsys.readouterr().out
    (table,) = _tables(out)
    assert [row["regime"] for row in table] == ["mini-batch 16", "mini-batch 128", "full batch 512"]
    # Equal epochs, so unequal updates: 2 x ceil(512 / B).
    assert [row["updates (epochs x steps)"] for row in table] == ["64", "8", "2"]
    assert [row["epochs"] for row in table] == ["2", "2", "2"]
    assert {row["params"] for row in table} == {"25,450"}
    assert all("wall s (1 seeds)" in row and "[" in row["test (%)"] for row in table)
    verdicts = [row["significant (p < 0.05)"] for row in table]
    assert table[1]["test: minus mini-batch 128"] == "(reference)" and verdicts[1] == "-"
    assert verdicts[0] in ("yes", "no") and verdicts[2] in ("yes", "no")
    assert "best on validation: " in out and "equal budgets in epochs" in out
    assert "Noise floor: " in out
    _assert_png(tmp_path / "batch_size_quick.png")


def test_learning_rate_picks_on_validation_and_counts_diverged_seeds(tmp_path, capsys):
    rows = _run("learning_rate", tmp_path)
    validation = [row for row in rows if row["split"] == "validation"]
    assert [(row["optimizer"], float(row["lr"])) for row in validation] == [
        ("sgd", 0.01),
        ("sgd", 1e6),
        ("momentum", 0.01),
        ("momentum", 1e6),
    ]
    assert [row["diverged"] for row in validation] == ["False", "True"] * 2
    assert all(int(row["diverged_epoch"]) >= 1 for row in validation if row["diverged"] == "True")
    # Only each optimizer's lr picked on validation reaches the test split.
    test = [row for row in rows if row["split"] == "test"]
    picked = _picked_on_validation(rows, "optimizer")
    assert [(row["optimizer"], float(row["lr"])) for row in test] == list(picked.items())
    out = capsys.readouterr().out
    sweep, final = _tables(out)
    assert [row["diverged (NaN guard)"] for row in sweep] == ["0/1", "1/1"] * 2
    assert [row["validation (%), 95% interval"] for row in sweep][1::2] == ["diverged 1/1"] * 2
    assert [row["optimizer"] for row in final] == ["plain SGD", "momentum 0.9"]
    assert final[1]["test: minus momentum 0.9"] == "(reference)"
    assert final[0]["significant (p < 0.05)"] in ("yes", "no")
    assert {"params", "epochs", "wall s (1 seeds)", "test (%)"} <= set(final[0])
    assert "Noise floor: " in out
    _assert_png(tmp_path / "learning_rate_quick.png")


def test_optimizers_picks_each_lr_on_validation_and_tests_against_the_default(tmp_path, capsys):
    rows = _run("optimizers", tmp_path)
    validation = {
        (row["optimizer"], row["schedule"], float(row["lr"]))
        for row in rows
        if row["split"] == "validation"
    }
    assert validation == {
        ("momentum", "cosine", 0.02),
        ("momentum", "cosine", 0.05),
        ("adam", "cosine", 1e-3),
        ("momentum", "constant", 0.02),
        ("momentum", "constant", 0.05),
    }
    test = [row for row in rows if row["split"] == "test"]
    picked = _picked_on_validation(rows, "config")
    assert {row["config"]: float(row["lr"]) for row in test} == picked
    assert len(test) == 3  # one seed of each condition, scored once
    out = capsys.readouterr().out
    optimizers, schedules = _tables(out)
    assert [row["config"] for row in optimizers] == ["momentum 0.9, cosine", "Adam, cosine"]
    assert [row["config"] for row in schedules] == [
        "momentum 0.9, cosine",
        "momentum 0.9, constant",
    ]
    for table in (optimizers, schedules):
        assert table[0]["test: minus momentum 0.9, cosine"] == "(reference)"
        assert table[1]["significant (p < 0.05)"] in ("yes", "no")
        assert all(float(row["picked lr"]) == picked[row["config"]] for row in table)
    assert "Noise floor: " in out
    _assert_png(tmp_path / "optimizers_quick.png")


def test_regularization_reports_train_and_test_accuracy(tmp_path):
    rows = _run("regularization", tmp_path)
    assert [float(row["dropout"]) for row in rows] == [0.0, 0.5]
    assert all(0.0 <= float(row["train_accuracy_eval"]) <= 1.0 for row in rows)
    _assert_png(tmp_path / "regularization_quick.png")


def test_pictures_draws_templates_predictions_confusion_and_curves(tmp_path):
    rows = _run("pictures", tmp_path)
    assert [row["config"] for row in rows] == ["1 layer"] * 2 + ["2 layers"] * 2
    for kind in ("templates", "predictions", "confusion", "curves"):
        _assert_png(tmp_path / f"pictures_quick_{kind}.png")


def test_backprop_timing_times_both_implementations(tmp_path):
    rows = _run("backprop_timing", tmp_path)
    implementations = [row["implementation"] for row in rows]
    assert implementations.count("jax.grad (autodiff)") == 2
    assert implementations.count("custom_vjp (lecture formulas)") == 2
    _assert_png(tmp_path / "backprop_timing_quick.png")


def test_best_mlp_selects_on_validation_then_scores_on_test(tmp_path, capsys):
    rows = _run("best_mlp", tmp_path)
    assert [row["phase"] for row in rows] == ["selection (validation)"] * 4 + ["final (test)"] * 2
    _assert_png(tmp_path / "best_mlp_quick.png")
    out = capsys.readouterr().out
    # The ladder: the second candidate's gain over the first, paired on the validation images.
    second = "| 2 layers 32, flip, shift:1, EMA 0.9 |"
    ladder = [line for line in out.splitlines() if line.startswith(second)]
    assert len(ladder) == 1 and "] , p " not in ladder[0] and ", p " in ladder[0], out
    # The tta row reuses the row above's training run; the one at another lr trains its own.
    assert rows[2]["wall_seconds"] == rows[1]["wall_seconds"] != rows[3]["wall_seconds"]
    assert [float(row["lr"]) for row in rows[:4]] == [0.05, 0.05, 0.05, 0.2]
    chosen = max(rows[:4], key=lambda row: float(row["validation_accuracy"]))
    assert chosen["candidate"] == rows[4]["config"], (chosen, rows[4])
    # --replot redraws the PNG from the CSV alone.
    from experiments import best_mlp

    (tmp_path / "best_mlp_quick.png").unlink()
    assert best_mlp.main(["--quick", "--replot", "--out", str(tmp_path)]) == 0
    _assert_png(tmp_path / "best_mlp_quick.png")


def test_best_mlp_scores_a_tta_candidate_on_the_mirror_averaged_logits():
    from experiments import best_mlp
    from mlp_jax import Config
    from mlp_jax.model import MLP
    from mlp_jax.steps import create_train_state

    images = np.random.default_rng(0).integers(0, 256, (8, 5, 5, 1), dtype=np.uint8)
    state = create_train_state(
        jax.random.PRNGKey(0), MLP((6,), 3), optax.sgd(0.1), jnp.asarray(images[:1])
    )
    logits = state.apply_fn({"params": state.params}, images)
    mirrored = state.apply_fn({"params": state.params}, images[:, :, ::-1])
    flipped = best_mlp._evaluated_as(state, Config(tta="flip"))
    chex.assert_trees_all_close(
        flipped.apply_fn({"params": flipped.params}, images), (logits + mirrored) / 2, rtol=1e-5
    )
    plain = best_mlp._evaluated_as(state, Config())
    chex.assert_trees_all_equal(plain.apply_fn({"params": plain.params}, images), logits)


def test_best_mlp_picks_over_earlier_runs_rows_too(tmp_path, capsys):
    from experiments import best_mlp

    first, second = tmp_path / "first", tmp_path / "second"
    argv = ["--quick", "--selection-only", "--candidates", "0", "--out", str(first)]
    assert best_mlp.main(argv) == 0
    earlier = _rows(first / "best_mlp_quick.csv")
    # Make the earlier row the best, so the pick must come from it and not from this run.
    earlier[0]["validation_accuracy"] = "1.0"
    with open(first / "best_mlp_quick.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(earlier[0]))
        writer.writeheader()
        writer.writerows(earlier)
    argv = ["--quick", "--candidates", "1", "--previous", str(first / "best_mlp_quick.csv")]
    assert best_mlp.main([*argv, "--out", str(second)]) == 0
    rows = _rows(second / "best_mlp_quick.csv")
    selection = [row for row in rows if row["phase"] == "selection (validation)"]
    assert [row["candidate"] for row in selection] == [
        "2 layers 32",
        "2 layers 32, flip, shift:1, EMA 0.9",
    ]
    assert {row["config"] for row in rows if row["phase"] == "final (test)"} == {"2 layers 32"}
    assert "from an earlier run: 2 layers 32, lr 0.05: validation accuracy 100.00%" in (
        capsys.readouterr().out
    )
    earlier[0]["candidate"] = "a candidate this script no longer has"
    with open(first / "best_mlp_quick.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(earlier[0]))
        writer.writeheader()
        writer.writerows(earlier)
    with pytest.raises(SystemExit, match="unknown candidate 'a candidate this script"):
        best_mlp.main([*argv, "--out", str(second)])


def test_best_mlp_selection_only_never_touches_the_test_split(tmp_path, capsys):
    from experiments import best_mlp

    assert best_mlp.main(["--quick", "--selection-only", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "validation accuracy" in out and "Best MLP" not in out
    assert [path.name for path in tmp_path.iterdir()] == ["best_mlp_quick.csv"]  # no PNG
    with open(tmp_path / "best_mlp_quick.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["phase"] for row in rows] == ["selection (validation)"] * 4  # nothing on test
    assert all(0 < float(row["validation_accuracy"]) <= 1 for row in rows)


def test_script_flags_reject_bad_input():
    from experiments import depth

    with pytest.raises(SystemExit) as error:
        depth.main(["--seeds", "three"])
    assert error.value.code == 2


def test_predict_demo_draws_a_seven_and_shows_what_the_net_saw(trained_run, tmp_path, capsys):
    module = importlib.import_module("experiments.predict_demo")
    assert module.main(["--workdir", str(trained_run[0]), "--out", str(tmp_path)]) == 0
    for name in ("seven.png", "seven_seen.png", "predict_demo.png"):
        _assert_png(tmp_path / name)
    assert capsys.readouterr().out.startswith("seven.png: ")


def test_recipe_searches_on_validation_and_scores_the_pick_on_test(tmp_path):
    rows = _run("recipe", tmp_path)
    searched = [row for row in rows if row["split"] == "validation"]
    assert {row["stage"] for row in searched} == {"1", "2"}
    assert {(row["schedule"], float(row["lr"])) for row in searched if row["stage"] == "1"} == {
        (schedule, lr) for schedule in ("constant", "cosine") for lr in (0.02, 0.05)
    }
    # The test split scores only the final recipes (the pick, and the default if it differs).
    assert 1 <= len([row for row in rows if row["split"] == "test"]) <= 2
    _assert_png(tmp_path / "recipe_quick.png")


def test_accumulation_tracks_the_param_gap_after_every_big_batch_update(tmp_path):
    rows = _run("accumulation", tmp_path)
    assert [int(row["update"]) for row in rows] == [1, 2, 3, 4, 5]
    assert all(float(row["max_abs_param_difference"]) < 1e-5 for row in rows)
    _assert_png(tmp_path / "accumulation_quick.png")


def test_shifts_scores_every_direction_and_distance(tmp_path):
    rows = _run("shifts", tmp_path)
    assert {int(row["distance_pixels"]) for row in rows} == {0, 1, 2, 3}
    assert len(rows) == 4 * 5  # 4 distances x 5 directions x 1 seed
    unshifted = {float(row["test_accuracy"]) for row in rows if row["distance_pixels"] == "0"}
    assert len(unshifted) == 1  # a 0-pixel shift is the same test set in every direction
    _assert_png(tmp_path / "shifts_quick.png")


def test_templates_snapshots_the_kernel_at_init_after_some_updates_and_at_the_end(tmp_path):
    rows = _run("templates", tmp_path)
    # quick: 512 images, batch 128, 2 epochs = 8 updates, so the snapshots are 0 and 8.
    assert [int(row["updates"]) for row in rows] == [0, 8]
    _assert_png(tmp_path / "templates_quick.png")


def test_lecture5_trains_the_bias_free_net_and_its_bias_ablation(tmp_path):
    rows = _run("lecture5", tmp_path)
    assert [row["bias"] for row in rows] == ["False"] * 2 + ["True"] * 2  # 2 epochs each
    params = [int(row["params"]) for row in rows]
    assert params[0] == 784 * 32 + 32 * 10 and params[2] == params[0] + 32 + 10
    _assert_png(tmp_path / "lecture5_quick.png")


def test_ta_recipe_uses_pytorchs_rmsprop_defaults(tmp_path):
    import numpy as np

    from experiments.ta_recipe import torch_rmsprop

    params, grads = {"w": np.ones(2, np.float32)}, {"w": np.array([0.5, -2.0], np.float32)}
    updates, _ = torch_rmsprop().update(grads, torch_rmsprop().init(params))
    # First step from v = 0: v = 0.01 g^2, so the step is -0.01 g / (0.1 |g|) = -0.1 sign(g).
    np.testing.assert_allclose(updates["w"], [-0.1, 0.1], rtol=1e-5)
    rows = _run("ta_recipe", tmp_path)
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    _assert_png(tmp_path / "ta_recipe_quick.png")


def test_normalization_picks_an_lr_per_scaling_on_validation_then_tests_it(tmp_path):
    rows = _run("normalization", tmp_path)
    scalings = ["none (raw 0..255)", "divide by 255", "(x - 0.5) / 0.5 (TA deck)", "standardise"]
    assert list(dict.fromkeys(row["scaling"] for row in rows)) == scalings
    for scaling in scalings:
        mine = [row for row in rows if row["scaling"] == scaling]
        assert {float(row["lr"]) for row in mine if row["split"] == "validation"} == {1e-4, 0.05}
        assert len([row for row in mine if row["split"] == "test"]) == 1
    _assert_png(tmp_path / "normalization_quick.png")


def test_sampling_with_replacement_leaves_about_a_third_of_the_images_unseen(tmp_path):
    rows = _run("sampling", tmp_path)
    sampled = [row for row in rows if row["sampling"] == "sampled with replacement"]
    assert len(sampled) == 2 and len(rows) == 4  # 2 epochs each
    assert all(0.3 < float(row["unseen_fraction"]) < 0.45 for row in sampled)  # (1-1/N)^N
    _assert_png(tmp_path / "sampling_quick.png")


def test_losses_compares_mse_and_cross_entropy_at_validation_picked_lrs(tmp_path):
    import numpy as np

    from experiments.losses import mse_loss

    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], np.float32))
    # (0.5-1)^2 + 2 * 0.25^2 = 0.375; the second example is masked out.
    assert float(mse_loss(logits, np.array([0, 0]), np.array([1.0, 0.0]))) == pytest.approx(0.375)
    rows = _run("losses", tmp_path)
    assert {row["loss"] for row in rows if row["split"] == "test"} == {
        "cross-entropy",
        "MSE on softmax",
    }
    _assert_png(tmp_path / "losses_quick.png")


def test_lr_find_compare_suggests_from_both_finders_and_scores_them(tmp_path):
    rows = _run("lr_find_compare", tmp_path)
    grid = [row for row in rows if row["finder"] == "lr_find"]
    sweep = [row for row in rows if row["finder"] == "range_test"]
    assert [float(row["lr"]) for row in grid] == [1e-4, 0.002154, 0.04642, 1.0]
    # Lightning's schedule: 1e-8 * 1e8 ** (step / 100), one row per step until it stops.
    assert float(sweep[0]["lr"]) == 1e-8 and 11 < len(sweep) <= 100
    assert float(sweep[-1]["lr"]) == pytest.approx(1e-8 * 1e8 ** ((len(sweep) - 1) / 100))
    _assert_png(tmp_path / "lr_find_compare_quick.png")


def test_the_range_test_suggests_the_steepest_descent_of_the_smoothed_loss():
    from experiments.lr_find_compare import suggestion_of

    losses = [5.0] * 10 + [4.0, 3.5, 2.0, 1.9, 1.8, 9.0]
    lrs = [10.0**i for i in range(len(losses))]
    # np.gradient of losses[10:-1] = 4.0, 3.5, 2.0, 1.9, 1.8 is steepest (-1.0) at its index 1.
    assert suggestion_of(lrs, losses) == lrs[11]


def test_every_mutant_of_the_mutation_run_finds_its_line_once():
    """A mutant whose text no longer occurs tests nothing: experiments/mutation.py would skip it."""
    from experiments.mutation import MUTANTS, ROOT

    stale = [
        f"{m.name}: {(ROOT / m.path).read_text().count(m.old)} matches of {m.old!r}"
        for m in MUTANTS
        if (ROOT / m.path).read_text().count(m.old) != 1
    ]
    assert not stale, stale


def test_compare_epoch_finds_a_checkout_bit_identical_to_itself():
    from experiments.compare_epoch import ROOT, compare, load_steps

    row = compare(load_steps(ROOT).train_epoch, batch_size=256, epochs=3, quick=True)
    assert row["bit_identical_params"]
    assert row["this_median_s"] > 0 and row["other_median_s"] > 0


def test_compare_epoch_sees_a_different_step_as_different_params(tmp_path):
    from experiments.compare_epoch import ROOT, compare, load_steps

    (tmp_path / "mlp_jax").mkdir()
    source = (ROOT / "mlp_jax" / "steps.py").read_text()
    changed = source.replace(
        "jax.random.permutation(key, images.shape[0])", "jnp.arange(images.shape[0])"
    )
    assert changed != source  # the epoch now visits the examples in order
    (tmp_path / "mlp_jax" / "steps.py").write_text(changed)
    row = compare(load_steps(tmp_path).train_epoch, batch_size=256, epochs=3, quick=True)
    assert not row["bit_identical_params"]
