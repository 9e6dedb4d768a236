"""Animation stage: driving face -> animated avatar frame (motion extraction, motion transfer,
warp/decode, paste-back), through a ``FrameAnimator``: the local ``Animator``, or the client of a
render server (``app.remote.client.RemoteAnimator``)."""
from __future__ import annotations

from typing import Any, Protocol

from ..face.driving import DrivingFace
from ..settings import LiveSettings
from .animator import AnimatedFrame


class FrameAnimator(Protocol):
    """What the live loop and the window use of an animator. ``process`` is called from one
    thread; ``set_avatar`` and ``calibrate`` from any, taking effect on the next frame."""

    avatar: Any                      # has ``.face``, the avatar's ``AvatarFace``
    settings: LiveSettings           # read once per frame

    def process(self, face: DrivingFace | None, t: float) -> AnimatedFrame: ...
    def set_avatar(self, avatar: Any) -> None: ...
    def calibrate(self) -> None: ...
    def close(self) -> None: ...

    @property
    def has_reference(self) -> bool: ...


class AnimationStage:
    def __init__(self, animator: FrameAnimator) -> None:
        self.animator = animator

    def process(self, face: DrivingFace | None, timestamp: float) -> AnimatedFrame:
        return self.animator.process(face, timestamp)
