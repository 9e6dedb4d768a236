"""Reading user images (avatars) robustly: one clear error for anything that is not a usable
picture, and every common format variant normalised to 8-bit BGR."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

MAX_AVATAR_SIDE = 1920


class ImageError(ValueError):
    """An image file cannot be used; the message names the file and the reason."""


def load_image(path: str | Path) -> np.ndarray:
    """Any image file OpenCV can decode -> H x W x 3 uint8 BGR.

    EXIF orientation is honoured; grayscale is expanded; alpha is flattened onto white; 16-bit and
    float images are scaled to 8 bits."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    data = np.fromfile(str(path), dtype=np.uint8)   # also works for non-ASCII paths on Windows
    if data.size == 0:
        raise ImageError(f"{path}: file is empty")
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise ImageError(f"{path}: not an image OpenCV can read (corrupt, truncated or unsupported format)")
    if raw.ndim == 3 and raw.shape[2] == 4:
        # Decoding with alpha skips EXIF orientation; formats with alpha (PNG, WebP) rarely carry it.
        image = _flatten_alpha(_to_uint8(raw))
    else:
        # Decode again in colour mode so OpenCV applies the EXIF orientation; keep the bit depth.
        oriented = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        image = _to_uint8(oriented if oriented is not None else raw)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"{path}: unsupported channel layout {raw.shape}")
    if min(image.shape[:2]) < 32:
        raise ImageError(f"{path}: image is too small ({image.shape[1]}x{image.shape[0]} px)")
    return np.ascontiguousarray(image)


def limit_size(image: np.ndarray, max_side: int = MAX_AVATAR_SIDE) -> np.ndarray:
    """Downscale (area interpolation, aspect kept) so that neither side exceeds ``max_side``."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    log.info("avatar downscaled from %dx%d to %dx%d", w, h, *size)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ImageError(f"unsupported pixel type {image.dtype}")


def _flatten_alpha(bgra: np.ndarray) -> np.ndarray:
    alpha = bgra[..., 3:4].astype(np.float32) / 255.0
    rgb = bgra[..., :3].astype(np.float32)
    return (rgb * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
