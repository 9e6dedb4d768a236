"""Person segmentation of avatar images, behind a small interface.

The app only sees ``PersonSegmenter``: an H x W x 3 uint8 BGR image in, an H x W float32 map of
person probability in [0, 1] out. ``MediaPipeSelfieSegmentation`` is the real implementation (its
models ship inside the ``mediapipe`` wheel; imported lazily, since not every machine has it);
``EllipseSegmenter`` is a deterministic stand-in without dependencies (tests, the GPU machine).

``PersonMaskTracker`` keeps one output region's segmentation over time: re-segmented every
``every``-th frame (``SEGMENT_EVERY``) and smoothed exponentially, so a still head does not flicker.
"""
from __future__ import annotations

import logging
from typing import Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

SEGMENT_SIDE = 256       # the longer side of what is segmented per frame (the model's input side)
SEGMENT_EVERY = 3        # a region is segmented on every third frame


class PersonSegmenter(Protocol):
    def segment(self, image_bgr: np.ndarray) -> np.ndarray:
        """Person probability of every pixel: H x W float32 in [0, 1]."""

    def close(self) -> None:
        ...


def _check_image(image_bgr: np.ndarray) -> None:
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"segmentation: expected HxWx3 uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}")


class MediaPipeSelfieSegmentation:
    """``PersonSegmenter`` on MediaPipe Selfie Segmentation (the general 256x256 model, which keeps
    hair and shoulders better than the landscape one on portraits)."""

    def __init__(self) -> None:
        import mediapipe as mp

        self._model = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def segment(self, image_bgr: np.ndarray) -> np.ndarray:
        _check_image(image_bgr)
        mask = self._model.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)).segmentation_mask
        return np.clip(mask, 0.0, 1.0).astype(np.float32, copy=False)

    def close(self) -> None:
        self._model.close()


class EllipseSegmenter:
    """Deterministic stand-in: the person is an upright ellipse centred at (``cx``, ``cy``) with
    half-axes (``rx``, ``ry``), all as fractions of the image's width and height; hard edge."""

    def __init__(self, cx: float = 0.5, cy: float = 0.6, rx: float = 0.35, ry: float = 0.5) -> None:
        self.cx, self.cy, self.rx, self.ry = cx, cy, rx, ry

    def segment(self, image_bgr: np.ndarray) -> np.ndarray:
        _check_image(image_bgr)
        h, w = image_bgr.shape[:2]
        x = ((np.arange(w, dtype=np.float32) + 0.5) / w - self.cx) / self.rx
        y = ((np.arange(h, dtype=np.float32) + 0.5) / h - self.cy) / self.ry
        return (x[None, :] ** 2 + y[:, None] ** 2 <= 1.0).astype(np.float32)

    def close(self) -> None:
        pass


def segmentation_size(width: int, height: int, side: int = SEGMENT_SIDE) -> tuple[int, int]:
    """(width, height) of a region scaled down so that its longer side is at most ``side``."""
    scale = min(1.0, side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


class PersonMaskTracker:
    """The smoothed person probability of one output region, at segmentation size.

    ``initial``: the probability to start from (the still avatar's, h x w float32). ``observe``
    segments the region's newest pixels on every ``every``-th call (``due``) and moves the smoothed
    map towards the result by ``rate`` (exponential smoothing: a still head gives a still mask).
    ``version`` counts those updates, so that what is made from the map can be kept until it
    changes; ``probability`` changes only through ``observe``."""

    def __init__(self, segmenter: PersonSegmenter, initial: np.ndarray, *, every: int = SEGMENT_EVERY,
                 rate: float = 0.5) -> None:
        if every < 1 or not 0.0 < rate <= 1.0:
            raise ValueError(f"mask tracker: expected every >= 1 and 0 < rate <= 1, got {every}, {rate}")
        self.segmenter = segmenter
        self.every = every
        self.rate = rate
        self.probability = np.ascontiguousarray(initial, dtype=np.float32)
        self.version = 0
        self._calls = 0
        self._uint8: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the map and of the images ``observe`` takes."""
        return self.probability.shape[1], self.probability.shape[0]

    @property
    def due(self) -> bool:
        """True when the next ``observe`` segments (only then does it need the region)."""
        return self._calls % self.every == 0

    def observe(self, region_bgr: np.ndarray | None) -> None:
        """The region as just shown (h x w x 3 uint8 BGR, at ``size``), before compositing; None
        when not ``due`` (the call is counted, nothing is segmented)."""
        due = self.due
        self._calls += 1
        if not due:
            return
        if region_bgr is None or region_bgr.shape[:2] != self.probability.shape:
            got = "nothing" if region_bgr is None else f"{region_bgr.shape[1]}x{region_bgr.shape[0]}"
            raise ValueError(f"mask tracker: expected a {self.size[0]}x{self.size[1]} region, got {got}")
        fresh = self.segmenter.segment(region_bgr)
        self.probability += self.rate * (fresh - self.probability)
        self.version += 1
        self._uint8 = None

    def as_uint8(self) -> np.ndarray:
        """The map as h x w uint8 (0..255), the form that is blended and uploaded; the same array
        until the map changes (do not modify it)."""
        if self._uint8 is None:
            self._uint8 = (self.probability * 255.0 + 0.5).astype(np.uint8)
        return self._uint8
