"""What an animator hands the live loop, and the interface every animator has: the local
``Animator`` (``app.animation.animator``) or a render server's client
(``app.remote.client.RemoteAnimator``). No torch and no networks here: the pipeline, the window and
the remote client import these without the local animator."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

import numpy as np

from ..avatar.face import AvatarFace
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


class AnimatedAvatar(Protocol):
    """What every animator's avatar has: its face, which the window, the session and the
    paste-back read. Each kind of animator takes its own kind (``FrameAnimator``'s parameter): the
    local ``Animator`` a ``PreparedAvatar`` (F and M run on it once), a render server's
    ``RemoteAnimator`` a ``RemoteAvatar`` (the face only: the server prepares it)."""

    @property
    def face(self) -> AvatarFace: ...


# the avatar type of one animator and of the renderer that prepares its avatars
AvatarT = TypeVar("AvatarT", bound=AnimatedAvatar)


class FrameAnimator(Protocol[AvatarT]):
    """What the live loop and the window use of an animator. ``process`` is called from one
    thread (the pipeline's animation thread); ``set_avatar`` and ``calibrate`` from any, taking
    effect on the next frame; ``close`` once, after the last ``process``."""

    settings: LiveSettings           # read once per frame

    @property
    def avatar(self) -> AvatarT: ...

    def process(self, face: DrivingFace | None, t: float) -> AnimatedFrame: ...
    def set_avatar(self, avatar: AvatarT) -> None: ...
    def calibrate(self) -> None: ...
    def close(self) -> None: ...

    @property
    def has_reference(self) -> bool: ...
