"""The official video-source composition (``source_motion="video"``): each source frame keeps its own
scale and translation; rotation and expression follow the driver relative to its reference."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from engines import motion


def info(seed: int) -> motion.KeypointInfo:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return motion.KeypointInfo(pitch=r(1, 1) * 10, yaw=r(1, 1) * 10, roll=r(1, 1) * 10, t=r(1, 3) * 0.1,
                               exp=r(1, 21, 3) * 0.05, scale=1.5 + r(1, 1).abs(), kp=r(1, 21, 3) * 0.3)


def test_video_form_equals_the_still_formula_when_the_driver_keeps_the_references_scale_and_t() -> None:
    src, ref = info(0), motion.DrivingMotion.from_info(info(1))
    moved = motion.DrivingMotion.from_info(info(2))
    driving = replace(moved, scale=ref.scale, t=ref.t)        # pose and expression move, scale and t do not
    still = motion.relative_keypoints(src, src.rotation(), driving, ref)
    video = motion.relative_keypoints(src, src.rotation(), driving, ref, source_motion="video")
    assert torch.allclose(video, still, atol=1e-6)
    # and the driver's motion does reach the keypoints (not the source's own)
    assert not torch.allclose(video, motion.keypoints_from_info(src), atol=1e-3)


def test_video_form_ignores_the_drivers_scale_and_translation() -> None:
    src, ref = info(0), motion.DrivingMotion.from_info(info(1))
    driving = motion.DrivingMotion.from_info(info(2))
    zoomed = replace(driving, scale=driving.scale * 1.7, t=driving.t + torch.tensor([[0.3, -0.2, 0.5]]))
    a = motion.relative_keypoints(src, src.rotation(), driving, ref, source_motion="video")
    b = motion.relative_keypoints(src, src.rotation(), zoomed, ref, source_motion="video")
    assert torch.allclose(a, b)
    still_a = motion.relative_keypoints(src, src.rotation(), driving, ref)
    still_b = motion.relative_keypoints(src, src.rotation(), zoomed, ref)
    assert not torch.allclose(still_a, still_b, atol=1e-3)      # the still formula follows them
    # the formula itself: s_s * (x_c @ (R_d R_ref^T) R_s + exp_s + exp_d - exp_ref) + t_s (t_z = 0)
    R = driving.R @ ref.R.transpose(1, 2) @ src.rotation()
    t = torch.cat([src.t[:, :2], torch.zeros(1, 1)], dim=1)
    expected = src.scale[..., None] * (src.kp @ R + src.exp + driving.exp - ref.exp) + t[:, None]
    assert torch.allclose(a, expected, atol=1e-6)


def test_animate_keypoints_passes_the_source_motion_through() -> None:
    src, ref = info(0), motion.DrivingMotion.from_info(info(1))
    driving = motion.DrivingMotion.from_info(info(2))
    x_s = motion.keypoints_from_info(src)
    got = motion.animate_keypoints(src, x_s, driving, ref, stitching_net=None, source_motion="video").final
    assert torch.allclose(got, motion.relative_keypoints(src, src.rotation(), driving, ref, source_motion="video"))
    with pytest.raises(ValueError, match="source motion"):
        motion.relative_keypoints(src, src.rotation(), driving, ref, source_motion="clip")  # type: ignore[arg-type]
