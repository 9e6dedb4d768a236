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
    box_scale, box_shift: framing calibration. The official crop constants (scale, vy_ratio) were
    tuned on the official 203-point box; another layout's box is first mapped onto it: its side is
    multiplied by ``box_scale`` and its centre moved by ``box_shift`` x that side along the
    eyes-to-mouth direction.
    left_eye_ratio / right_eye_ratio / lip_ratio: (a, b, c, d) for |p_a - p_b| / |p_c - p_d|,
    i.e. opening over width; eye_ratio_scale / lip_ratio_scale bring them onto the official scale.
    "Left" is the eye on the left of the image (the subject's right eye)."""

    name: str
    num_points: int
    left_eye: tuple[int, ...]
    right_eye: tuple[int, ...]
    mouth: tuple[int, ...]
    left_eye_ratio: Quad
    right_eye_ratio: Quad
    lip_ratio: Quad
    box: tuple[int, ...] | None = None
    box_scale: float = 1.0
    box_shift: float = 0.0
    eye_ratio_scale: float = 1.0
    lip_ratio_scale: float = 1.0


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


# MediaPipe Face Mesh (468 mesh points + 10 iris points with refine_landmarks). Indices refer to
# MediaPipe's canonical face model:
#   eye corners 33/133 (image-left eye) and 362/263, lid mid-points 159/145 and 386/374;
#   mouth corners 61/291, inner-lip mid-points 13/14;
#   box = face oval below the eyebrows + both eyebrows (the forehead part of the oval is left out:
#   hair, hats and pitch make it unstable, and the official 203-point box has no forehead either).
# Calibration (see app/face/calibration.py and tests/app/face/test_face_tracking.py): on the kit's d0.mp4,
# which is in the official driving framing, these constants make the driving crop the identity on
# average. The eye-ratio scale maps MediaPipe's open-eye level on d0.mp4 (90th percentile 0.346)
# to the official 203-point level on the kit's d5/d7/d8 templates (0.326); the lip ratios use the
# same points (inner-lip mid-points over mouth corners) and already agree (closed <= 0.005).
MEDIAPIPE_FACE_OVAL_LOWER = (58, 93, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 288, 323, 356,
                             361, 365, 377, 378, 379, 389, 397, 400, 454)
MEDIAPIPE_EYEBROWS = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107, 276, 282, 283, 285, 293, 295, 296, 300, 334, 336)

MEDIAPIPE_478 = LandmarkLayout(
    name="mediapipe-478",
    num_points=478,
    left_eye=(33, 133, 159, 145),
    right_eye=(362, 263, 386, 374),
    mouth=(61, 291),
    left_eye_ratio=(159, 145, 33, 133),
    right_eye_ratio=(386, 374, 362, 263),
    lip_ratio=(13, 14, 61, 291),
    box=MEDIAPIPE_FACE_OVAL_LOWER + MEDIAPIPE_EYEBROWS,
    box_scale=1.0176,
    box_shift=-0.0497,
    eye_ratio_scale=0.942,
    lip_ratio_scale=1.0,
)
