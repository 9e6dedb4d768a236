"""The per-face regions of a group photo (``app.face.regions``): a smooth partition between face
centres that leaves every other face alone."""
from __future__ import annotations

import numpy as np
import pytest

from app.face.regions import face_centre, region_in_box, region_weights

CENTRES = np.array([[100.0, 120.0], [330.0, 100.0], [560.0, 140.0], [800.0, 110.0]])


def grid(width: int = 900, height: int = 260) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.stack([xs, ys], axis=-1)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_regions_partition_the_image_and_leave_other_centres_alone(count: int) -> None:
    centres = CENTRES[:count]
    weights = region_weights(grid(), centres)
    assert weights.shape == (260, 900, count)
    assert (weights >= 0).all() and (weights <= 1).all()
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-9)
    at_centres = region_weights(centres, centres)
    np.testing.assert_allclose(at_centres, np.eye(count), atol=1e-12)   # 1 at its own, 0 at the others'


def test_a_region_is_smooth_across_the_split() -> None:
    """No seam: the largest step between neighbouring pixels stays small (a wide feather)."""
    weights = region_weights(grid(), CENTRES[:2])[..., 0]
    step = max(np.abs(np.diff(weights, axis=1)).max(), np.abs(np.diff(weights, axis=0)).max())
    assert step < 0.03          # smoothstep over 2 x 0.15 x 231 px: at most 0.022 per pixel
    midpoint = CENTRES[:2].mean(axis=0)
    np.testing.assert_allclose(region_weights(midpoint, CENTRES[:2]), [0.5, 0.5])   # half on the bisector


def test_one_face_is_its_whole_image_and_bad_centres_are_refused() -> None:
    assert (region_weights(grid(20, 10), CENTRES[:1]) == 1).all()
    with pytest.raises(ValueError, match="share a centre"):
        region_weights(grid(20, 10), np.array([[5.0, 5.0], [5.0, 5.0]]))
    with pytest.raises(ValueError, match="at least one"):
        region_weights(grid(20, 10), np.zeros((0, 2)))


def test_a_region_in_a_box_is_the_partition_there() -> None:
    box = (200, 30, 420, 200)
    inside = region_in_box(CENTRES[:3], 1, box)
    assert inside.shape == (170, 220) and inside.dtype == np.float32
    whole = region_weights(grid(), CENTRES[:3])[30:200, 200:420, 1]
    np.testing.assert_allclose(inside, whole, atol=1e-6)


def test_a_face_centre_is_its_landmarks_box_centre() -> None:
    assert face_centre(np.array([[0.0, 10.0], [4.0, 2.0], [2.0, 6.0]])).tolist() == [2.0, 6.0]
