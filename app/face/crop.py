"""Face crop geometry and paste-back.

The networks see faces in one fixed framing. A similarity transform (rotation, uniform scale,
translation) maps the image to the crop; it is derived from three anchors (eye centres, mouth
centre) and the extent of the landmarks, with the official ``crop_image`` formulas:

* ``uy`` = unit vector from the mid-eye point to the mouth centre, ``ux`` = ``uy`` turned by -90 deg;
* the landmarks, centred on their mean and rotated into (ux, uy), give a bounding box; its larger
  side times ``scale`` is the crop side;
* the crop centre is the box centre moved by ``vy_ratio * side`` along ``uy`` (``vx_ratio`` along
  ``ux``; the official pipeline always uses 0 there).

Transforms are 3x3 float32 matrices acting on column vectors (x, y, 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch

from .layout import LandmarkLayout


@dataclass(frozen=True)
class CropConfig:
    """Framing of a crop: output side in pixels, face-size multiplier, centre offsets."""

    dsize: int
    scale: float
    vy_ratio: float
    vx_ratio: float = 0.0


# What a crop shows where it reaches outside the image: black (the official framing's warp) or the
# image's edge pixels repeated (a face box placed by hand or by a detector: padded, never squashed).
BorderMode = Literal["zeros", "replicate"]

AVATAR_CROP = CropConfig(dsize=512, scale=2.3, vy_ratio=-0.125)   # source portrait
DRIVING_CROP = CropConfig(dsize=512, scale=2.2, vy_ratio=-0.1)    # webcam frames
NETWORK_INPUT_SIZE = 256


@dataclass(frozen=True)
class CropTransform:
    """M_o2c maps original-image pixels to crop pixels; M_c2o is its inverse."""

    M_o2c: np.ndarray
    M_c2o: np.ndarray
    dsize: int


def anchors_from_landmarks(landmarks: np.ndarray, layout: LandmarkLayout) -> tuple[np.ndarray, np.ndarray]:
    """(mid-eye point, mouth centre) of one landmark set (N x 2)."""
    pts = _check_points(landmarks, layout.num_points)
    left = pts[list(layout.left_eye)].mean(axis=0)
    right = pts[list(layout.right_eye)].mean(axis=0)
    mouth = pts[list(layout.mouth)].mean(axis=0)
    return (left + right) / 2, mouth


@dataclass(frozen=True)
class CropParams:
    """A square crop in the original image: centre (x, y), side in pixels, rotation in radians
    (positive = the face's eyes-to-mouth axis turned clockwise from straight down)."""

    center_x: float
    center_y: float
    side: float
    angle: float

    def as_array(self) -> np.ndarray:
        return np.array([self.center_x, self.center_y, self.side, self.angle])


def crop_params(landmarks: np.ndarray, layout: LandmarkLayout, config: CropConfig) -> CropParams:
    """Where the official ``crop_image`` would put its crop for these landmarks."""
    pts = _check_points(landmarks, layout.num_points).astype(np.float64)
    mid_eye, mouth = anchors_from_landmarks(pts, layout)
    box_pts = pts if layout.box is None else pts[list(layout.box)]

    uy = mouth - mid_eye
    length = float(np.linalg.norm(uy))
    uy = np.array([0.0, 1.0]) if length <= 1e-3 else uy / length
    ux = np.array([uy[1], -uy[0]])
    angle = math.acos(max(-1.0, min(1.0, ux[0])))
    if ux[1] < 0:
        angle = -angle

    center0 = box_pts.mean(axis=0)
    rotated = (box_pts - center0) @ np.stack([ux, uy]).T
    lo, hi = rotated.min(axis=0), rotated.max(axis=0)
    box_center = (lo + hi) / 2
    box_side = float(max(hi - lo)) * layout.box_scale
    center = center0 + ux * box_center[0] + uy * (box_center[1] + layout.box_shift * box_side)
    side = box_side * config.scale
    if not math.isfinite(side) or side <= 1e-3:
        raise ValueError("landmarks span no area; cannot frame a crop")
    center = center + ux * (config.vx_ratio * side) + uy * (config.vy_ratio * side)
    return CropParams(float(center[0]), float(center[1]), side, angle)


def transform_from_params(params: CropParams, dsize: int) -> CropTransform:
    """The similarity transform that maps the crop square onto a ``dsize`` x ``dsize`` image."""
    s = dsize / params.side
    cos_t, sin_t = math.cos(params.angle), math.sin(params.angle)
    cx, cy = params.center_x, params.center_y
    half = dsize / 2
    M_o2c = np.array([
        [s * cos_t, s * sin_t, half - s * (cos_t * cx + sin_t * cy)],
        [-s * sin_t, s * cos_t, half - s * (-sin_t * cx + cos_t * cy)],
        [0.0, 0.0, 1.0],
    ])
    return CropTransform(M_o2c=M_o2c.astype(np.float32), M_c2o=np.linalg.inv(M_o2c).astype(np.float32), dsize=dsize)


def crop_transform(landmarks: np.ndarray, layout: LandmarkLayout, config: CropConfig) -> CropTransform:
    """Similarity transform from the image to a ``config.dsize`` square crop around the face."""
    return transform_from_params(crop_params(landmarks, layout, config), config.dsize)


def params_from_box(x: float, y: float, size: float) -> CropParams:
    """The upright crop whose square is the box with top-left corner (``x``, ``y``) and side
    ``size`` (image pixels; the box may reach outside the image)."""
    if not all(math.isfinite(v) for v in (x, y, size)) or size <= 1e-3:
        raise ValueError(f"crop box: expected finite numbers and a positive side, got {x},{y},{size}")
    return CropParams(x + size / 2, y + size / 2, float(size), 0.0)


def box_from_params(params: CropParams) -> tuple[float, float, float]:
    """(x, y, size) of the upright square with the crop's centre and side: the crop itself when
    its angle is 0, else the upright box a display can draw for it."""
    half = params.side / 2
    return params.center_x - half, params.center_y - half, params.side


def transform_from_box(x: float, y: float, size: float, dsize: int = AVATAR_CROP.dsize) -> CropTransform:
    """Image -> ``dsize`` crop of an upright square box (top-left ``x``, ``y``, side ``size``,
    image pixels): the box's corners go to the crop's corners (0, 0) and (dsize, dsize), no
    rotation. Warp it with ``border="replicate"`` so that a box reaching outside the image is padded."""
    return transform_from_params(params_from_box(x, y, size), dsize)


def transform_points(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply a 3x3 (or 2x3) affine matrix to N x 2 points."""
    pts = np.asarray(points)
    return (pts[..., :2] @ M[:2, :2].T + M[:2, 2]).astype(np.float32)


def warp_to_crop(image: np.ndarray, transform: CropTransform, *, precise: bool = False,
                 border: BorderMode = "zeros") -> np.ndarray:
    """The crop image (bilinear). Outside the original image it is black (``border="zeros"``, the
    official framing) or the image's nearest edge pixel (``"replicate"``, for face boxes).

    ``precise=True`` interpolates in floating point and rounds (as OpenCV 5 does; ~5x slower):
    use it for the avatar crop, made once. The default uses OpenCV 4's fixed-point warp (sample
    positions on a 1/32-pixel lattice, at most a few grey levels off), fast enough per frame."""
    size = (transform.dsize, transform.dsize)
    if precise:
        return warp_affine_precise(image, transform.M_o2c, size, border=border)
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(image, transform.M_o2c[:2], size, flags=cv2.INTER_LINEAR, borderMode=mode)


def crop_for_network(image: np.ndarray, params: CropParams, size: int = NETWORK_INPUT_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` network input for a crop, made fast for every video frame.

    The official path warps to 512 and area-resizes to 256. Here only the image region under the
    crop is halved with Gaussian pyramids until at most 2 source pixels remain per output pixel,
    then warped straight to ``size``: the same anti-aliasing in about half the time (mean
    difference ~1 grey level)."""
    transform = transform_from_params(params, size)
    M = transform.M_o2c.astype(np.float64)
    x0, y0, x1, y1 = _source_box(transform.M_c2o, (size, size), image.shape[:2])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((size, size) + image.shape[2:], image.dtype)
    roi = image[y0:y1, x0:x1]
    M = M @ np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    ratio = params.side / size
    while ratio > 2.0 and min(roi.shape[:2]) >= 16:
        roi = cv2.pyrDown(roi)
        M = M @ np.diag([2.0, 2.0, 1.0])
        ratio /= 2.0
    return cv2.warpAffine(roi, M[:2], (size, size), flags=cv2.INTER_LINEAR)


def _source_box(M_c2o: np.ndarray, dsize: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) of the image pixels that a crop of ``dsize`` samples."""
    w, h = dsize
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    src = corners @ np.asarray(M_c2o, np.float64)[:2, :2].T + np.asarray(M_c2o, np.float64)[:2, 2]
    height, width = shape
    x0, y0 = np.maximum(np.floor(src.min(axis=0)).astype(int) - 1, 0)
    x1 = min(width, int(np.floor(src[:, 0].max())) + 3)
    y1 = min(height, int(np.floor(src[:, 1].max())) + 3)
    return int(x0), int(y0), int(x1), int(y1)


def warp_affine_precise(image: np.ndarray, M: np.ndarray, dsize: tuple[int, int], *,
                        border: BorderMode = "zeros") -> np.ndarray:
    """``cv2.warpAffine(image, M, dsize, INTER_LINEAR)`` with exact bilinear weights and
    rounding; outside the image zeros (``border="zeros"``) or the nearest edge pixel
    (``"replicate"``, OpenCV's BORDER_REPLICATE). image: H x W (x C) uint8; M: 2x3 or 3x3;
    dsize: (w, h)."""
    w, h = dsize
    if border not in ("zeros", "replicate"):
        raise ValueError(f"border: expected 'zeros' or 'replicate', got {border!r}")
    inv = cv2.invertAffineTransform(np.asarray(M, np.float64)[:2])
    # Only the source region the crop touches is converted.
    x0, y0, x1, y1 = _source_box(inv, dsize, image.shape[:2])
    if border == "replicate":
        # The region is clamped to the image, so its edges are the image's wherever the crop
        # reaches outside; "border" padding then repeats them (even for a crop wholly outside).
        height, width = image.shape[:2]
        x0, y0 = min(x0, width - 1), min(y0, height - 1)
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((h, w) + image.shape[2:], image.dtype)
    roi = image[y0:y1, x0:x1]
    src = torch.from_numpy(np.ascontiguousarray(roi.reshape(roi.shape[0], roi.shape[1], -1)))
    src = src.permute(2, 0, 1)[None].float()
    # Pixel coordinates -> grid_sample's [-1, 1] with align_corners=True (pixel centres at the ends).
    rh, rw = roi.shape[:2]
    norm = np.array([[2.0 / max(rw - 1, 1), 0.0, -1.0], [0.0, 2.0 / max(rh - 1, 1), -1.0]])
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    theta = norm @ shift @ np.vstack([inv, [0.0, 0.0, 1.0]])
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    gx = theta[0, 0] * xs[None, :] + theta[0, 1] * ys[:, None] + theta[0, 2]
    gy = theta[1, 0] * xs[None, :] + theta[1, 1] * ys[:, None] + theta[1, 2]
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1).astype(np.float32))[None]
    padding = "border" if border == "replicate" else "zeros"
    out = torch.nn.functional.grid_sample(src, grid, mode="bilinear", padding_mode=padding, align_corners=True)
    out = out[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out.reshape((h, w) + image.shape[2:])


def resize_for_network(crop: np.ndarray, size: int = NETWORK_INPUT_SIZE) -> np.ndarray:
    """Area-interpolated resize of a crop to the network input side."""
    if crop.shape[0] == size and crop.shape[1] == size:
        return crop
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class PasteMask:
    """Blending mask in original-image coordinates (float32 in [0, 1], H x W x C) and the box
    (x0, y0, x1, y1) outside which it is zero, so per-frame blending only touches that box.
    ``box_weights`` / ``box_complement``: the mask inside the box as one H x W channel and 1 - it,
    for OpenCV's fast blend (None when the channels differ)."""

    mask: np.ndarray
    box: tuple[int, int, int, int]
    box_weights: np.ndarray | None = None
    box_complement: np.ndarray | None = None


def prepare_paste_mask(mask_crop: np.ndarray, M_c2o: np.ndarray, image_size: tuple[int, int]) -> PasteMask:
    """Warp the crop-space mask (uint8 0-255, crop side x crop side x C) into the original image
    (``image_size`` = (width, height)). Made once per avatar, so it uses the precise warp."""
    return paste_mask_from_array(warp_affine_precise(mask_crop, M_c2o, image_size).astype(np.float32) / 255.0)


def paste_mask_from_array(mask: np.ndarray) -> PasteMask:
    """A ``PasteMask`` of a mask already in image coordinates (H x W x C float32 in [0, 1]): its
    nonzero box and, when the channels agree there, the fast blend's weights."""
    nonzero = np.argwhere(mask.reshape(mask.shape[0], mask.shape[1], -1).max(axis=2) > 0)
    if nonzero.size == 0:
        box = (0, 0, 0, 0)
    else:
        (y0, x0), (y1, x1) = nonzero.min(axis=0), nonzero.max(axis=0) + 1
        box = (int(x0), int(y0), int(x1), int(y1))
    x0, y0, x1, y1 = box
    inside = mask[y0:y1, x0:x1].reshape(y1 - y0, x1 - x0, -1)
    if (inside == inside[..., :1]).all():
        weights = np.ascontiguousarray(inside[..., 0])
        return PasteMask(mask=mask, box=box, box_weights=weights, box_complement=1.0 - weights)
    return PasteMask(mask=mask, box=box)


def paste_back(crop: np.ndarray, M_c2o: np.ndarray, image: np.ndarray, paste: PasteMask, *,
               precise: bool = False) -> np.ndarray:
    """Blend the (animated) crop into a copy of ``image``: mask * warp(crop) + (1 - mask) * image,
    truncated to uint8 like the official code. Only the mask's box is computed."""
    h, w = image.shape[:2]
    if paste.mask.shape[:2] != (h, w):
        raise ValueError(f"paste mask: expected {h}x{w} to match the image, got "
                         f"{paste.mask.shape[0]}x{paste.mask.shape[1]}")
    result = image.copy()
    x0, y0, x1, y1 = paste.box
    if x1 <= x0 or y1 <= y0:
        return result
    # Warp straight into the box: shift the crop->image transform by the box origin.
    M_box = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]]) @ np.vstack([M_c2o[:2], [0, 0, 1]])
    size = (x1 - x0, y1 - y0)
    if precise:
        warped = warp_affine_precise(crop, M_box, size)
    else:
        warped = cv2.warpAffine(crop, M_box[:2], size, flags=cv2.INTER_LINEAR)
    if paste.box_weights is not None and warped.dtype == np.uint8 and image.dtype == np.uint8:
        # OpenCV's vectorised blend; it rounds where the official code truncates (<= 1 grey level)
        result[y0:y1, x0:x1] = cv2.blendLinear(warped, image[y0:y1, x0:x1], paste.box_weights, paste.box_complement)
        return result
    mask = paste.mask[y0:y1, x0:x1]
    blended = mask * warped + (1.0 - mask) * image[y0:y1, x0:x1]
    result[y0:y1, x0:x1] = np.clip(blended, 0, 255).astype(np.uint8)
    return result


def _check_points(landmarks: np.ndarray, num_points: int) -> np.ndarray:
    pts = np.asarray(landmarks)
    if pts.ndim != 2 or pts.shape[0] != num_points or pts.shape[1] < 2:
        raise ValueError(f"landmarks: expected shape {num_points}x2, got {'x'.join(map(str, pts.shape))}")
    pts = pts[:, :2]
    if not np.isfinite(pts).all():
        raise ValueError("landmarks contain NaN or inf")
    return pts
