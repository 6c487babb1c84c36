"""Issue kind "closed stdout" (`>&-`): every command ends in one line on stderr, no traceback;
train saves nothing half-done and the run resumes."""

import pytest
from PIL import Image

from tests.faults import TINY, command, one_line, tree_hash


def test_train_with_stdout_closed_stops_before_epoch_1_and_saves_nothing_wrong(tmp_path):
    code, _, err = command(
        tmp_path, "train", *TINY, "--epochs", "1", "--workdir", "run", close_stdout=True
    )
    assert code == 1
    one_line(err, "stdout cannot be written", "stdout is closed")
    code, out, err = command(tmp_path, "train", *TINY, "--epochs", "1", "--workdir", "run")
    assert code == 0 and "epoch 1/1" in out, err


@pytest.mark.parametrize(
    "module, args",
    [
        ("evaluate", []),
        ("plot", ["--out", "figures"]),
        ("export", ["--out", "model.bin"]),
        ("predict", ["digit.png"]),
    ],
)
def test_reading_commands_finish_their_work_and_say_stdout_was_closed(run_copy, module, args):
    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (12, 6, 16, 22))
    digit.save(run_copy / "digit.png")
    before = tree_hash(run_copy / "run")
    code, _, err = command(run_copy, module, "--workdir", "run", *args, close_stdout=True)
    assert code == 1
    one_line(err, "stdout cannot be written", "the command finished")
    assert tree_hash(run_copy / "run") == before
