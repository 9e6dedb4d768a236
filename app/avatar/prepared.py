"""The avatar prepared for animation: its face (``avatar.AvatarFace``) run once through the
backend's appearance and motion networks, plus the per-avatar constants of the keypoint math.

The networks are reached only through the ``InferenceBackend`` passed in; every tensor here lives
on the backend's device."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from engines import motion
from engines.backend import InferenceBackend

from ..imaging.device_io import image_to_tensor
from .face import AvatarFace
from .framing import AvatarKind

if TYPE_CHECKING:
    from .prepared_video import PreparedVideo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedAvatar:
    """Everything computed once per avatar, by the backend of its kind (``kind``: the weight set).

    Without avatar landmarks (a face box on a face MediaPipe cannot read, or an animal) the eye/lip
    ratios are None, and so are what needs them: lip normalisation and eye/lip retargeting are
    then off. An animal avatar has neither (the official animal pipeline uses none)."""

    face: AvatarFace
    feature: torch.Tensor            # F output, 1 x 32 x 16 x 64 x 64
    info: motion.KeypointInfo        # M output (refined)
    x_s: torch.Tensor                # 1 x K x 3
    R_s: torch.Tensor                # 1 x 3 x 3, the avatar's head rotation
    eye_ratios: torch.Tensor | None  # 1 x 2 float32; None without landmarks
    lip_ratio: torch.Tensor | None   # 1 x 1 float32; None without landmarks
    lip_normalization: torch.Tensor | None     # 1 x K x 3; None without landmarks, or for an animal
    # "expression-friendly" driving: the relative keypoints of a motionless frame and the
    # convex-hull size ratio, fixed per avatar (they need neither the driver nor the settings)
    expression_reference: torch.Tensor
    expression_multiplier: float | None        # None: keypoints span no 3-D hull (or an animal)
    # a video avatar's clip (the fields above then hold one source frame's values: frame 0's as
    # loaded); None for a still image
    video: PreparedVideo | None = None

    @property
    def kind(self) -> AvatarKind:
        """Which weight set animates it (its face's kind)."""
        return self.face.kind

    @property
    def has_ratios(self) -> bool:
        """Whether eye/lip retargeting and lip normalisation can work (the avatar has landmarks)."""
        return self.eye_ratios is not None and self.lip_ratio is not None


def _ratios(values: np.ndarray | None, shape: tuple[int, int], device: torch.device) -> torch.Tensor | None:
    if values is None:
        return None
    return torch.from_numpy(np.asarray(values, np.float32).reshape(shape)).to(device)


def prepare_avatar(face: AvatarFace, backend: InferenceBackend) -> PreparedAvatar:
    """Run F and M on the avatar's network input and derive the per-avatar constants.
    ``backend`` must hold the networks of ``face.kind`` (the caller's choice)."""
    image = image_to_tensor(face.network_input, backend.device)
    feature = backend.appearance(image)
    info = backend.motion(image)
    x_s = motion.keypoints_from_info(info)
    R_s = info.rotation()
    still = motion.DrivingMotion(R=R_s, exp=info.exp, scale=info.scale, t=info.t)
    x_ref = motion.relative_keypoints(info, R_s, still, still)
    animal = face.kind == "animal"
    # an animal has no retargeting, no lip normalisation and no expression-friendly driving
    eyes = None if animal else _ratios(face.eye_ratios, (1, 2), backend.device)
    lip = None if animal else _ratios(face.lip_ratio, (1, 1), backend.device)
    multiplier: float | None = None
    if not animal:
        try:
            multiplier = motion.expression_motion_multiplier(x_s, x_ref)
        except ValueError as e:
            log.warning("expression-friendly driving unavailable for this avatar: %s", e)
    if not animal and (eyes is None or lip is None):
        log.info("avatar without landmarks: eye/lip retargeting and lip normalisation are off")
    return PreparedAvatar(face=face, feature=feature, info=info, x_s=x_s, R_s=R_s, eye_ratios=eyes, lip_ratio=lip,
                          lip_normalization=None if lip is None else motion.lip_normalization_delta(backend.lip, x_s,
                                                                                                    lip),
                          expression_reference=x_ref, expression_multiplier=multiplier)
