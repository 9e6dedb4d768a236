"""The animator's parts on their own: the driver vector, its smoothing groups, the neutral
reference and the face-lost state (plain tensors, no avatar, no networks)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.animation import driver_motion as driver
from app.animation.face_lost import FaceLostState, smoothstep
from app.settings import AnimationSettings, SmoothingGroup, smoothing_fields
from engines import motion


def test_driver_vector_round_trips_to_the_driving_motion() -> None:
    g = torch.Generator().manual_seed(1)
    info = motion.KeypointInfo(pitch=torch.tensor([[4.0]]), yaw=torch.tensor([[-12.0]]), roll=torch.tensor([[7.0]]),
                               t=torch.randn(1, 3, generator=g), exp=torch.randn(1, 21, 3, generator=g),
                               scale=torch.tensor([[1.3]]), kp=torch.randn(1, 21, 3, generator=g))
    v = driver.driver_vector(info, torch.tensor([0.3, 0.25, 0.1]))
    assert v.shape == (driver.SIZE,) and v.dtype == torch.float32
    assert v[driver.EYES].tolist() == pytest.approx([0.3, 0.25]) and v[driver.LIP].item() == pytest.approx(0.1)
    got, expected = driver.driving_motion(v), motion.DrivingMotion.from_info(info)
    for name in ("R", "exp", "scale", "t"):
        assert torch.allclose(getattr(got, name), getattr(expected, name), atol=1e-6), name


def test_every_smoothing_group_is_a_setting_and_strength_zero_passes_through() -> None:
    s = AnimationSettings(**smoothing_fields(0.25))
    assert [s.smoothing(group) for group in SmoothingGroup] == [0.25] * 5
    mixed = smoothing_fields({group: 0.1 * i for i, group in enumerate(SmoothingGroup)})
    assert AnimationSettings(**mixed).smoothing(SmoothingGroup.LIPS) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="smooth_eyes: expected 0..1"):
        AnimationSettings(smooth_eyes=1.5).validated()
    # rotation off, the rest strongly smoothed: a small step passes through in the angles only
    smoother = driver.MotionSmoother(torch.device("cpu"))
    settings = AnimationSettings(**{**smoothing_fields(1.0), SmoothingGroup.ROTATION.field: 0.0})
    smoother(torch.zeros(driver.SIZE), 0.0, settings)
    step = torch.full((driver.SIZE,), 1e-3)
    out = smoother(step, 1 / 30, settings)
    assert torch.equal(out[driver.ANGLES], step[driver.ANGLES])
    assert (out[driver.ANGLES.stop:] < 0.2 * step[driver.ANGLES.stop:]).all()


def test_neutral_reference_keeps_its_device_form_until_a_new_one_starts() -> None:
    ref = driver.NeutralReference()
    frame = np.zeros(driver.SIZE)
    frame[driver.SCALE] = 1.0
    for _ in range(2):
        ref.add(frame, 2, torch.device("cpu"))
    assert ref.final and ref.vector is not None and torch.equal(ref.motion.R, torch.eye(3)[None])
    before = ref.vector
    ref.reset()
    assert ref.window == [] and not ref.final and ref.vector is before      # still used while re-taking
    frame[1] = 20.0
    ref.add(frame, 2, torch.device("cpu"))
    assert ref.vector[1].item() == pytest.approx(20.0) and not ref.final


def test_face_lost_holds_eases_and_resumes() -> None:
    s = AnimationSettings(hold_seconds=0.2, ease_seconds=0.4, resume_seconds=0.3)
    state = FaceLostState()
    live, neutral = torch.full((3,), 2.0), torch.zeros(3)
    assert torch.equal(state.seen(live, 0.0, s), live)
    assert state.lost(0.1, s).holding
    first = state.lost(0.1 + 0.2 + 0.2, s)                      # half-way through the ease
    assert not first.holding and first.weight == pytest.approx(smoothstep(0.5)) and not first.neutral
    assert torch.allclose(state.eased(first, neutral), live * (1 - smoothstep(0.5)))
    done = state.lost(0.1 + 0.6, s)
    assert done.neutral and torch.equal(state.eased(done, neutral), neutral)
    back = state.seen(live, 1.0, s)                             # the face is back: glide from neutral
    assert torch.equal(back, neutral)
    assert torch.allclose(state.seen(live, 1.15, s), live * smoothstep(0.5))
    assert torch.equal(state.seen(live, 1.3, s), live) and torch.equal(state.seen(live, 1.4, s), live)


def test_smoothing_tuning_goes_up_once_per_settings_change() -> None:
    """Per frame nothing is uploaded, even when the device is named with an index the tensors'
    device lacks (a backend's "cuda" vs a tensor's "cuda:0"; here "cpu:0" vs "cpu")."""
    smoother, settings = driver.MotionSmoother(torch.device("cpu", 0)), AnimationSettings()
    smoother.tune(settings)
    smoother(torch.zeros(driver.SIZE), 0.0, settings)
    cutoff = smoother.filter.min_cutoff
    smoother.tune(settings)
    smoother(torch.ones(driver.SIZE), 1 / 30, settings)
    assert smoother.filter.min_cutoff is cutoff
    changed = AnimationSettings(smooth_lips=0.9)
    smoother(torch.ones(driver.SIZE), 2 / 30, changed)
    assert smoother.filter.min_cutoff is not cutoff
