"""Eye and lip retargeting in the live animator: the R_eyes / R_lip keypoint offsets for the
modes that are on, with the target open ratio either following the user (on the avatar's scale)
or fixed by the settings. The retargeted keypoints keep the avatar's own expression
(``undriven_keypoints``), so the networks alone set their openness (no double counting).

Both need the avatar's own open ratios (its landmarks): an avatar without them (a face box on a face
MediaPipe cannot read, an animal) gets no offsets, whatever the settings (``without_retargeting``)."""
from __future__ import annotations

from dataclasses import replace

import torch

from engines import motion
from engines.backend import InferenceBackend

from ..avatar.prepared import PreparedAvatar
from ..settings import AnimationSettings
from . import driver_motion as driver


def undriven_keypoints(s: AnimationSettings) -> tuple[int, ...]:
    """The implicit keypoints whose expression the driver does not move under these settings."""
    return ((motion.EYE_KEYPOINTS if s.eye_mode != "off" else ())
            + (motion.LIP_KEYPOINTS if s.lip_mode != "off" else ()))


def without_retargeting(s: AnimationSettings, avatar: PreparedAvatar) -> AnimationSettings:
    """``s`` as it applies to ``avatar``: eye/lip retargeting off when the avatar has no open
    ratios (no landmarks, or an animal); ``s`` itself otherwise (callers key caches on it)."""
    if avatar.has_ratios or (s.eye_mode == "off" and s.lip_mode == "off"):
        return s
    return replace(s, eye_mode="off", lip_mode="off")


def follow_eye_target(v: torch.Tensor, reference: torch.Tensor, avatar_eyes: torch.Tensor) -> torch.Tensor:
    """The user's eye openness on each avatar face's scale (paper, sec. 4.3), B x 1: the user's
    ratio times the face's avatar-open / user-neutral, so a user with narrow eyes still opens the
    avatar's fully. ``v`` and ``reference`` are driver vectors; ``avatar_eyes`` the avatar's B x 2
    ratios (B faces of a group photo, each on its own scale)."""
    user_neutral = reference[driver.EYES].mean()
    avatar_open = avatar_eyes.mean(dim=1, keepdim=True)
    user_now = v[driver.EYES].mean()
    scaled = (user_now * avatar_open / user_neutral.clamp_min(1e-3)).clamp(0.0, 0.8)
    usable = (user_neutral >= 1e-3) & torch.isfinite(user_now)
    return torch.where(usable, scaled, avatar_open)


class Retargeting:
    """The offsets of one frame on ``device``. The fixed targets go up when the settings change
    (``prepare``, called before a frame's work is queued), so a frame uploads nothing."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._fixed: tuple[AnimationSettings, torch.Tensor, torch.Tensor] | None = None

    def prepare(self, s: AnimationSettings) -> None:
        if self._fixed is None or self._fixed[0] is not s:
            self._fixed = (s, torch.tensor([[s.eye_target]], dtype=torch.float32, device=self.device),
                           torch.tensor([[s.lip_target]], dtype=torch.float32, device=self.device))

    def offsets(self, v: torch.Tensor, reference: torch.Tensor, avatar: PreparedAvatar, backend: InferenceBackend,
                s: AnimationSettings) -> list[torch.Tensor]:
        """B x K x 3 offsets to add to the driving keypoints: R_eyes if ``s.eye_mode`` is on, then
        R_lip if ``s.lip_mode`` is; none for an avatar without open ratios. ``v``, ``reference``:
        driver vectors on the device."""
        self.prepare(s)
        assert self._fixed is not None
        _, eye_fixed, lip_fixed = self._fixed
        offsets: list[torch.Tensor] = []
        if avatar.eye_ratios is None or avatar.lip_ratio is None:
            return offsets
        if s.eye_mode != "off":
            target = eye_fixed if s.eye_mode == "fixed" else follow_eye_target(v, reference, avatar.eye_ratios)
            offsets.append(motion.eye_retarget_delta(backend.eye, avatar.x_s,
                                                     motion.combined_eye_ratios(avatar.eye_ratios, target)))
        if s.lip_mode != "off":
            target = lip_fixed if s.lip_mode == "fixed" else v[driver.LIP]
            offsets.append(motion.lip_retarget_delta(backend.lip, avatar.x_s,
                                                     motion.combined_lip_ratios(avatar.lip_ratio, target)))
        return offsets
