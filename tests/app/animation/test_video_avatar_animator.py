"""The animator with a video avatar: the clip plays ping-pong on the output's clock (or at the source
index a caller names), each frame driven by the video composition with its source frame's values and
finished into that frame; a one-frame clip animates like a still when the driver keeps the reference's
scale and translation; frames without a face and the face-lost hold show the clip's own frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from support.fakes import ScriptedBackend, fake_face

from app.animation.animator import Animator
from app.animation.frames import Status
from app.avatar.face import avatar_face_from_crop
from app.avatar.prepared import prepare_avatar
from app.avatar.prepared_video import prepare_video
from app.avatar.video import avatar_video_from_crops, pingpong_index
from app.imaging.segmentation import EllipseSegmenter
from app.settings import AnimationSettings, LiveSettings

FPS = 10.0
SETTINGS = dict(reference_frames=1, smooth_rotation=0.0, smooth_translation=0.0, smooth_expression=0.0)


def clip_crops(n: int) -> list[np.ndarray]:
    """n crops, each a different grey with a bright spot (so the stub's motion differs per frame)."""
    crops = []
    for i in range(n):
        crop = np.full((512, 512, 3), 40 + 30 * i, np.uint8)
        crop[100 + 40 * i:180 + 40 * i, 200:280] = 250
        crops.append(crop)
    return crops


def animator(avatar, backend, **settings) -> Animator:
    return Animator(backend, LiveSettings(AnimationSettings(**{**SETTINGS, **settings})), avatar,
                    segmenter=EllipseSegmenter)


def test_a_one_frame_clip_animates_like_a_still_when_the_driver_keeps_scale_and_t(avatar_face) -> None:
    crop = avatar_face.crop
    eyes, lip = avatar_face.eye_ratios, avatar_face.lip_ratio
    backend = ScriptedBackend()
    still = animator(prepare_avatar(avatar_face_from_crop(crop, eyes, lip), backend), backend)
    video = animator(prepare_video(avatar_video_from_crops([crop], eyes, lip, FPS), backend), backend)
    for i in range(6):
        backend.pose, backend.exp_offset = (i * 2.0, -i * 3.0, i * 1.0), 0.01 * i
        a = still.process(fake_face(eye=0.25, lip=0.05 * i), i / 30)
        b = video.process(fake_face(eye=0.25, lip=0.05 * i), i / 30)
        assert a.status == b.status and a.rendered and b.rendered
        assert torch.allclose(video.last_keypoints, still.last_keypoints, atol=1e-5)
        assert np.array_equal(a.image, b.image)
    assert (still.last_keypoints - still.avatar.x_s).abs().max() > 1e-3     # the driver did move them
    # the driver's translation moves the still's keypoints, never the clip's (its own frame's t)
    before = video.last_keypoints.clone()
    backend.t = (0.2, -0.1)
    still.process(fake_face(eye=0.25, lip=0.25), 6 / 30)
    video.process(fake_face(eye=0.25, lip=0.25), 6 / 30)
    assert torch.allclose(video.last_keypoints, before, atol=1e-5)
    assert not torch.allclose(still.last_keypoints, before, atol=1e-3)


def test_the_clip_plays_pingpong_on_the_output_clock_and_each_frame_uses_its_own_source() -> None:
    crops = clip_crops(4)
    backend = ScriptedBackend()
    avatar = prepare_video(avatar_video_from_crops(crops, None, None, FPS), backend)
    anim = animator(avatar, backend)
    t0 = 5.0                                # the clip starts with the first frame processed, whatever t is
    for k in range(12):
        t = t0 + k / FPS
        frame = anim.process(None, t)
        s = pingpong_index(k / FPS, FPS, 4)
        assert frame.status == Status.NO_FACE_YET and np.array_equal(frame.image, crops[s]), k
    for k in range(12, 20):
        frame = anim.process(fake_face(), t0 + k / FPS)
        s = pingpong_index(k / FPS, FPS, 4)
        assert frame.rendered
        # the stub renders the source frame's own crop (F of that frame) at the video formula's keypoints
        assert np.abs(frame.image.astype(int) - crops[s].astype(int)).mean() < 2, k
        assert torch.allclose(anim._frame.x_s, avatar.video.x_s[s:s + 1])
    # a caller may name the source frame (a render server's client)
    frame = anim.process(fake_face(), t0 + 20 / FPS, source_index=2)
    assert np.abs(frame.image.astype(int) - crops[2].astype(int)).mean() < 2
    with pytest.raises(IndexError):
        anim.process(fake_face(), t0, source_index=4)


def test_the_face_lost_hold_shows_the_clips_own_frame() -> None:
    crops = clip_crops(3)
    backend = ScriptedBackend()
    anim = animator(prepare_video(avatar_video_from_crops(crops, None, None, FPS), backend), backend,
                    hold_seconds=5.0)
    for k in range(3):
        assert anim.process(fake_face(), k / FPS).rendered
    for k in range(3, 8):
        frame = anim.process(None, k / FPS)
        assert frame.status == Status.HOLDING and not frame.rendered
        assert np.array_equal(frame.image, crops[pingpong_index(k / FPS, FPS, 3)]), k


def test_a_still_avatar_takes_no_video_steps(avatar_face, monkeypatch) -> None:
    backend = ScriptedBackend()
    anim = animator(prepare_avatar(avatar_face, backend), backend)
    monkeypatch.setattr(anim, "_source_frame", lambda *a: pytest.fail("a still has no source frames"))
    assert anim.process(fake_face(), 0.0).rendered
    assert anim._frame is anim.avatar
