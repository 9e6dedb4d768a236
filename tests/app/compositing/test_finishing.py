"""The host-side finishing step (``OutputFinisher``): held and still images across output changes,
one finishing for the local animator's CPU path and the render server's client, and the render
server's crop-only output."""
from __future__ import annotations

import numpy as np
import pytest
from support.fakes import ScriptedBackend, fake_face, make_animator

from app.animation.animator import Animator
from app.animation.frames import Status
from app.avatar.prepared import prepare_avatar
from app.compositing.finishing import OutputFinisher
from app.face import crop as fc
from app.imaging.device_io import fetch_image, render_to_planes
from app.imaging.segmentation import EllipseSegmenter
from app.remote.client import RemoteAnimator, RemoteFrame, RemoteServer
from app.settings import AnimationSettings, LiveSettings


def test_held_and_still_images_follow_the_output(avatar_face) -> None:
    finisher = OutputFinisher(avatar_face, EllipseSegmenter)
    full = AnimationSettings()
    crop = np.ascontiguousarray(avatar_face.crop[::-1])               # an "animated" crop: upside down
    assert finisher.begin(full) and not finisher.begin(full)          # the first frame is an output change
    assert finisher.held(full) is finisher.still(full) is avatar_face.image    # nothing animated yet
    image = finisher.finish(crop, full)
    assert image.shape == avatar_face.image.shape and image.flags.c_contiguous
    assert np.array_equal(image, fc.paste_back(crop, avatar_face.transform.M_c2o, avatar_face.image, avatar_face.paste))
    assert finisher.last is image and finisher.held(full) is image
    # an output change drops the held image; held() makes it anew from the last crop
    for s in (AnimationSettings(mirror=True), AnimationSettings(paste_back=False),
              AnimationSettings(paste_back=False, mirror=True, background="color:#00ff00")):
        assert finisher.begin(s) and finisher.last is None
        again = finisher.held(s)
        assert np.array_equal(again, OutputFinisher(avatar_face, EllipseSegmenter).finish(crop, s))
        assert finisher.last is again and again.flags.c_contiguous
    mirrored_crop = AnimationSettings(paste_back=False, mirror=True)
    finisher.begin(mirrored_crop)
    assert np.array_equal(finisher.held(mirrored_crop), crop[:, ::-1])
    assert np.array_equal(finisher.still(mirrored_crop), avatar_face.crop[:, ::-1])
    # an output finished elsewhere (the device path) keeps no crop to make anew
    finisher.finish_pasted(avatar_face.image, full)
    finisher.begin(AnimationSettings(mirror=True))
    assert np.array_equal(finisher.held(AnimationSettings(mirror=True)), avatar_face.image[:, ::-1])
    # a new avatar forgets the old one's images
    finisher.finish(crop, full)
    finisher.reset(avatar_face)
    assert finisher.last is None and finisher.held(full) is avatar_face.image


class CropRecordingBackend(ScriptedBackend):
    """The scripted stub, its render showing the driving keypoints; it keeps each rendered crop as
    the host sees it (BGR), for a stand-in server to send."""

    def __init__(self) -> None:
        super().__init__()
        self.crops: list[np.ndarray] = []

    def render(self, feature, x_s, x_d):
        out = (feature * 0.5 + (x_d - x_s).abs().mean() * 5).clamp(0, 1)
        self.crops.append(fetch_image(render_to_planes(out))[0].copy())
        return out


class ReplayLink:
    """A ``ServerLink`` stand-in answering each frame with the next recorded crop."""

    reference = True

    def __init__(self, crops: list[np.ndarray]) -> None:
        self.crops = iter(crops)

    def animate(self, face, t, s, source=None) -> RemoteFrame:
        return RemoteFrame(str(Status.LIVE), True, next(self.crops))

    def close(self) -> None:
        pass


def test_the_local_cpu_path_and_the_remote_client_finish_crops_alike(avatar_face) -> None:
    """The same crops under the same output changes (mirror, crop only, backgrounds): the client's
    outputs are the local animator's, pixel for pixel."""
    changes = {2: {"mirror": True}, 4: {"paste_back": False}, 6: {"background": "blur"},
               8: {"paste_back": True, "background": "color:#00ff00"}, 11: {"mirror": False}}
    backend = CropRecordingBackend()
    local, live = make_animator(avatar_face, backend, paste_on_device=False, reference_frames=1)
    expected = []
    for i in range(14):
        live.update(**changes.get(i, {}))
        backend.pose = (0.0, 2.0 * i, 0.0)
        expected.append(local.process(fake_face(), i / 30).image)
    assert len(backend.crops) == 14 and len({float(c.mean()) for c in backend.crops}) == 14

    live = LiveSettings(AnimationSettings(reference_frames=1))
    client = RemoteAnimator(RemoteServer.parse("ws://127.0.0.1:9"), live, avatar_face, segmenter=EllipseSegmenter)
    client.link = ReplayLink(backend.crops)
    for i, want in enumerate(expected):
        live.update(**changes.get(i, {}))
        got = client.process(fake_face(), i / 30)
        assert got.rendered and np.array_equal(got.image, want), f"frame {i}"
    client.close()


def no_segmenter():
    raise AssertionError("a crop-only output segments nothing")


def test_a_crop_only_animator_outputs_the_rendered_crop_whatever_the_settings(avatar_face) -> None:
    """The render server's animator: the bare crop as rendered, unmirrored and without background,
    under every output setting; the avatar's crop before anything is animated; held crops while
    the face is lost."""
    backend = CropRecordingBackend()
    live = LiveSettings(AnimationSettings(reference_frames=1, hold_seconds=0.1, ease_seconds=0.2,
                                          background="color:#00ff00", mirror=True))
    anim = Animator(backend, live, prepare_avatar(avatar_face, backend), segmenter=no_segmenter, crop_only=True)
    assert not anim.paste_on_device
    first = anim.process(None, 0.0)
    assert first.status == Status.NO_FACE_YET and first.image is avatar_face.crop
    changes = {1: {"paste_back": False}, 2: {"mirror": False, "background": "blur"}, 3: {"paste_back": True}}
    statuses = []
    for i in range(1, 15):
        live.update(**changes.get(i, {}))
        backend.pose = (0.0, 4.0 * i, 0.0)
        out = anim.process(fake_face() if i < 6 else None, i / 20)
        statuses.append(out.status)
        assert out.image.shape == (512, 512, 3)
        assert np.array_equal(out.image, backend.crops[-1]), (i, out.status)      # rendered now, or held
    assert {Status.LIVE, Status.HOLDING, Status.EASING, Status.NEUTRAL} <= set(statuses)
    with pytest.raises(ValueError, match="crop-only"):
        Animator(backend, live, prepare_avatar(avatar_face, backend), paste_on_device=True, crop_only=True)
