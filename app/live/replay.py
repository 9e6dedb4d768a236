"""Landmarks tracked beforehand and replayed in place of tracking.

A landmark file holds, for the frames of one video placed on the benchmark canvas
(``app.diagnostics.tracking_bench.frames_720p``), the face landmarks MediaPipe found in each frame, and those of
one avatar image. Made once where MediaPipe is installed, it lets the live loop run where it is not
(the lent GPU machine), and takes MediaPipe's cost out of a loop benchmark.

File format (``.npz``): ``landmarks`` float32 F x N x 2 in canvas pixels (NaN where no face was
found), ``avatar`` float32 N x 2 in avatar-image pixels, ``layout`` the landmark layout's name,
``video`` and ``avatar_image`` the file names they came from.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..face.driving import DrivingCropper, DrivingFace
from ..face.layout import MEDIAPIPE_478, LandmarkLayout
from ..face.tracker import MediaPipeFaceMesh
from ..imaging.image_io import MAX_AVATAR_SIDE, limit_size, load_image

log = logging.getLogger(__name__)


class ReplayLandmarks:
    """``LandmarkSource`` that replays landmarks computed beforehand, frame by frame (looping), and
    reports ``faces`` for any image given to ``detect_faces``."""

    layout = MEDIAPIPE_478

    def __init__(self, landmarks: list[np.ndarray | None], faces: list[np.ndarray] | None = None) -> None:
        self.landmarks, self.faces, self.i = landmarks, faces or [], 0

    def track(self, frame: np.ndarray) -> np.ndarray | None:
        lmk = self.landmarks[self.i % len(self.landmarks)]
        self.i += 1
        return lmk

    def detect_faces(self, image: np.ndarray) -> list[np.ndarray]:
        return list(self.faces)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class LandmarkRecording:
    frames: list[np.ndarray | None]      # per video frame: N x 2 float32, or None without a face
    avatar: np.ndarray                   # N x 2 float32, avatar-image pixels
    layout: LandmarkLayout
    video: str                           # file names, for the record
    avatar_image: str

    def source(self) -> ReplayLandmarks:
        """A fresh replaying source (frame 0 first) whose ``detect_faces`` finds the avatar."""
        return ReplayLandmarks(self.frames, [self.avatar])

    def driving_faces(self, frames: list[np.ndarray], fps: float = 25.0) -> Iterator[DrivingFace | None]:
        """The driving face of each of ``frames`` (the recorded video's), cropped as the tracking
        stage does at the video's own times (frame index / ``fps``); None where no face was tracked."""
        cropper = DrivingCropper(self.source())
        for i, frame in enumerate(frames):
            yield cropper.process(frame, i / fps)


def record_landmarks(frames: list[np.ndarray], avatar: Path, *, video: str = "") -> LandmarkRecording:
    """Track ``frames`` in order with MediaPipe, and find the face in the avatar image as avatar
    preparation sees it (downscaled the same way; the largest face)."""
    image = limit_size(load_image(avatar), MAX_AVATAR_SIDE)
    mesh = MediaPipeFaceMesh()
    try:
        tracked = [mesh.track(f) for f in frames]
        faces = mesh.detect_faces(image)
    finally:
        mesh.close()
    if not faces:
        raise ValueError(f"{avatar}: no face found")
    return LandmarkRecording(frames=tracked, avatar=faces[0].astype(np.float32), layout=mesh.layout, video=video,
                             avatar_image=Path(avatar).name)


def save_landmarks(recording: LandmarkRecording, path: Path) -> None:
    n = recording.avatar.shape[0]
    stack = np.stack([np.full((n, 2), np.nan, np.float32) if f is None else f.astype(np.float32)
                      for f in recording.frames])
    np.savez_compressed(path, landmarks=stack, avatar=recording.avatar.astype(np.float32),
                        layout=np.array(recording.layout.name), video=np.array(recording.video),
                        avatar_image=np.array(recording.avatar_image))


def load_landmarks(path: Path, expected_frames: int | None = None) -> LandmarkRecording:
    """Read a file written by ``save_landmarks``; ``ValueError`` naming the file if it is not one,
    has another layout than MediaPipe's, or covers another number of frames than expected."""
    try:
        with np.load(path, allow_pickle=False) as z:
            stack, avatar, layout = z["landmarks"], z["avatar"], str(z["layout"])
            video, avatar_image = str(z["video"]), str(z["avatar_image"])
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a landmark file ({e})") from None
    if layout != MEDIAPIPE_478.name or stack.ndim != 3 or stack.shape[1:] != avatar.shape:
        raise ValueError(f"{path}: landmarks of layout {layout!r} with shape {stack.shape}, expected "
                         f"{MEDIAPIPE_478.name!r} with F x {avatar.shape[0]} x 2")
    if expected_frames is not None and len(stack) != expected_frames:
        raise ValueError(f"{path}: landmarks for {len(stack)} frames, but the video has {expected_frames}; "
                         f"make the file again from this video")
    frames = [None if np.isnan(f).any() else f for f in stack]
    return LandmarkRecording(frames=frames, avatar=avatar, layout=MEDIAPIPE_478, video=video,
                             avatar_image=avatar_image)
