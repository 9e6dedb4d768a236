"""Motion math: properties that hold whatever the weights, and clear errors on bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engines import motion


def info(b: int = 1, seed: int = 0) -> motion.KeypointInfo:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return motion.KeypointInfo(pitch=r(b, 1) * 10, yaw=r(b, 1) * 10, roll=r(b, 1) * 10, t=r(b, 3) * 0.1,
                               exp=r(b, 21, 3) * 0.05, scale=1.5 + r(b, 1).abs(), kp=r(b, 21, 3) * 0.3)


def test_headpose_expectation_of_bins() -> None:
    onehot = torch.full((3, 66), -1e4)
    for row, i in enumerate((0, 33, 65)):
        onehot[row, i] = 1e4
    assert torch.allclose(motion.headpose_bins_to_degrees(onehot), torch.tensor([-97.5, 1.5, 97.5]))
    assert torch.allclose(motion.headpose_bins_to_degrees(torch.zeros(1, 66)), torch.tensor([0.0]))
    degrees = torch.tensor([[12.0]])
    assert motion.headpose_bins_to_degrees(degrees) is degrees  # already degrees: passed through


def test_rotation_is_orthonormal_and_composes_pitch_yaw_roll_in_order() -> None:
    p, y, r = torch.tensor([20.0]), torch.tensor([-35.0]), torch.tensor([50.0])
    rot = motion.rotation_matrix(p, y, r)[0].double()
    assert torch.allclose(rot @ rot.T, torch.eye(3, dtype=torch.float64), atol=1e-6)
    assert math.isclose(torch.linalg.det(rot).item(), 1.0, abs_tol=1e-6)
    only = lambda a, b, c: motion.rotation_matrix(torch.tensor([a]), torch.tensor([b]), torch.tensor([c]))[0].double()  # noqa: E731
    # Row-vector convention: kp @ rot == kp @ Rx^T @ Ry^T @ Rz^T (pitch first, then yaw, then roll).
    assert torch.allclose(rot, only(20, 0, 0) @ only(0, -35, 0) @ only(0, 0, 50), atol=1e-6)
    # Positive yaw turns +x towards -z (Ry = [[c,0,s],[0,1,0],[-s,0,c]] on column vectors).
    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64) @ only(0, 90, 0)
    assert torch.allclose(x, torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64), atol=1e-6)


def test_transform_keypoints_ignores_tz_and_scales_expression() -> None:
    kp = torch.zeros(1, 21, 3)
    exp = torch.ones(1, 21, 3)
    x = motion.transform_keypoints(kp, torch.eye(3)[None], exp, torch.tensor([[2.0]]), torch.tensor([[0.5, -1.0, 9.0]]))
    assert torch.allclose(x[0, 0], torch.tensor([2.5, 1.0, 2.0]))


def test_relative_motion_with_reference_equal_to_driver_returns_source_keypoints() -> None:
    src = info()
    ref = motion.DrivingMotion.from_info(info(seed=1))
    x_s = motion.keypoints_from_info(src)
    x_d = motion.relative_keypoints(src, src.rotation(), ref, ref)
    assert torch.allclose(x_d, x_s, atol=1e-5)


def test_expression_friendly_multiplier_is_scale_invariant_ratio() -> None:
    x = info().kp
    assert motion.expression_motion_multiplier(x, x) == pytest.approx(1.0)
    # volume scales with the cube; the multiplier is sqrt of the volume ratio
    assert motion.expression_motion_multiplier(2 * x, x) == pytest.approx(math.sqrt(8.0), rel=1e-6)


def test_degenerate_keypoints_give_value_error() -> None:
    flat = torch.zeros(1, 21, 3)
    flat[0, :, :2] = torch.randn(21, 2)
    with pytest.raises(ValueError, match="3-D volume"):
        motion.convex_hull_volume(flat)


@pytest.mark.parametrize("bad, match", [
    (lambda: motion.transform_keypoints(torch.zeros(1, 21, 2), torch.eye(3)[None], torch.zeros(1, 21, 3),
                                        torch.ones(1, 1), torch.zeros(1, 3)), "kp: expected shape BxKx3"),
    (lambda: motion.transform_keypoints(torch.zeros(1, 21, 3), torch.eye(3), torch.zeros(1, 21, 3),
                                        torch.ones(1, 1), torch.zeros(1, 3)), "rot: expected shape 1x3x3"),
    (lambda: motion.rotation_matrix(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2)),
     "pitch: expected shape B or Bx1"),
    (lambda: motion.eye_retarget_delta(lambda x: x, torch.zeros(1, 21, 3), torch.zeros(1, 2)),
     "eye_ratios: expected shape 1x3"),
    (lambda: motion.lip_retarget_delta(lambda x: x, torch.zeros(1, 21, 3), torch.zeros(2, 2)),
     "lip_ratios: expected shape 1x2"),
    (lambda: motion.apply_stitching(lambda x: x, torch.zeros(1, 21, 3), torch.zeros(1, 20, 3)),
     "x_d: expected shape 1x21x3"),
])
def test_wrong_shapes_raise_value_error_naming_expected_shape(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        bad()


def test_nan_in_driving_keypoints_is_rejected_not_rendered() -> None:
    src = info()
    x_s = motion.keypoints_from_info(src)
    drv = motion.DrivingMotion.from_info(info(seed=2))
    broken = motion.DrivingMotion(R=drv.R, exp=drv.exp.clone(), scale=drv.scale, t=drv.t)
    broken.exp[0, 3, 1] = float("nan")
    ok = motion.animate_keypoints(src, x_s, drv, drv, stitching_net=None)
    assert torch.isfinite(ok.final).all()
    with pytest.raises(ValueError, match="NaN or inf"):
        motion.animate_keypoints(src, x_s, broken, drv, stitching_net=None)
    with pytest.raises(ValueError, match="NaN or inf"):
        motion.require_finite("x", torch.tensor([float("inf")]))


def test_stitching_shift_is_shared_by_all_keypoints_and_leaves_z() -> None:
    offsets = torch.zeros(1, 65)
    offsets[0, 63:] = torch.tensor([0.25, -0.5])
    x_s, x_d = torch.zeros(1, 21, 3), torch.randn(1, 21, 3)
    out = motion.apply_stitching(lambda _: offsets, x_s, x_d)
    assert torch.allclose(out - x_d, torch.tensor([0.25, -0.5, 0.0]).expand(1, 21, 3))


def test_lip_normalisation_skipped_for_closed_source_mouth() -> None:
    calls = []
    net = lambda x: (calls.append(x), torch.zeros(x.shape[0], 63))[1]  # noqa: E731
    assert motion.lip_normalization_delta(net, torch.zeros(1, 21, 3), torch.tensor([[0.01]])) is None
    assert not calls
    delta = motion.lip_normalization_delta(net, torch.zeros(1, 21, 3), torch.tensor([[0.2]]))
    assert delta is not None and delta.shape == (1, 21, 3)
    assert np.allclose(calls[0][0, 63:].numpy(), [0.2, 0.0])


def test_euler_round_trip() -> None:
    angles = torch.tensor([[10.0, -30.0, 5.0], [-45.0, 70.0, -120.0], [0.0, 0.0, 0.0]])
    rot = motion.rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    p, y, r = motion.euler_from_rotation(rot)
    assert torch.allclose(torch.stack([p, y, r], dim=1), angles, atol=1e-3)


# --------------------------------------------------------------------------- the live controls
def test_neutral_controls_keep_the_official_relative_motion() -> None:
    src, drv, ref = info(4), motion.DrivingMotion.from_info(info(4, seed=2)), motion.DrivingMotion.from_info(info(4, 3))
    official = motion.relative_keypoints(src, src.rotation(), drv, ref)
    controlled = motion.relative_keypoints(src, src.rotation(), drv, ref, motion.MotionControls.make("cpu"))
    assert torch.allclose(controlled, official, atol=1e-5)
    assert not torch.allclose(official, motion.keypoints_from_info(src), atol=1e-2)     # it did move


def test_rotation_controls_scale_and_cap_each_axis() -> None:
    rot = motion.rotation_matrix(torch.tensor([10.0]), torch.tensor([-30.0]), torch.tensor([5.0]))
    limited = motion.limit_rotation(rot, torch.tensor([2.0, 0.5, 0.0]), torch.tensor([15.0, 90.0, 90.0]))
    angles = torch.stack(motion.euler_from_rotation(limited), dim=1)
    assert torch.allclose(angles, torch.tensor([[15.0, -15.0, 0.0]]), atol=1e-3)   # 20 capped at 15


def test_expression_and_translation_controls() -> None:
    src = info()
    drv = motion.DrivingMotion.from_info(info(seed=2))
    ref = motion.DrivingMotion(R=drv.R, exp=drv.exp - 0.1, scale=drv.scale, t=drv.t - 0.2)  # exp and t moved
    controls = motion.MotionControls.make("cpu", expression_multiplier=2.0, undriven_keypoints=motion.EYE_KEYPOINTS,
                                          translation_lock=True)
    change = motion.relative_keypoints(src, src.rotation(), drv, ref, controls) - motion.keypoints_from_info(src)
    driven = [k for k in range(motion.NUM_KP) if k not in motion.EYE_KEYPOINTS]
    assert torch.allclose(change[:, driven], (src.scale * 0.2).expand(1, len(driven), 3), atol=1e-5)
    assert torch.allclose(change[:, list(motion.EYE_KEYPOINTS)], torch.zeros(1, 5, 3), atol=1e-5)
    free = motion.relative_keypoints(src, src.rotation(), drv, ref, motion.MotionControls.make("cpu"))
    moved = free - motion.keypoints_from_info(src)
    assert torch.allclose(moved[..., :2], (src.scale * 0.1 + 0.2).expand(1, 21, 2), atol=1e-5)
    assert torch.allclose(moved[..., 2], (src.scale * 0.1).expand(1, 21), atol=1e-5)   # t_z stays 0


def test_driving_multiplier_scales_the_final_motion() -> None:
    src = info()
    x_s = motion.keypoints_from_info(src)
    drv, ref = motion.DrivingMotion.from_info(info(seed=2)), motion.DrivingMotion.from_info(src)
    full = motion.animate_keypoints(src, x_s, drv, ref, stitching_net=None).final
    half = motion.animate_keypoints(src, x_s, drv, ref, stitching_net=None, driving_multiplier=0.5).final
    assert torch.allclose(half - x_s, (full - x_s) * 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown driving option 'sideways'"):
        motion.animate_keypoints(src, x_s, drv, ref, stitching_net=None, option="sideways")
