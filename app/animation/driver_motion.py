"""The driver's motion as the animator keeps it: one flat float32 vector per frame on the device,
its One Euro smoothing per motion group, and the user's neutral reference.

Vector layout (``driver_vector``): pitch, yaw, roll (degrees), t (3), scale (1), expression
(3K), left and right eye-open ratios, lip-open ratio. A flat vector is smoothed, averaged and
eased with a handful of device operations per frame; ``driving_motion`` turns it into the
``DrivingMotion`` that the keypoint math takes.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from engines import motion

from ..face.smoothing import OneEuroFilter
from ..settings import AnimationSettings, SmoothingGroup

log = logging.getLogger(__name__)

ANGLES, TRANSLATION, SCALE = slice(0, 3), slice(3, 6), slice(6, 7)
EXPRESSION = slice(7, 7 + 3 * motion.NUM_KP)
EYES = slice(EXPRESSION.stop, EXPRESSION.stop + 2)
LIP = slice(EYES.stop, EYES.stop + 1)
SIZE = LIP.stop
_GROUP_PARTS = {SmoothingGroup.ROTATION: (ANGLES,), SmoothingGroup.TRANSLATION: (TRANSLATION, SCALE),
                SmoothingGroup.EXPRESSION: (EXPRESSION,), SmoothingGroup.EYES: (EYES,), SmoothingGroup.LIPS: (LIP,)}
# One Euro tuning per group at smoothing strength 1 (min cutoff in Hz, beta in units/s of the group)
_STRONGEST_CUTOFF = 0.3
_WEAKEST_CUTOFF = 8.0
_BETA = {SmoothingGroup.ROTATION: 0.05, SmoothingGroup.TRANSLATION: 5.0, SmoothingGroup.EXPRESSION: 2.0,
         SmoothingGroup.EYES: 3.0, SmoothingGroup.LIPS: 3.0}
# A reference frame counts as steady when it stays within these of the window's mean.
_STEADY_DEGREES = 3.0
_STEADY_TRANSLATION = 0.02
_STEADY_SCALE = 0.03


def driver_vector(info: motion.KeypointInfo, ratios: torch.Tensor) -> torch.Tensor:
    """The user's motion in one frame as a flat float32 vector on the motion's device (layout
    above); ``ratios`` = [left eye, right eye, lip] open ratios from the landmarks."""
    return torch.cat([info.pitch.reshape(1), info.yaw.reshape(1), info.roll.reshape(1), info.t.reshape(3),
                      info.scale.reshape(1), info.exp.reshape(-1), ratios.reshape(3)]).float()


def driving_motion(v: torch.Tensor) -> motion.DrivingMotion:
    """A driver vector -> the batch-of-one ``DrivingMotion`` of the keypoint math (views of ``v``
    and its rotation matrix)."""
    return motion.DrivingMotion(R=motion.rotation_matrix(v[0:1], v[1:2], v[2:3]),
                                exp=v[EXPRESSION].reshape(1, motion.NUM_KP, 3), scale=v[SCALE].reshape(1, 1),
                                t=v[TRANSLATION].reshape(1, 3))


class NeutralReference:
    """Averages the first ``n`` steady frames into the user's neutral reference. Until then the
    average of the frames seen so far serves, so animation starts at once.

    ``vector`` is the reference on the device and ``motion`` its decoded form. ``reset`` starts a
    new window; the previous ``vector`` and ``motion`` stay in use until the first frame of the new
    one."""

    def __init__(self) -> None:
        self.window: list[np.ndarray] = []
        self.final = False
        self.vector: torch.Tensor | None = None
        self.motion: motion.DrivingMotion | None = None

    def reset(self) -> None:
        self.window, self.final = [], False

    def add(self, v: np.ndarray, n: int, device: torch.device) -> None:
        """One more frame's driver vector (read back to the host) while the reference is taken."""
        if self.final:
            return
        self.window.append(v)
        frames = np.stack(self.window)
        mean = frames.mean(axis=0)
        steady = (np.abs(frames[:, ANGLES] - mean[ANGLES]).max() < _STEADY_DEGREES
                  and np.abs(frames[:, TRANSLATION] - mean[TRANSLATION]).max() < _STEADY_TRANSLATION
                  and np.abs(frames[:, SCALE] / mean[SCALE] - 1).max() < _STEADY_SCALE)
        if not steady:                    # moving: start the window again from this frame
            self.window = [v]
            mean = v
        self.vector = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.motion = driving_motion(self.vector)
        if len(self.window) >= n:
            self.final = True
            log.info("neutral reference set from %d steady frames", len(self.window))


class MotionSmoother:
    """One Euro filtering of driver vectors on ``device`` with a strength per ``SmoothingGroup``,
    read from the settings each frame. One filter runs over the whole vector with per-element
    cutoffs and betas (a handful of device operations per frame instead of one set per group); a
    group at strength 0 gets an infinite cutoff, which passes it through unchanged."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.filter = OneEuroFilter()
        self._tuning: tuple[tuple[float, ...], torch.Tensor, torch.Tensor] | None = None

    def reset(self) -> None:
        self.filter.reset()

    def tune(self, settings: AnimationSettings) -> None:
        """Per-element cutoffs and betas for these settings, uploaded when the strengths change
        (keyed on the strengths alone: "cuda" and a tensor's "cuda:0" compare unequal)."""
        strengths = tuple(settings.smoothing(group) for group in SmoothingGroup)
        if self._tuning is not None and self._tuning[0] == strengths:
            return
        cutoff, beta = np.empty(SIZE, np.float32), np.empty(SIZE, np.float32)
        for group, strength in zip(SmoothingGroup, strengths, strict=True):
            for part in _GROUP_PARTS[group]:
                # strength 0..1 -> cutoff from 8 Hz (light) down to 0.3 Hz (heavy), geometric
                cutoff[part] = (np.inf if strength <= 0
                                else _WEAKEST_CUTOFF * (_STRONGEST_CUTOFF / _WEAKEST_CUTOFF) ** strength)
                beta[part] = 0.0 if strength <= 0 else _BETA[group]
        self._tuning = (strengths, torch.from_numpy(cutoff).to(self.device), torch.from_numpy(beta).to(self.device))

    def __call__(self, v: torch.Tensor, t: float, settings: AnimationSettings) -> torch.Tensor:
        """``v`` (on ``device``) smoothed, at time ``t`` in seconds."""
        self.tune(settings)
        self.filter.min_cutoff, self.filter.beta = self._tuning[1], self._tuning[2]
        return self.filter(v, t)
