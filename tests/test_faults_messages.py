"""Issue kind "messages that mislead": each answer names the real problem and a flag the
command accepts."""

import shutil

from tests.faults import TINY, command, one_line
from tests.test_workdir import write_idx_dir


def test_a_huge_eval_batch_size_runs_as_min_batch_n(tmp_path):
    code, out, err = command(
        tmp_path, "train", *TINY, "--epochs", "1", "--eval-batch-size", "1000000000"
    )
    assert code == 0, err
    assert "test accuracy" in out


def test_evaluate_epoch_lists_the_epochs_that_exist(run_copy):
    code, _, err = command(run_copy, "evaluate", "--workdir", "run", "--epoch", "7")
    assert code == 2
    one_line(err, "no checkpoint of epoch 7", "(epochs: 1, 2)")


def test_usage_errors_of_evaluate_and_plot_are_one_line(run_copy):
    for module, args in [
        ("evaluate", ["--epoch", "abc"]),
        ("plot", ["--model", "x"]),
        ("evaluate", []),
    ]:
        workdir = ["--workdir", "run"] if args else []
        code, _, err = command(run_copy, module, *workdir, *args)
        assert code == 2
        assert err.startswith(f"mlp_jax.{module}: error:") and "usage" not in err
        one_line(err)


def test_evaluate_of_a_run_whose_idx_dir_moved_names_a_flag_it_accepts(tmp_path):
    write_idx_dir(tmp_path / "idx")
    code, _, err = command(
        tmp_path, "train", *TINY[2:], "--epochs", "1", "--idx-dir", "idx", "--workdir", "run"
    )
    assert code == 0, err
    shutil.move(tmp_path / "idx", tmp_path / "moved")
    code, _, err = command(tmp_path, "evaluate", "--workdir", "run")
    assert code == 2
    one_line(err, "--idx-dir", "does not exist")
    code, out, err = command(tmp_path, "evaluate", "--workdir", "run", "--idx-dir", "moved")
    assert code == 0 and "test loss" in out, err


def test_a_typo_among_3000_learning_rates_names_the_bad_value(tmp_path):
    values = [f"{0.001 + i * 1e-6:.6f}" for i in range(3000)]
    values[1234] = "0.0O1"
    code, _, err = command(tmp_path, "train", *TINY, "--lr-sweep", ",".join(values))
    assert code == 2
    line = one_line(err, "--lr-sweep", "item 1235 of 3000", "'0.0O1'")
    assert len(line) < 300


def test_an_unwritable_cache_folder_trains_without_the_cache_in_one_line(tmp_path):
    (tmp_path / "not_a_folder").write_text("a file where the cache folder would go")
    env = {"XDG_CACHE_HOME": str(tmp_path / "not_a_folder"), "JAX_COMPILATION_CACHE_DIR": ""}
    code, out, err = command(tmp_path, "train", *TINY, "--epochs", "1", env=env)
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("compilation cache off")]
    assert len(notes) == 1 and "cannot write" in notes[0], out
    assert err.count("Warning") == 0, err
    code, _, err = command(
        tmp_path, "train", *TINY, "--epochs", "1", "--compilation-cache", "not_a_folder/xla"
    )
    assert code == 2
    one_line(err, "--compilation-cache", "cannot write")


def test_plot_of_a_run_without_a_finished_epoch_is_one_line(tmp_path):
    code, _, err = command(
        tmp_path, "train", *TINY, "--epochs", "1", "--workdir", "run", close_stdout=True
    )
    assert code == 1  # stopped before epoch 1 (stdout closed): config.json, no metrics
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    code, _, err = command(tmp_path, "plot", "--workdir", "run")
    assert code == 2
    one_line(err, "has not finished an epoch")
    assert not (tmp_path / "run" / "curves.png").exists()


def test_a_run_that_cannot_resume_names_the_flag_that_helps(run_copy):
    code, _, err = command(run_copy, "train", *TINY, "--epochs", "1", "--workdir", "run")
    assert code == 2
    one_line(err, "error: --epochs: must be 2 or more (the run in run is at epoch 2)")
    for record in (run_copy / "run" / "checkpoints").glob("*/info/metadata"):
        record.write_text('{"epoch": "two", "config": 5}')  # every checkpoint unreadable
    code, _, err = command(run_copy, "train", *TINY, "--epochs", "3", "--workdir", "run")
    assert code == 2
    one_line(err, "error: --workdir: no readable checkpoint", "--fresh moves this run aside")


def test_an_unwritable_selection_json_is_named_as_typed(tmp_path):
    (tmp_path / "run" / "selection.json").mkdir(parents=True)  # a folder where the file goes
    flags = [*TINY, "--epochs", "1", "--validation-split", "0.1", "--workdir", "run"]
    code, _, err = command(tmp_path, "train", *flags)
    assert code == 1
    one_line(err, "cannot write run/selection.json", "Is a directory")


def test_an_unwritable_tensorboard_folder_is_one_line(tmp_path):
    code, _, err = command(tmp_path, "train", *TINY, "--epochs", "1", "--workdir", "run")
    assert code == 0, err
    shutil.rmtree(tmp_path / "run" / "tensorboard")
    (tmp_path / "run" / "tensorboard").write_text("")  # a file where the folder goes
    code, _, err = command(tmp_path, "train", *TINY, "--epochs", "2", "--workdir", "run")
    assert code == 1
    one_line(err, "cannot write run/tensorboard")
