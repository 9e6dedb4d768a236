"""Where the face box of an avatar image should go when the face mesh finds no human face: a cat's
face found by OpenCV's cat-face detector, else a square the user moves onto the face."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .framing import AvatarBox, AvatarKind

log = logging.getLogger(__name__)

CAT_CASCADE = "haarcascade_frontalcatface_extended.xml"
# The detector runs on a copy whose longest side is DETECT_SIDE (a few tens of ms on any image),
# padded on every side by DETECT_PAD of it with the edge pixels: the cascade only fires on a whole
# face with some surroundings, and pet portraits are often close-ups whose face touches the edges.
DETECT_SIDE = 440
DETECT_PAD = 0.3
DETECT_SCALE_STEP = 1.05
DETECT_MIN_NEIGHBOURS = 3
DETECT_MIN_FACE = 0.1            # of DETECT_SIDE: smaller faces are too small to animate anyway
# The cascade's square spans a cat's face from the ears' base to the chin, about what the human
# crop's landmark box spans; the human crop is 2.3x that, moved up by 0.125 of its side for the
# hair. The ears rise about a third of the square above it: 2.1x, moved up by 0.08, keeps them in
# and gives the face a little more of the network's pixels (checked on the shipped cat photo).
CAT_BOX_SCALE = 2.1
CAT_BOX_SHIFT = -0.08            # crop centre moved by this times its side along y
# Without a face: a square of this fraction of the image's shorter side, centred horizontally,
# its centre at this fraction of the height (portraits keep the face in the upper half).
FALLBACK_SIDE = 0.7
FALLBACK_CENTER_Y = 0.4


@dataclass(frozen=True)
class BoxSuggestion:
    """A face box proposed for an image: ``box`` in its pixels, ``kind`` the avatar kind it implies
    (None: unknown, the user decides), ``reason`` one line to show the user."""

    box: AvatarBox
    kind: AvatarKind | None
    reason: str


def suggest_avatar_box(image: np.ndarray) -> BoxSuggestion:
    """A face box for ``image`` (H x W x 3 BGR uint8): the crop box around a cat face when the
    detector finds one (kind "animal"), else a centred square on the upper part of the image.

    Meant for images in which the face mesh found no human face: the cat detector also fires on
    some human faces."""
    _check_image(image)
    height, width = image.shape[:2]
    rect = find_cat_face(image)
    if rect is not None:
        x, y, size = cat_crop_box(rect)
        return BoxSuggestion(AvatarBox(x, y, size), "animal", "cat face found")
    side = max(16.0, FALLBACK_SIDE * min(width, height))
    x = (width - side) / 2
    y = min(max(0.0, FALLBACK_CENTER_Y * height - side / 2), max(0.0, height - side))
    return BoxSuggestion(AvatarBox(x, y, side), None, "no face found: place the box on the face")


def find_cat_face(image: np.ndarray) -> tuple[float, float, float] | None:
    """The most certain upright cat face in ``image`` (H x W x 3 BGR uint8) as the detector's tight
    square (x, y, side in image pixels; it may reach past the edges), or None."""
    _check_image(image)
    height, width = image.shape[:2]
    s = DETECT_SIDE / max(height, width)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (max(1, round(width * s)), max(1, round(height * s))), interpolation=cv2.INTER_AREA)
    pad = round(DETECT_PAD * DETECT_SIDE)
    padded = cv2.equalizeHist(cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
    min_face = round(DETECT_MIN_FACE * DETECT_SIDE)
    classifier, lock = _cat_classifier()
    with lock:   # one cascade object is not safe to use from two threads at once
        rects, neighbours = classifier.detectMultiScale2(padded, scaleFactor=DETECT_SCALE_STEP,
                                                         minNeighbors=DETECT_MIN_NEIGHBOURS,
                                                         minSize=(min_face, min_face))
    if len(rects) == 0:
        return None
    # the most neighbours (overlapping hits) is the most certain; ties go to the larger face
    best = max(range(len(rects)), key=lambda i: (int(neighbours[i]), int(rects[i][2])))
    x, y, w, h = (float(v) for v in rects[best])
    log.debug("cat face %s (%d neighbours) of %d found", rects[best], neighbours[best], len(rects))
    return (x - pad) / s, (y - pad) / s, max(w, h) / s


def cat_crop_box(rect: tuple[float, float, float]) -> tuple[float, float, float]:
    """The detector's tight square (x, y, side) -> the crop box (x, y, side) that frames the cat's
    head as the human crop frames a person's (see CAT_BOX_SCALE)."""
    x, y, side = rect
    size = side * CAT_BOX_SCALE
    cx, cy = x + side / 2, y + side / 2 + CAT_BOX_SHIFT * size
    return cx - size / 2, cy - size / 2, size


@lru_cache(maxsize=1)
def _cat_classifier() -> tuple[cv2.CascadeClassifier, threading.Lock]:
    path = cv2.data.haarcascades + CAT_CASCADE
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise RuntimeError(f"cat face detector: cannot load {path}")
    return classifier, threading.Lock()


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image: expected HxWx3 uint8 BGR, got {shape} {getattr(image, 'dtype', type(image))}")
