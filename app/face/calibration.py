"""Framing calibration of a landmark layout against a video already in the official framing.

A video cropped by the official pipeline (such as the kit's d0.mp4) should give an identity driving
crop on its own frames: centre in the middle, side equal to the frame side. These functions measure
how far a layout is from that and fit its ``box_scale`` / ``box_shift``."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .crop import CropConfig, crop_params
from .layout import LandmarkLayout


@dataclass(frozen=True)
class FramingError:
    """Per frame: distance of the crop centre from the frame centre (px) and side / frame side - 1."""

    center_offset_px: np.ndarray
    scale_error: np.ndarray

    def summary(self) -> str:
        c, s = self.center_offset_px, np.abs(self.scale_error)
        return (f"centre offset px: median {np.median(c):.2f}, max {c.max():.2f}; "
                f"|scale error|: median {np.median(s) * 100:.2f}%, max {s.max() * 100:.2f}%")


def framing_error(frames: Sequence[np.ndarray], layout: LandmarkLayout, config: CropConfig,
                  frame_size: int) -> FramingError:
    offsets, scales = [], []
    for lmk in frames:
        p = crop_params(lmk, layout, config)
        offsets.append(math.hypot(p.center_x - frame_size / 2, p.center_y - frame_size / 2))
        scales.append(p.side / frame_size - 1.0)
    return FramingError(np.array(offsets), np.array(scales))


def fit_box_calibration(frames: Sequence[np.ndarray], layout: LandmarkLayout, config: CropConfig,
                        frame_size: int) -> tuple[float, float]:
    """(box_scale, box_shift) that make the median crop of ``frames`` the identity."""
    raw = replace(layout, box_scale=1.0, box_shift=0.0)
    sides = np.array([crop_params(lmk, raw, config).side for lmk in frames])
    box_scale = float(np.median(frame_size / sides))
    scaled = replace(raw, box_scale=box_scale)
    shifts = []
    for lmk in frames:
        p = crop_params(lmk, scaled, config)
        uy = np.array([-math.sin(p.angle), math.cos(p.angle)])   # eyes-to-mouth direction
        along = float(np.dot(np.array([frame_size / 2 - p.center_x, frame_size / 2 - p.center_y]), uy))
        shifts.append(along / (p.side / config.scale))
    return box_scale, float(np.median(shifts))
