"""Camera source: the ``FrameSource`` interface the pipeline reads frames from, and its OpenCV
implementation for a webcam (by index) or a video file (by path)."""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..settings import DEFAULT_FRAME_SIZE

log = logging.getLogger(__name__)


class CameraError(RuntimeError):
    """The camera or video cannot be opened; the message says which and why."""


@dataclass(frozen=True)
class CameraRequest:
    """What to open: ``source`` is a camera index ("0") or a video file path."""

    source: str
    width: int = DEFAULT_FRAME_SIZE[0]
    height: int = DEFAULT_FRAME_SIZE[1]
    fps: float = 30.0
    mjpg: bool = True            # real cameras: MJPG gets 720p30 over USB 2 where raw YUYV cannot
    loop: bool = False           # video files: start again at the end
    paced: bool = True           # video files: deliver at the file's frame rate (else as fast as read)


def parse_source(source: str) -> int | Path:
    return int(source) if source.strip().isdigit() else Path(source)


class FramePacer:
    """Sleeps until the next frame of a stream played in real time is due; a late frame moves the
    schedule on instead of bursting to catch up."""

    def __init__(self) -> None:
        self._next_due: float | None = None

    def wait(self, fps: float) -> None:
        now = time.perf_counter()
        if self._next_due is not None and now < self._next_due:
            time.sleep(self._next_due - now)
        self._next_due = max(now, self._next_due or now) + 1.0 / fps


class FrameSource(Protocol):
    """Where the pipeline's frames come from. ``is_file``: a finite stream (a video file) that ends
    at its end instead of being re-opened; ``fps``: its frame rate (frames per second)."""

    is_file: bool
    fps: float

    def wait(self) -> None:
        """Block until the next frame is due (a stream played in real time); cameras return at once."""

    def read(self) -> np.ndarray | None:
        """The next frame (H x W x 3 uint8 BGR), or None at the end or when the source stops delivering."""

    def release(self) -> None:
        """Free the device or file; no ``read`` follows."""

    def reopen(self) -> None:
        """Open the same source again after it stopped delivering; raises when it still cannot be opened."""


class CameraSource:
    """``FrameSource`` on OpenCV: a webcam (MJPG at the requested size) or a video file."""

    def __init__(self, request: CameraRequest) -> None:
        self.request = request
        src = parse_source(request.source)
        self.is_file = isinstance(src, Path)
        if self.is_file:
            if not src.is_file():
                raise CameraError(f"video file not found: {src}")
            self.cap = cv2.VideoCapture(str(src))
        else:
            backend = cv2.CAP_DSHOW if sys.platform == "win32" else cv2.CAP_ANY
            self.cap = cv2.VideoCapture(src, backend)
            if self.cap.isOpened():
                if request.mjpg:
                    self.cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
                self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, request.width)
                self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, request.height)
                self.cap.set(cv2.CAP_PROP_FPS, request.fps)
                self.cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)     # latest frame, not a backlog
        if not self.cap.isOpened():
            self.cap.release()
            kind = "video file" if self.is_file else "camera"
            raise CameraError(f"cannot open {kind} {request.source!r}"
                              + ("" if self.is_file else " (is it connected and not used by another app?)"))
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 1 <= fps <= 240 else request.fps
        self.frame_size = (int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._pacer = FramePacer()
        log.info("%s %s opened: %dx%d at %.1f fps", "video" if self.is_file else "camera", request.source,
                 *self.frame_size, self.fps)

    def wait(self) -> None:
        """Paced video files: sleep until the next frame is due (cameras pace themselves)."""
        if self.is_file and self.request.paced:
            self._pacer.wait(self.fps)

    def read(self) -> np.ndarray | None:
        """The next frame (BGR), or None at the end of a file / when the camera stops delivering."""
        ok, frame = self.cap.read()
        if not ok and self.is_file and self.request.loop:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        return frame if ok else None

    def release(self) -> None:
        self.cap.release()

    def reopen(self) -> None:
        """Open the same source again (a camera that was unplugged or taken by another app)."""
        self.cap.release()
        fresh = CameraSource(self.request)
        self.cap, self.fps, self.frame_size = fresh.cap, fresh.fps, fresh.frame_size


def read_video_frames(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """All frames (or the first ``limit``) of a video file, decoded into memory (BGR)."""
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        while limit is None or len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    return frames
