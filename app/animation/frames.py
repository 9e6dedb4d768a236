"""What an animator hands the live loop, and the interface every animator has: the local
``Animator`` (``app.animation.animator``) or a render server's client
(``app.remote.client.RemoteAnimator``). No torch and no networks here: the pipeline, the window and
the remote client import these without the local animator."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from ..face.driving import DrivingFace
from ..settings import LiveSettings


class Status(StrEnum):
    NO_FACE_YET = "no face yet"
    CALIBRATING = "calibrating neutral"
    LIVE = "live"
    HOLDING = "face lost: holding"
    EASING = "face lost: easing to neutral"
    NEUTRAL = "face lost: neutral"
    SERVER_LOST = "render server unreachable: reconnecting"     # remote rendering only


TRACKED = (Status.LIVE, Status.CALIBRATING)      # statuses of frames animated from a tracked face


@dataclass(frozen=True)
class AnimatedFrame:
    image: np.ndarray      # what the outputs show: the avatar image (pasted) or the 512 crop, BGR
    status: Status
    rendered: bool         # False when a held / cached frame was returned without rendering


class FrameAnimator(Protocol):
    """What the live loop and the window use of an animator. ``process`` is called from one
    thread (the pipeline's animation thread); ``set_avatar`` and ``calibrate`` from any, taking
    effect on the next frame; ``close`` once, after the last ``process``."""

    avatar: Any                      # has ``.face``, the avatar's ``AvatarFace``
    settings: LiveSettings           # read once per frame

    def process(self, face: DrivingFace | None, t: float) -> AnimatedFrame: ...
    def set_avatar(self, avatar: Any) -> None: ...
    def calibrate(self) -> None: ...
    def close(self) -> None: ...

    @property
    def has_reference(self) -> bool: ...
