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


def edge_coloured_image() -> np.ndarray:
    """100 x 160 image whose four borders have four colours, with a noisy inside."""
    rng = np.random.default_rng(3)
    img = rng.integers(40, 200, (100, 160, 3), dtype=np.uint8)
    img[0, :], img[-1, :] = (255, 0, 0), (0, 255, 0)
    img[:, 0], img[:, -1] = (0, 0, 255), (255, 255, 0)
    return img


def test_box_transform_maps_the_box_corners_to_the_crop_corners() -> None:
    for x, y, size in ((10.0, 20.0, 100.0), (-50.0, -30.0, 400.0), (3.5, 7.25, 17.0)):
        t = fc.transform_from_box(x, y, size)
        corners = fc.transform_points(np.array([[x, y], [x + size, y], [x, y + size], [x + size, y + size]]), t.M_o2c)
        assert np.allclose(corners, [[0, 0], [512, 0], [0, 512], [512, 512]], atol=1e-3)
        assert np.allclose(t.M_o2c @ t.M_c2o, np.eye(3), atol=1e-4)
        assert fc.box_from_params(fc.params_from_box(x, y, size)) == pytest.approx((x, y, size))
    with pytest.raises(ValueError, match="positive side"):
        fc.transform_from_box(0, 0, 0)
    with pytest.raises(ValueError, match="finite"):
        fc.transform_from_box(float("nan"), 0, 10)


def test_a_box_reaching_outside_the_image_is_padded_with_its_edge_colour() -> None:
    """Box (-80, -100, 320) over a 160 x 100 image: the image lands, unsquashed, in the crop's
    [128, 384) x [160, 320) and the rest repeats the nearest edge pixel (no black)."""
    img = edge_coloured_image()
    t = fc.transform_from_box(-80, -100, 320)
    for precise in (True, False):
        crop = fc.warp_to_crop(img, t, precise=precise, border="replicate")
        assert crop.shape == (512, 512, 3)
        assert (crop.reshape(-1, 3).max(axis=1) > 0).all()                     # no black pixel
        # top left and bottom right: the corner pixels; above the image: its top row, stretched 1.6x
        assert (crop[:150, :120] == img[0, 0]).all() and (crop[330:, 395:] == img[-1, -1]).all()
        assert (crop[:150, 200:300] == (255, 0, 0)).all()
        # inside: the image scaled uniformly by 512 / 320 (a resize of it, within interpolation error)
        inside = crop[164:316, 132:380].astype(int)
        expected = cv2.resize(img, (256, 160), interpolation=cv2.INTER_LINEAR)[4:156, 4:252].astype(int)
        assert np.abs(inside - expected).mean() < 12
    # the default keeps the official framing's black outside
    black = fc.warp_to_crop(img, t, precise=True)
    assert (black[:150, :120] == 0).all() and (black[:150, 200:300] == 0).all()
    # a box wholly outside the image still gives the nearest edge colour
    away = fc.warp_to_crop(img, fc.transform_from_box(500, 400, 64), precise=True, border="replicate")
    assert (away == img[-1, -1]).all()
    with pytest.raises(ValueError, match="border"):
        fc.warp_affine_precise(img, t.M_o2c, (512, 512), border="wrap")  # type: ignore[arg-type]


def test_replicated_border_matches_opencv() -> None:
    img = cv2.GaussianBlur(edge_coloured_image(), (3, 3), 1)
    M = cv2.getRotationMatrix2D((80, 50), 17, 1.9)
    M[:, 2] += (60, 90)
    ours = fc.warp_affine_precise(img, M, (300, 280), border="replicate").astype(int)
    cv = cv2.warpAffine(img, M, (300, 280), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(int)
    assert np.abs(ours - cv).max() <= 2
