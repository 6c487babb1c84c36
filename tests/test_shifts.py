"""experiments/shifts.py's shift moves pixels and fills with black."""

import numpy as np

from experiments.shifts import shift


def test_shift_moves_pixels_and_fills_the_vacated_edge_with_black():
    images = np.arange(1, 17, dtype=np.uint8).reshape(1, 4, 4, 1)
    right = shift(images, 0, 1)[0, ..., 0]
    np.testing.assert_array_equal(right[:, 0], 0)
    np.testing.assert_array_equal(right[:, 1:], images[0, :, :3, 0])
    up = shift(images, -2, 0)[0, ..., 0]
    np.testing.assert_array_equal(up[:2], images[0, 2:, :, 0])
    np.testing.assert_array_equal(up[2:], 0)
    np.testing.assert_array_equal(shift(images, 0, 0), images)
