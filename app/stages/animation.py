"""Animation stage: driving face -> animated avatar frame (motion extraction, motion transfer,
warp/decode, paste-back), through the ``Animator``."""
from __future__ import annotations

from ..animator import AnimatedFrame, Animator
from ..face.driving import DrivingFace


class AnimationStage:
    def __init__(self, animator: Animator) -> None:
        self.animator = animator

    def process(self, face: DrivingFace | None, timestamp: float) -> AnimatedFrame:
        return self.animator.process(face, timestamp)
