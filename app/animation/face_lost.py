"""What the animator shows while the face is lost, and how it comes back.

When the face goes, the last image is held for ``hold_seconds``, then the motion eases from the
last shown motion to the neutral reference over ``ease_seconds``; the image of the finished ease
is kept and shown until the face is back. When it is back, the motion glides from where the ease
had got to into the live motion over ``resume_seconds``. Both blends use smoothstep weights of
the elapsed time (seconds, the frames' timestamps); motions are driver vectors on the device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..imaging.easing import smoothstep
from ..settings import AnimationSettings


@dataclass(frozen=True)
class LostFrame:
    """One frame without a face: ``holding`` while within the hold time; ``weight`` of the
    neutral reference in the eased motion (1: fully neutral)."""

    holding: bool
    weight: float

    @property
    def neutral(self) -> bool:
        return self.weight >= 1.0


class FaceLostState:
    """The face-lost and resume state across frames.

    ``last_motion``: the motion of the last frame shown (live or eased), None before the first.
    ``neutral_image``: the image of the finished ease, None until rendered (and after an avatar
    change)."""

    def __init__(self) -> None:
        self.last_motion: torch.Tensor | None = None
        self.neutral_image: np.ndarray | None = None
        self._lost_since: float | None = None
        self._lost_from: torch.Tensor | None = None
        self._resume_from: torch.Tensor | None = None
        self._resume_start = 0.0

    def seen(self, v: torch.Tensor, t: float, s: AnimationSettings) -> torch.Tensor:
        """A frame with a face at time ``t``: its motion ``v`` as shown, gliding in from the
        eased motion for ``resume_seconds`` after a loss."""
        if self._lost_since is not None:
            self._lost_since = None
            if self.last_motion is not None and s.resume_seconds > 0:
                self._resume_from, self._resume_start = self.last_motion, t
        if self._resume_from is not None:
            w = smoothstep((t - self._resume_start) / max(s.resume_seconds, 1e-6))
            v = (1 - w) * self._resume_from + w * v
            if w >= 1.0:
                self._resume_from = None
        self.last_motion = v
        return v

    def lost(self, t: float, s: AnimationSettings) -> LostFrame:
        """A frame without a face at time ``t`` (once a motion has been shown)."""
        if self._lost_since is None:
            self._lost_since, self._lost_from = t, self.last_motion
        elapsed = t - self._lost_since
        w = 1.0 if s.ease_seconds <= 0 else smoothstep((elapsed - s.hold_seconds) / s.ease_seconds)
        return LostFrame(holding=elapsed < s.hold_seconds, weight=w)

    def eased(self, frame: LostFrame, reference: torch.Tensor) -> torch.Tensor:
        """The motion shown for ``frame``: the motion at the loss blended towards ``reference``."""
        self.last_motion = (1 - frame.weight) * self._lost_from + frame.weight * reference
        return self.last_motion
