"""Output stage: the animated frames go to the sinks (virtual camera, recorder, preview). Each sink
takes what it can; a sink that fails is switched off with one message and the others go on."""
from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..settings import DEFAULT_FRAME_SIZE

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where output frames go (virtual camera, recorder; the window's preview takes frames from the
    pipeline's ``on_frame`` instead). Lifecycle: made and opened by its owner before the loop
    starts or while it runs (``OutputStage.add``); ``send`` is called from the output thread only,
    once per output frame, with H x W x 3 uint8 BGR and whether a face was tracked; ``close`` is
    called once, by the ``OutputStage``, at the end of the run, when the sink is removed, or after
    ``send`` raised (the sink is then dropped and the other sinks go on)."""

    name: str                       # for log lines

    def send(self, image: np.ndarray, tracked: bool) -> None: ...
    def close(self) -> None: ...


def letterbox(image: np.ndarray, width: int, height: int, out: np.ndarray | None = None) -> np.ndarray:
    """Fit ``image`` into width x height keeping its aspect, black bars around. ``out`` (height x
    width x 3 uint8, bars already black) is reused when given, to save an allocation per frame."""
    h, w = image.shape[:2]
    s = min(width / w, height / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    y0, x0 = (height - nh) // 2, (width - nw) // 2
    if out is None or out.shape != (height, width, 3):
        out = np.zeros((height, width, 3), np.uint8)
    elif (nw, nh) != (width, height):
        out[:y0], out[y0 + nh:], out[:, :x0], out[:, x0 + nw:] = 0, 0, 0, 0
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    if (nw, nh) != (w, h):
        cv2.resize(image, (nw, nh), dst=out[y0:y0 + nh, x0:x0 + nw], interpolation=interp)
    else:
        out[y0:y0 + nh, x0:x0 + nw] = image
    return out


def virtual_camera_fix() -> str:
    """The one-line fix for a missing virtual camera device on this platform."""
    if sys.platform.startswith("linux"):
        return ("install v4l2loopback (e.g. 'sudo apt install v4l2loopback-dkms') and run "
                "'sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=AvatarCam'")
    if sys.platform == "win32":
        return "install OBS Studio (28 or newer), click 'Start Virtual Camera' once and stop it again"
    if sys.platform == "darwin":
        return ("install OBS Studio (30 or newer), click 'Start Virtual Camera' once and allow the "
                "system extension in System Settings")
    return "install a virtual camera driver supported by pyvirtualcam (OBS Virtual Camera or v4l2loopback)"


class VirtualCameraUnavailable(RuntimeError):
    pass


class VirtualCameraSink:
    """Frames to a virtual webcam via pyvirtualcam (RGB/BGR, letterboxed to an even width)."""

    name = "virtual camera"

    def __init__(self, width: int = DEFAULT_FRAME_SIZE[0], height: int = DEFAULT_FRAME_SIZE[1], fps: float = 30.0, *,
                 backend: str | None = None, device: str | None = None) -> None:
        # loads the platform's native camera backends: only a session that sends to a virtual camera pays
        import pyvirtualcam

        self.width, self.height = width - width % 2, height - height % 2
        self._canvas: np.ndarray | None = None       # letterbox buffer, reused frame to frame
        try:
            self.camera = pyvirtualcam.Camera(self.width, self.height, fps, fmt=pyvirtualcam.PixelFormat.BGR,
                                              backend=backend, device=device)
        except Exception as e:  # noqa: BLE001 - every backend's own failure text, folded into one line
            reason = " / ".join(line.strip() for line in str(e).splitlines() if line.strip())[:300]
            fix = virtual_camera_fix()
            raise VirtualCameraUnavailable(f"no virtual camera device ({reason}); fix: {fix}") from None
        log.info("virtual camera: %s (%s) %dx%d", self.camera.device, self.camera.backend, self.width, self.height)

    def send(self, image: np.ndarray, tracked: bool) -> None:
        self._canvas = letterbox(image, self.width, self.height, self._canvas)
        self.camera.send(self._canvas)

    def close(self) -> None:
        self.camera.close()


class RecordingError(RuntimeError):
    """The recording cannot go on (file not writable, removed or replaced, disk full); the message says why."""


class VideoRecorder:
    """Frames to a video file (MPEG-4 part 2 in any of ``SUFFIXES``) at the size of the first frame
    (later frames are letterboxed to it). ``only_tracked`` keeps only frames animated from a tracked face.

    The folder must exist. After every frame the file must still be there and the disk must keep
    ``min_free_bytes`` free: otherwise ``send`` raises ``RecordingError``, and ``close`` (which the
    output stage calls on a failed sink) finishes what was written so that it stays playable."""

    name = "recorder"
    SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv")
    MIN_FREE_BYTES = 64 * 2**20       # room for the index written at the end (a few bytes per frame)

    def __init__(self, path: str | Path, fps: float, *, only_tracked: bool = False,
                 min_free_bytes: int = MIN_FREE_BYTES) -> None:
        self.path = Path(path)
        self.fps = fps
        self.only_tracked = only_tracked
        self.min_free_bytes = min_free_bytes
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self.error: str | None = None          # why the recording stopped early, if it did
        self._file_id: tuple[int, int] | None = None

    def send(self, image: np.ndarray, tracked: bool) -> None:
        if self.error is not None:
            raise RecordingError(self.error)
        if self.only_tracked and not tracked:
            return
        if self.writer is None:
            self._open(image)
        if (image.shape[1], image.shape[0]) != self.size:
            image = letterbox(image, *self.size)
        self.writer.write(np.ascontiguousarray(image))
        self.frames += 1
        self._check_file_and_disk()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def _open(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        self.size = (w, h)
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        if not self.writer.isOpened():
            self.writer = None
            self._fail(f"cannot write video file {self.path}")
        st = os.stat(self.path)
        self._file_id = (st.st_dev, st.st_ino)

    def _check_file_and_disk(self) -> None:
        # OpenCV's writer reports no write errors: a removed file or a full disk would go unnoticed
        try:
            st = os.stat(self.path)
            same_file = (st.st_dev, st.st_ino) == self._file_id
        except OSError:
            same_file = False
        if not same_file:
            self._fail(f"{self.path} was removed or replaced while recording")
        free = shutil.disk_usage(self.path.parent).free
        if free < self.min_free_bytes:
            self._fail(f"the disk of {self.path} is full ({free / 2**20:.0f} MB free); free some space")

    def _fail(self, reason: str) -> None:
        self.error = reason
        raise RecordingError(reason)


class OutputStage:
    """Sends each frame to every sink. A sink that raises is closed and dropped with one log line,
    then ``on_sink_failed(sink, error)`` is called (e.g. to end a run whose recording failed)."""

    def __init__(self, sinks: list[Sink],
                 on_sink_failed: Callable[[Sink, Exception], None] | None = None) -> None:
        self.sinks = list(sinks)
        self.on_sink_failed = on_sink_failed

    def add(self, sink: Sink) -> None:
        self.sinks = self.sinks + [sink]        # copy-on-write: the output thread may be iterating

    def remove(self, sink: Sink) -> None:
        self.sinks = [s for s in self.sinks if s is not sink]
        _close_quietly(sink)

    def process(self, image: np.ndarray, tracked: bool) -> None:
        for sink in self.sinks:
            try:
                sink.send(image, tracked)
            except Exception as e:  # noqa: BLE001 - one broken sink must not stop the others
                log.error("%s stopped: %s", sink.name, e)
                self.remove(sink)
                if self.on_sink_failed is not None:
                    self.on_sink_failed(sink, e)

    def close(self) -> None:
        for sink in self.sinks:
            _close_quietly(sink)
        self.sinks = []


def _close_quietly(sink: Sink) -> None:
    try:
        sink.close()
    except Exception as e:  # noqa: BLE001
        log.debug("closing %s: %s", sink.name, e)
