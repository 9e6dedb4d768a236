"""Landmark layouts: which points of a landmark set give the crop anchors and the eye/lip ratios.

The crop and ratio code works on any layout, so a new landmark source (MediaPipe's 478 points,
the official 203-point model, ...) only needs a ``LandmarkLayout``."""
from __future__ import annotations

from dataclasses import dataclass

Quad = tuple[int, int, int, int]


@dataclass(frozen=True)
class LandmarkLayout:
    """Indices into one landmark set.

    left_eye / right_eye / mouth: points averaged into the crop anchors (eye centres, mouth centre).
    box: points whose extent gives the face size (None = all points).
    left_eye_ratio / right_eye_ratio / lip_ratio: (a, b, c, d) for |p_a - p_b| / |p_c - p_d|,
    i.e. opening over width."""

    name: str
    num_points: int
    left_eye: tuple[int, ...]
    right_eye: tuple[int, ...]
    mouth: tuple[int, ...]
    left_eye_ratio: Quad
    right_eye_ratio: Quad
    lip_ratio: Quad
    box: tuple[int, ...] | None = None


# The official 203-point layout (LivePortrait's landmark model): eye contours 0-23 and 24-47, lip
# corners 48/66, inner lip 90/102.
LANDMARKS_203 = LandmarkLayout(
    name="liveportrait-203",
    num_points=203,
    left_eye=(0, 6, 12, 18),
    right_eye=(24, 30, 36, 42),
    mouth=(48, 66),
    left_eye_ratio=(6, 18, 0, 12),
    right_eye_ratio=(30, 42, 24, 36),
    lip_ratio=(90, 102, 48, 66),
)
