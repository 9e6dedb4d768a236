"""Test doubles shared by several test files (imported as ``fakes``: tests/ is on sys.path)."""
from __future__ import annotations

import numpy as np
import pyvirtualcam


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
