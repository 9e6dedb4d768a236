"""Eye and lip open ratios on a landmark set: opening over width, scale and rotation invariant."""
from __future__ import annotations

import numpy as np

from .layout import LandmarkLayout, Quad

EPS = 1e-6


def _as_batch(landmarks: np.ndarray, layout: LandmarkLayout) -> np.ndarray:
    lmk = np.asarray(landmarks)
    if lmk.ndim == 2:
        lmk = lmk[None]
    if lmk.ndim != 3 or lmk.shape[1] != layout.num_points or lmk.shape[2] not in (2, 3):
        raise ValueError(f"landmarks: expected shape Bx{layout.num_points}x2 (or {layout.num_points}x2) "
                         f"for layout {layout.name}, got {'x'.join(map(str, lmk.shape))}")
    return lmk[..., :2]


def distance_ratio(landmarks: np.ndarray, quad: Quad) -> np.ndarray:
    """|p_a - p_b| / (|p_c - p_d| + 1e-6) per batch row (B x 1), in the landmarks' dtype."""
    a, b, c, d = quad
    num = np.linalg.norm(landmarks[:, a] - landmarks[:, b], axis=1, keepdims=True)
    den = np.linalg.norm(landmarks[:, c] - landmarks[:, d], axis=1, keepdims=True)
    return num / (den + EPS)


def eye_open_ratios(landmarks: np.ndarray, layout: LandmarkLayout) -> np.ndarray:
    """B x 2: [left eye, right eye] lid distance over eye width."""
    lmk = _as_batch(landmarks, layout)
    ratios = np.concatenate([distance_ratio(lmk, layout.left_eye_ratio),
                             distance_ratio(lmk, layout.right_eye_ratio)], axis=1)
    return ratios * np.asarray(layout.eye_ratio_scale, ratios.dtype)


def lip_open_ratio(landmarks: np.ndarray, layout: LandmarkLayout) -> np.ndarray:
    """B x 1: inner-lip opening over mouth width."""
    ratio = distance_ratio(_as_batch(landmarks, layout), layout.lip_ratio)
    return ratio * np.asarray(layout.lip_ratio_scale, ratio.dtype)
