"""Face landmarks from MediaPipe Face Mesh, behind a small interface.

The rest of the app only sees ``LandmarkSource``: landmarks (N x 2 pixel coordinates in a known
``LandmarkLayout``) come out, crops are made from them elsewhere. Another landmark model can be
added by implementing the two methods.

* ``detect_faces`` (avatar images): static mode, every face in the picture.
* ``track`` (webcam stream): tracking mode, one call per frame, one face. MediaPipe re-detects by
  itself when tracking is lost; with several faces in view we keep the one closest to the face
  tracked last, so a person walking behind the user does not take over the avatar.
"""
from __future__ import annotations

import logging
from typing import Protocol

import cv2
import numpy as np

from .layout import MEDIAPIPE_478, LandmarkLayout

log = logging.getLogger(__name__)


class LandmarkSource(Protocol):
    layout: LandmarkLayout

    def detect_faces(self, image_bgr: np.ndarray) -> list[np.ndarray]:
        """All faces of a still image, largest first (each N x 2 float32, pixels)."""

    def track(self, frame_bgr: np.ndarray) -> np.ndarray | None:
        """The tracked face in a video frame, or None when there is no face."""

    def reset(self) -> None:
        """Forget the tracked face (e.g. the camera changed)."""

    def close(self) -> None:
        ...


def face_extent(landmarks: np.ndarray) -> float:
    """Area of the landmarks' bounding box, to rank faces by size."""
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    return float(np.prod(hi - lo))


def detect_faces_windowed(source: LandmarkSource, image_bgr: np.ndarray, *,
                          min_aspect: float = 1.2) -> list[np.ndarray]:
    """All faces of a still image, largest first, as ``source.detect_faces`` finds them, plus those
    it finds only in square windows of the image (side: the short side, half-overlapping along the
    long one) when the image is at least ``min_aspect`` times wider than tall or taller than wide.
    A face detector that scales the whole image down (MediaPipe's runs at 128 x 128) misses faces of
    a wide group photo that it finds in its squares. The whole image's faces are kept as found; a
    window's face counts once (duplicates: centres closer than half the larger face), from the
    window where it lies furthest from the edges."""
    faces = list(source.detect_faces(image_bgr))
    h, w = image_bgr.shape[:2]
    side, length = min(h, w), max(h, w)
    if length < min_aspect * side:
        return faces
    count = int(np.ceil((length - side) / (side / 2))) + 1
    candidates: list[tuple[float, np.ndarray]] = []
    for k in range(count):
        offset = round(k * (length - side) / (count - 1))
        x, y = (offset, 0) if w >= h else (0, offset)
        for face in source.detect_faces(np.ascontiguousarray(image_bgr[y:y + side, x:x + side])):
            lo, hi = face.min(axis=0), face.max(axis=0)
            margin = float(min(lo.min(), side - hi.max()))      # how far inside its window it lies
            candidates.append((margin, (face + np.array([x, y], np.float32)).astype(np.float32)))
    for _, face in sorted(candidates, key=lambda c: -c[0]):
        if not any(_same_face(face, kept) for kept in faces):
            faces.append(face)
    return sorted(faces, key=face_extent, reverse=True)


def _same_face(a: np.ndarray, b: np.ndarray) -> bool:
    size = max(float((a.max(axis=0) - a.min(axis=0)).max()), float((b.max(axis=0) - b.min(axis=0)).max()))
    centre_a, centre_b = (a.min(axis=0) + a.max(axis=0)) / 2, (b.min(axis=0) + b.max(axis=0)) / 2
    return float(np.linalg.norm(centre_a - centre_b)) < size / 2


class MediaPipeFaceMesh:
    """``LandmarkSource`` on MediaPipe Face Mesh with iris refinement (478 points).

    max_faces: faces searched in stream mode; more than one lets us pick the right person when
    several are in view, at the cost of running the face detector on every frame (~1.5 ms)."""

    layout = MEDIAPIPE_478

    def __init__(self, *, max_faces: int = 2, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5) -> None:
        import mediapipe as mp

        self._mp_face_mesh = mp.solutions.face_mesh
        self._stream_options = dict(static_image_mode=False, max_num_faces=max_faces, refine_landmarks=True,
                                    min_detection_confidence=min_detection_confidence,
                                    min_tracking_confidence=min_tracking_confidence)
        self._stream = None
        self._static = None
        self._last_center: np.ndarray | None = None
        self._min_detection_confidence = min_detection_confidence

    # -- still images ---------------------------------------------------------------------------
    def detect_faces(self, image_bgr: np.ndarray) -> list[np.ndarray]:
        if self._static is None:
            self._static = self._mp_face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=5, refine_landmarks=True,
                min_detection_confidence=self._min_detection_confidence)
        faces = self._run(self._static, image_bgr)
        return sorted(faces, key=face_extent, reverse=True)

    # -- video ----------------------------------------------------------------------------------
    def track(self, frame_bgr: np.ndarray) -> np.ndarray | None:
        if self._stream is None:
            self._stream = self._mp_face_mesh.FaceMesh(**self._stream_options)
        faces = self._run(self._stream, frame_bgr)
        if not faces:
            return None
        if self._last_center is None or len(faces) == 1:
            face = max(faces, key=face_extent)
        else:
            face = min(faces, key=lambda f: float(np.linalg.norm(f.mean(axis=0) - self._last_center)))
        self._last_center = face.mean(axis=0)
        return face

    def reset(self) -> None:
        self._last_center = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        self.reset()
        if self._static is not None:
            self._static.close()
            self._static = None

    @staticmethod
    def _run(mesh, image_bgr: np.ndarray) -> list[np.ndarray]:
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"frame: expected HxWx3 uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}")
        h, w = image_bgr.shape[:2]
        result = mesh.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        faces = []
        for face in result.multi_face_landmarks or ():
            pts = np.array([(p.x * w, p.y * h) for p in face.landmark], dtype=np.float32)
            if np.isfinite(pts).all():
                faces.append(pts)
        return faces
