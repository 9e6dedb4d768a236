"""Test doubles and helpers shared by several test files (imported as ``fakes``: tests/ is on sys.path)."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pyvirtualcam
import torch

from app.animation.animator import Animator
from app.avatar.prepared import prepare_avatar
from app.face.crop import CropTransform
from app.face.driving import DrivingFace
from app.imaging.segmentation import EllipseSegmenter, PersonSegmenter
from app.settings import AnimationSettings, LiveSettings
from engines import motion
from engines.backend import StubBackend
from support import REPO_ROOT


class FakeVirtualCamera:
    frames: list[np.ndarray] = []

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device, **kw) -> None:
        self.width, self.height = width, height
        FakeVirtualCamera.frames = []

    def send(self, frame: np.ndarray) -> None:
        FakeVirtualCamera.frames.append(frame.reshape(self.height, self.width, 3).copy())

    def close(self) -> None:
        pass

    def device(self) -> str:
        return "fake0"

    def native_fourcc(self):
        return None


class MissingVirtualCamera(FakeVirtualCamera):
    def __init__(self, **kw) -> None:
        raise RuntimeError("No v4l2 loopback device found at /dev/video[0-99].")


# registered once, when this module is first imported
pyvirtualcam.register_backend("avatarcam-test", FakeVirtualCamera)
pyvirtualcam.register_backend("avatarcam-missing", MissingVirtualCamera)


class ScriptedBackend(StubBackend):
    """Stub whose motion output is set by the test: pose angles, translation and an expression
    offset; it records what R_eyes was asked."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.pose = (0.0, 0.0, 0.0)
        self.exp_offset = 0.0
        self.t = (0.0, 0.0)
        self.eye_inputs: list[torch.Tensor] = []

    def motion(self, image: torch.Tensor) -> motion.KeypointInfo:
        info = super().motion(image)
        b = image.shape[0]
        p, y, r = (torch.full((b, 1), a, device=self.device) for a in self.pose)
        t = torch.zeros(b, 3, device=self.device)          # filled in place: no host-to-device copy
        t[:, 0], t[:, 1] = self.t
        return motion.KeypointInfo(pitch=p, yaw=y, roll=r, t=t, exp=info.exp + self.exp_offset,
                                   scale=info.scale, kp=info.kp)

    def eye(self, x: torch.Tensor) -> torch.Tensor:
        self.eye_inputs.append(x.clone())
        return x.new_zeros(x.shape[0], 63)


class ClosingStub(StubBackend):
    """The stub, counting its ``close`` calls (to check who closes a backend, and when)."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.closes = 0

    def close(self) -> None:
        self.closes += 1


def fake_face(eye: float = 0.3, lip: float = 0.0) -> DrivingFace:
    """A driving face with a flat grey crop and the given eye / lip open ratios."""
    crop = np.full((256, 256, 3), 90, np.uint8)
    t = np.eye(3, dtype=np.float32)
    return DrivingFace(network_input=crop, landmarks=np.zeros((478, 2), np.float32),
                       transform=CropTransform(t, t, 512), eye_ratios=np.array([[eye, eye]], np.float32),
                       lip_ratio=np.array([[lip]], np.float32))


def make_animator(face, backend: StubBackend | None = None, *, paste_on_device: bool | None = None,
                  segmenter: Callable[[], PersonSegmenter] = EllipseSegmenter,
                  **settings) -> tuple[Animator, LiveSettings]:
    """An animator of ``face`` (an ``AvatarFace``) on ``backend`` (default: a ``ScriptedBackend``)
    with these settings, and the live settings object it reads; the background modes segment with
    ``segmenter`` (default: the deterministic ellipse)."""
    backend = backend or ScriptedBackend()
    live = LiveSettings(AnimationSettings(**settings))
    return Animator(backend, live, prepare_avatar(face, backend), paste_on_device=paste_on_device,
                    segmenter=segmenter), live


def local_session(avatar_face, settings: LiveSettings, callbacks=None, **options):
    """A window session animating ``avatar_face`` on this computer on a new stub backend, reading
    ``settings``; ``options`` are ``LiveSession``'s."""
    from app.run.live_session import LiveSession
    from app.run.renderer import LocalRenderer

    backend = StubBackend()
    return LiveSession(LocalRenderer(backend), Animator(backend, settings, prepare_avatar(avatar_face, backend)),
                       callbacks, **options)




def run_main(*args: str, timeout: int = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python main.py ARGS`` from the repository root, output captured."""
    return subprocess.run([sys.executable, "main.py", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def run_export(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m export ARGS`` from the repository root, output captured (Python warnings off:
    the tests read the exporter's own lines)."""
    return subprocess.run([sys.executable, "-m", "export", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
