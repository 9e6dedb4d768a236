"""The animator with any avatar: an animal avatar driven by the official animal formula with the
neutral reference as its first frame (its constants made once per reference, stitching and the
motion strength from the settings), and an avatar without landmarks, whose eye/lip retargeting and
lip normalisation are off whatever the settings say."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from support.fakes import ScriptedBackend, fake_face, make_animator

from app.animation import animator as animator_module
from app.animation.frames import Status
from app.avatar.prepared import prepare_avatar
from engines import motion


@pytest.fixture()
def animal_face(avatar_face):
    """Our avatar, prepared as an animal would be (the kind decides; no ratios)."""
    return replace(avatar_face, kind="animal")


@pytest.fixture()
def boxed_face(avatar_face):
    """Our avatar as a manual face box gives it: no landmarks, so no open ratios."""
    return replace(avatar_face, landmarks=np.zeros((0, 2), np.float32), eye_ratios=None, lip_ratio=None)


def drive(anim, backend: ScriptedBackend, frames: range, t0: int = 0) -> list:
    out = []
    for i in frames:
        backend.pose = (i * 2.0, -i * 3.0, i * 1.0)
        backend.exp_offset = 0.01 * i
        out.append(anim.process(fake_face(eye=0.2 + 0.01 * i, lip=0.05 * i), (t0 + i) / 30))
    return out


def test_an_animal_avatar_is_prepared_without_ratios_or_human_constants(animal_face) -> None:
    avatar = prepare_avatar(animal_face, ScriptedBackend())
    assert avatar.kind == "animal" and not avatar.has_ratios
    assert avatar.eye_ratios is None and avatar.lip_ratio is None and avatar.lip_normalization is None
    assert avatar.expression_multiplier is None


def test_an_animal_avatar_follows_the_official_animal_formula(animal_face, monkeypatch) -> None:
    """Every frame's keypoints are ``animate_animal_keypoints`` of the smoothed motion against the
    neutral reference, with the multiplier of that reference computed once for it."""
    hulls: list[float] = []
    real = motion.expression_motion_multiplier

    def counting(x_s: torch.Tensor, x_d_ref: torch.Tensor) -> float:
        hulls.append(real(x_s, x_d_ref))
        return hulls[-1]
    monkeypatch.setattr(animator_module.motion, "expression_motion_multiplier", counting)
    backend = ScriptedBackend()
    anim, live = make_animator(animal_face, backend, reference_frames=1, paste_back=False, eye_mode="follow",
                               lip_mode="fixed", lip_target=0.5, smooth_rotation=0.0, smooth_translation=0.0,
                               smooth_expression=0.0)
    frames = drive(anim, backend, range(1))
    first = anim.last_keypoints.clone()
    frames += drive(anim, backend, range(1, 6))
    assert all(f.rendered and np.isfinite(f.image).all() for f in frames)
    assert [f.status for f in frames] == [Status.LIVE] * 6
    assert len(hulls) == 1 and np.isfinite(hulls[0]) and hulls[0] > 0     # once, for the final reference
    assert backend.eye_inputs == []                                       # no retargeting for animals
    a, ref = anim.avatar, anim.reference.motion
    x_d_ref = motion.animal_keypoints(a.info, ref)
    v = anim._last_raw
    expected = motion.animate_animal_keypoints(a.info, a.x_s, animator_module.driver.driving_motion(v), x_d_ref,
                                               hulls[0], driving_multiplier=1.75)
    assert torch.allclose(anim.last_keypoints, expected, atol=1e-5)
    # the motion moved the avatar's keypoints (the stub renders the crop whatever they are)
    assert (anim.last_keypoints - first).abs().max() > 1e-3

    # the settings: stitching (the human S) and the motion strength
    stitched: list[torch.Tensor] = []
    monkeypatch.setattr(backend, "stitching", lambda x: stitched.append(x) or x.new_zeros(x.shape[0], 65))
    live.update(animal_stitching=True, motion_strength=0.0)
    drive(anim, backend, range(6, 7))
    assert len(stitched) == 1
    assert torch.allclose(anim.last_keypoints, a.x_s)         # strength 0: the avatar as it is
    assert len(hulls) == 1                                     # the same reference: not computed again


def test_a_new_reference_or_avatar_recomputes_the_animal_constants(animal_face, monkeypatch) -> None:
    calls: list[int] = []
    real = motion.expression_motion_multiplier
    monkeypatch.setattr(animator_module.motion, "expression_motion_multiplier",
                        lambda x_s, x_d_ref: calls.append(1) or real(x_s, x_d_ref))
    backend = ScriptedBackend()
    anim, _ = make_animator(animal_face, backend, reference_frames=2)
    drive(anim, backend, range(1))          # calibrating: the reference so far
    drive(anim, backend, range(0, 1), 1)    # the same pose: steady, now final
    assert anim.has_reference and len(calls) == 2
    drive(anim, backend, range(2, 5), 2)
    assert len(calls) == 2
    anim.calibrate()
    drive(anim, backend, range(5, 7), 5)
    assert len(calls) >= 3
    settled = len(calls)
    anim.set_avatar(prepare_avatar(animal_face, backend))
    drive(anim, backend, range(7, 9), 7)
    assert len(calls) == settled + 1


def test_an_animal_loses_and_regains_the_face_like_a_human(animal_face) -> None:
    backend = ScriptedBackend()
    anim, _ = make_animator(animal_face, backend, reference_frames=1, hold_seconds=0.1, ease_seconds=0.2,
                            background="color:#00ff00")
    drive(anim, backend, range(3))
    statuses = [anim.process(None, t).status for t in (0.2, 0.35, 0.6)]
    assert statuses == [Status.HOLDING, Status.EASING, Status.NEUTRAL]
    assert drive(anim, backend, range(3, 4), 20)[0].status == Status.LIVE


def test_without_landmarks_retargeting_and_lip_normalisation_are_off(boxed_face, avatar_face) -> None:
    avatar = prepare_avatar(boxed_face, ScriptedBackend())
    assert avatar.kind == "human" and not avatar.has_ratios and avatar.lip_normalization is None
    assert avatar.expression_multiplier is not None         # expression-friendly driving still works
    backend = ScriptedBackend()
    on, live = make_animator(boxed_face, backend, reference_frames=1, eye_mode="follow", lip_mode="fixed",
                             lip_target=0.4)
    plain_backend = ScriptedBackend()
    off, _ = make_animator(boxed_face, plain_backend, reference_frames=1)
    a, b = drive(on, backend, range(4)), drive(off, plain_backend, range(4))
    assert all(f.rendered for f in a) and backend.eye_inputs == []
    # the retargeting settings change nothing: the eyes and lips follow the driver as with them off
    assert torch.equal(on.last_keypoints, off.last_keypoints)
    assert np.array_equal(a[-1].image, b[-1].image)
    # an avatar with landmarks does use them
    with_ratios, _ = make_animator(avatar_face, backend, reference_frames=1, eye_mode="follow")
    drive(with_ratios, backend, range(2))
    assert backend.eye_inputs


@pytest.mark.parametrize("paste_on_device", [False, True])
def test_an_animal_outputs_its_crop_unless_pasted_back(animal_face, paste_on_device: bool) -> None:
    """The official animal output is the crop; ``animal_paste_back`` pastes it into the picture like
    a human's, and ``--crop-only`` (no paste-back at all) still wins."""
    backend = ScriptedBackend()
    anim, live = make_animator(animal_face, backend, reference_frames=1, paste_on_device=paste_on_device)
    crop_shape = animal_face.crop.shape
    assert [f.image.shape for f in drive(anim, backend, range(3))] == [crop_shape] * 3
    assert anim.process(None, 1.0).image.shape == crop_shape            # held frames too
    live.update(animal_paste_back=True)
    pasted = drive(anim, backend, range(3, 5), 40)
    assert pasted[-1].rendered and pasted[-1].image.shape == animal_face.image.shape
    live.update(paste_back=False)
    assert drive(anim, backend, range(5, 6), 60)[0].image.shape == crop_shape
    # a human avatar with the same settings follows paste_back alone
    human, _ = make_animator(replace(animal_face, kind="human"), ScriptedBackend(), reference_frames=1,
                             paste_on_device=paste_on_device)
    assert drive(human, backend, range(2))[-1].image.shape == animal_face.image.shape
