"""Crop geometry, paste-back and eye/lip ratios on landmark sets."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from app.face import crop as fc
from app.face.layout import LANDMARKS_203
from app.face.ratios import eye_open_ratios, lip_open_ratio


def synthetic_face(center=(300.0, 320.0), size=120.0, angle_deg=0.0, seed=0) -> np.ndarray:
    """203 points: eye contours, mouth corners and inner lips where the layout expects them."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-0.5, 0.5, (203, 2)) * [0.9, 1.2]       # face outline cloud
    eye = lambda cx: np.array([[cx - 0.12, -0.2], [cx, -0.24], [cx + 0.12, -0.2], [cx, -0.16]])  # noqa: E731
    for quad, cx in (((0, 6, 12, 18), -0.2), ((24, 30, 36, 42), 0.2)):
        pts[list(quad)] = eye(cx)
    pts[48], pts[66] = [-0.15, 0.25], [0.15, 0.25]
    pts[90], pts[102] = [0.0, 0.22], [0.0, 0.28]
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (pts @ rot.T * size + center).astype(np.float32)


def test_crop_puts_face_upright_and_centred() -> None:
    for angle in (0.0, 17.0, -40.0):
        lmk = synthetic_face(angle_deg=angle)
        t = fc.crop_transform(lmk, LANDMARKS_203, fc.AVATAR_CROP)
        mid_eye, mouth = fc.anchors_from_landmarks(lmk, LANDMARKS_203)
        e, m = fc.transform_points(np.stack([mid_eye, mouth]), t.M_o2c)
        assert abs(e[0] - m[0]) < 1e-3 and m[1] > e[1]          # mouth straight below the eyes
        assert np.allclose(t.M_o2c @ t.M_c2o, np.eye(3), atol=1e-4)
        crop_pts = fc.transform_points(lmk, t.M_o2c)
        assert (crop_pts > 0).all() and (crop_pts < 512).all()   # 2.3x the face: all of it inside


def test_crop_is_equivariant_to_moving_the_image() -> None:
    lmk = synthetic_face()
    shift = np.array([37.0, -12.0], np.float32)
    a = fc.crop_transform(lmk, LANDMARKS_203, fc.DRIVING_CROP)
    b = fc.crop_transform(lmk + shift, LANDMARKS_203, fc.DRIVING_CROP)
    p = np.array([[100.0, 200.0]])
    assert np.allclose(fc.transform_points(p, a.M_o2c), fc.transform_points(p + shift, b.M_o2c), atol=1e-3)


def test_ratios_are_similarity_invariant_and_track_opening() -> None:
    lmk = synthetic_face()
    moved = synthetic_face(center=(50, 60), size=300, angle_deg=33)
    assert np.allclose(eye_open_ratios(lmk, LANDMARKS_203), eye_open_ratios(moved, LANDMARKS_203), rtol=1e-4)
    assert np.allclose(lip_open_ratio(lmk, LANDMARKS_203), lip_open_ratio(moved, LANDMARKS_203), rtol=1e-4)
    closed = lmk.copy()
    closed[102] = closed[90]
    assert lip_open_ratio(closed, LANDMARKS_203)[0, 0] == 0 < lip_open_ratio(lmk, LANDMARKS_203)[0, 0]
    assert eye_open_ratios(lmk, LANDMARKS_203).shape == (1, 2)


@pytest.mark.parametrize("bad", [np.zeros((68, 2)), np.zeros((203,)), np.zeros((2, 3, 203, 2))])
def test_wrong_landmark_shapes_raise(bad) -> None:
    with pytest.raises(ValueError, match="expected shape"):
        eye_open_ratios(bad, LANDMARKS_203)
    if bad.ndim == 2:
        with pytest.raises(ValueError, match="expected shape 203x2"):
            fc.crop_transform(bad, LANDMARKS_203, fc.AVATAR_CROP)


def test_nan_landmarks_raise() -> None:
    lmk = synthetic_face()
    lmk[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fc.crop_transform(lmk, LANDMARKS_203, fc.AVATAR_CROP)


def test_precise_warp_matches_opencv_within_its_fixed_point_error() -> None:
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), (5, 5), 2)
    M = cv2.getRotationMatrix2D((200, 150), 23, 1.3)
    ours = fc.warp_affine_precise(img, M, (256, 200)).astype(int)
    ref = cv2.warpAffine(img, M, (256, 200), flags=cv2.INTER_LINEAR).astype(int)
    assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 3
    shift = np.float64([[1, 0, -10], [0, 1, -20]])                # integer shift: exact copy
    assert np.array_equal(fc.warp_affine_precise(img, shift, (100, 50)), img[20:70, 10:110])
    gray = img[..., 0]
    assert fc.warp_affine_precise(gray, M, (64, 64)).shape == (64, 64)


def test_box_limited_paste_equals_full_blend() -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    t = fc.crop_transform(synthetic_face(center=(320, 240), size=90), LANDMARKS_203, fc.AVATAR_CROP)
    mask_crop = np.zeros((512, 512, 3), np.uint8)
    cv2.circle(mask_crop, (256, 256), 200, (255, 255, 255), -1)
    paste = fc.prepare_paste_mask(mask_crop, t.M_c2o, (640, 480))
    x0, y0, x1, y1 = paste.box
    assert 0 < x0 < x1 < 640 and 0 < y0 < y1 < 480
    full_warp = fc.warp_affine_precise(crop, t.M_c2o, (640, 480))
    full = np.clip(paste.mask * full_warp + (1 - paste.mask) * image, 0, 255).astype(np.uint8)
    out = fc.paste_back(crop, t.M_c2o, image, paste, precise=True).astype(int)
    assert np.abs(out - full).max() <= 1          # float rounding of the shifted grid only
    fast = fc.paste_back(crop, t.M_c2o, image, paste)
    outside = np.ones(image.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(fast[outside], image[outside]) and np.array_equal(out[outside], image[outside])
    with pytest.raises(ValueError, match="paste mask: expected 100x100"):
        fc.paste_back(crop, t.M_c2o, image[:100, :100], paste)


def test_feathered_mask_profile() -> None:
    from app.face.mask import feathered_square_mask

    m = feathered_square_mask(512, feather=24)
    assert m.shape == (512, 512, 3) and m.dtype == np.uint8
    assert m[256, 256, 0] == 255 and m[0, 256, 0] < 10 and m[0, 0, 0] == 0
    ramp = m[256, :40, 0].astype(int)
    assert (np.diff(ramp) >= 0).all() and ramp[30] == 255
    assert np.array_equal(m[..., 0], m[..., 0].T) and np.array_equal(m[..., 0], m[::-1, ::-1, 0])
    with pytest.raises(ValueError):
        feathered_square_mask(64, feather=40)
