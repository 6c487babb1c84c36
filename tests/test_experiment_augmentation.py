"""experiments/augmentation.py --quick: the augmented grid and epoch times with and without."""

import csv

from experiments import augmentation


def test_augmentation_study_writes_the_grid_and_both_timings(tmp_path):
    assert augmentation.main(["--quick", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "augmentation_quick.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["augment"] for row in rows] == ["none", "flip,shift:2"]
    assert all(float(row["median_epoch_seconds"]) > 0 for row in rows)
    assert (tmp_path / "augmentation_quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
