"""Temporal smoothing: the One Euro filter (Casiez et al., CHI 2012) and its use on crop framing.

A One Euro filter is a low-pass filter whose cutoff rises with the signal's speed: still signals
are smoothed hard (no jitter), fast ones barely (no lag).

Its state stays finite whatever the time steps (the times may come from a render server's client,
so they may be hostile): a step under ``MIN_STEP_S`` (zero, negative, or below float32's
resolution, where the speed would divide by zero on a float32 tensor) and a non-finite time leave
the state as it was, and a step over ``MAX_STEP_S`` counts as that."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from .crop import CropParams

Array = TypeVar("Array", np.ndarray, torch.Tensor)

# Steps under 0.1 ms are skipped rather than stretched to it: two samples that close are the same
# instant (no camera runs at 10 kHz), and stretching would inflate their speed, opening the
# cutoff for a frame. The sample's time is not kept either, so tiny steps add up to a real one.
MIN_STEP_S = 1e-4
# Over an hour, the step's weight is 1 to float precision anyway; capping keeps inf out of the math.
MAX_STEP_S = 3600.0


def _alpha(cutoff_hz: Array | float, dt: float) -> Array | float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Element-wise One Euro filter on arrays of a fixed shape: numpy arrays (float64), or torch
    tensors, which stay on their device (the animator filters its motion on the GPU without a
    host copy; the math is element-wise arithmetic, the same for both).

    min_cutoff (Hz): smoothing of a still signal (lower = smoother). beta: how fast the cutoff
    rises with speed (higher = less lag on fast motion). d_cutoff (Hz): smoothing of the speed."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        # min_cutoff and beta may also be set to arrays of the signal's shape (one per element;
        # an infinite cutoff passes that element through)
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("OneEuroFilter: min_cutoff and d_cutoff must be > 0, beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | torch.Tensor | None = None
        self._dx: np.ndarray | torch.Tensor | None = None
        self._t: float | None = None

    def __call__(self, x: Array, t: float) -> Array:
        if not isinstance(x, torch.Tensor):
            x = np.asarray(x, dtype=np.float64)
        if (self._x is None or self._t is None or x.shape != self._x.shape
                or type(x) is not type(self._x) or _device(x) != _device(self._x)):
            if math.isfinite(t):     # a state starts at a usable time only
                self._x, self._dx, self._t = _copy(x), x * 0, t
            return _copy(x)
        dt = t - self._t
        if not (math.isfinite(t) and dt >= MIN_STEP_S):    # same, older or nearly the same time: nothing new
            return _copy(self._x)
        dt = min(dt, MAX_STEP_S)
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return _copy(self._x)


def _copy(x: Array) -> Array:
    return x.clone() if isinstance(x, torch.Tensor) else x.copy()


def _device(x: Array) -> object:
    return x.device if isinstance(x, torch.Tensor) else None


@dataclass
class CropSmoothing:
    """Tunable parameters of the driving-crop smoother (speeds are in crop sides per second)."""

    min_cutoff: float = 0.5
    beta: float = 4.0
    d_cutoff: float = 1.0


class CropSmoother:
    """One Euro filter on the crop's centre, log side and angle, measured in units of the crop
    side so that the tuning does not depend on the camera resolution or the face's distance."""

    def __init__(self, settings: CropSmoothing | None = None) -> None:
        self.settings = settings or CropSmoothing()
        self._filter = OneEuroFilter(self.settings.min_cutoff, self.settings.beta, self.settings.d_cutoff)
        self._unit: float | None = None
        self._angle: float | None = None

    def reset(self) -> None:
        self._filter.reset()
        self._unit = None
        self._angle = None

    def update(self, params: CropParams, t: float) -> CropParams:
        s = self.settings          # read each frame: the tuning may change while tracking
        self._filter.min_cutoff, self._filter.beta, self._filter.d_cutoff = s.min_cutoff, s.beta, s.d_cutoff
        if self._unit is None:
            self._unit = params.side
        angle = params.angle
        if self._angle is not None:   # unwrap so that +179 deg -> -179 deg is a small step
            angle = self._angle + (angle - self._angle + math.pi) % (2 * math.pi) - math.pi
        self._angle = angle
        u = self._unit
        x = np.array([params.center_x / u, params.center_y / u, math.log(params.side / u), angle])
        cx, cy, log_side, a = self._filter(x, t)
        return CropParams(center_x=cx * u, center_y=cy * u, side=math.exp(log_side) * u, angle=float(a))
