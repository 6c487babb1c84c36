"""Issue kind "hand-edited or corrupt run files": one line naming the file (not a flag the user
did not pass), and a checkpoint whose record is unreadable is set aside quietly."""

import json
import shutil

import pytest

from tests.faults import TINY, command, one_line, tree_hash


def _edit_json(path, change):
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


@pytest.mark.parametrize("module", ["evaluate", "plot", "train"])
def test_a_string_where_metrics_hold_a_number_names_the_line(run_copy, module):
    metrics = run_copy / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    record = json.loads(lines[0])
    record["test_accuracy"] = "high"
    metrics.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    before = tree_hash(run_copy / "run")
    args = [*TINY, "--epochs", "3"] if module == "train" else []
    code, _, err = command(run_copy, module, "--workdir", "run", *args)
    if module == "evaluate" and code == 0:  # evaluate reads only the checkpoint's own epoch
        return
    assert code == 2, err
    one_line(err, "metrics.jsonl line 1", '"test_accuracy" must be a number')
    assert tree_hash(run_copy / "run") == before


BAD_VALUES = [
    (lambda info: info["config"].update(layers="2"), ['"layers" must be a number']),
    (lambda info: info["config"].update(hidden=16), ["wrong type"]),
    (lambda info: info["config"].update(dropout=1.5), ['"dropout" must be in [0, 1)']),
]


@pytest.mark.parametrize("change, words", BAD_VALUES)
@pytest.mark.parametrize("module", ["train", "evaluate", "plot"])
def test_a_bad_value_in_config_json_is_never_a_traceback(run_copy, change, words, module):
    # config.json is what the run wrote for people; the checkpoints hold what resumes, so a resume
    # writes it again, and evaluate and plot do not read its config.
    _edit_json(run_copy / "run" / "config.json", change)
    saved = tree_hash(run_copy / "run" / "checkpoints")
    args = [*TINY, "--epochs", "3"] if module == "train" else []
    code, _, err = command(run_copy, module, "--workdir", "run", *args)
    assert code == 0 and "Traceback" not in err, err
    if module == "train":
        rewritten = json.loads((run_copy / "run" / "config.json").read_text())["config"]
        assert (rewritten["layers"], rewritten["hidden"], rewritten["dropout"]) == (2, [16], 0.0)
    else:
        assert tree_hash(run_copy / "run" / "checkpoints") == saved


@pytest.mark.parametrize("change, words", BAD_VALUES)
def test_a_bad_value_in_config_json_before_any_checkpoint_names_the_file(run_copy, change, words):
    shutil.rmtree(run_copy / "run" / "checkpoints")  # the config then comes from config.json
    _edit_json(run_copy / "run" / "config.json", change)
    before = tree_hash(run_copy / "run")
    code, _, err = command(run_copy, "train", "--workdir", "run", *TINY, "--epochs", "3")
    assert code == 2, err
    line = one_line(err, "run/config.json", words[0])
    assert "--layers" not in line and "--dropout" not in line
    assert tree_hash(run_copy / "run") == before


@pytest.mark.parametrize("change, words", BAD_VALUES)
def test_a_bad_value_in_a_checkpoints_record_sets_it_aside_naming_the_value(
    run_copy, change, words
):
    _edit_json(run_copy / "run" / "checkpoints" / "2" / "info" / "metadata", change)
    code, out, err = command(run_copy, "evaluate", "--workdir", "run")
    assert code == 0, err
    assert "(epoch 1" in out
    one_line(err, "checkpoints/2", "skipped", words[0])


def test_a_checkpoint_with_an_unreadable_record_is_skipped_quietly(run_copy):
    info = run_copy / "run" / "checkpoints" / "2" / "info" / "metadata"  # orbax's JSON
    info.write_text('{"epoch": "two", "config": 5}')
    code, out, err = command(run_copy, "evaluate", "--workdir", "run")
    assert code == 0, err
    assert "(epoch 1" in out
    one_line(err, "checkpoints/2", "skipped")


def test_a_checkpoint_with_damaged_arrays_is_skipped_in_one_line(run_copy):
    """orbax's failed reads echo long TensorStore specs and tracebacks of collected coroutines."""
    arrays = run_copy / "run" / "checkpoints" / "2" / "state" / "ocdbt.process_0" / "d"
    largest = max(arrays.iterdir(), key=lambda path: path.stat().st_size)
    with open(largest, "r+b") as file:
        file.truncate(1000)
    code, out, err = command(run_copy, "evaluate", "--workdir", "run")
    assert code == 0, err
    assert "(epoch 1" in out
    line = one_line(err, "checkpoints/2", "cannot be read", "skipped")
    assert "TensorStore" not in line and len(line) < 300, line
