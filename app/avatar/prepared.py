"""The avatar prepared for animation: its face (``avatar.AvatarFace``) run once through the
backend's appearance and motion networks, plus the per-avatar constants of the keypoint math.

The networks are reached only through the ``InferenceBackend`` passed in; every tensor here lives
on the backend's device."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from engines import motion
from engines.backend import InferenceBackend

from ..imaging.device_io import image_to_tensor
from .face import AvatarFace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedAvatar:
    """Everything computed once per avatar."""

    face: AvatarFace
    feature: torch.Tensor            # F output, 1 x 32 x 16 x 64 x 64
    info: motion.KeypointInfo        # M output (refined)
    x_s: torch.Tensor                # 1 x K x 3
    R_s: torch.Tensor                # 1 x 3 x 3, the avatar's head rotation
    eye_ratios: torch.Tensor         # 1 x 2
    lip_ratio: torch.Tensor          # 1 x 1
    lip_normalization: torch.Tensor | None
    # "expression-friendly" driving: the relative keypoints of a motionless frame and the
    # convex-hull size ratio, fixed per avatar (they need neither the driver nor the settings)
    expression_reference: torch.Tensor
    expression_multiplier: float | None        # None: keypoints span no 3-D hull


def prepare_avatar(face: AvatarFace, backend: InferenceBackend) -> PreparedAvatar:
    """Run F and M on the avatar's network input and derive the per-avatar constants."""
    image = image_to_tensor(face.network_input, backend.device)
    feature = backend.appearance(image)
    info = backend.motion(image)
    x_s = motion.keypoints_from_info(info)
    lip = torch.from_numpy(face.lip_ratio.astype(np.float32)).to(backend.device)
    R_s = info.rotation()
    still = motion.DrivingMotion(R=R_s, exp=info.exp, scale=info.scale, t=info.t)
    x_ref = motion.relative_keypoints(info, R_s, still, still)
    try:
        multiplier: float | None = motion.expression_motion_multiplier(x_s, x_ref)
    except ValueError as e:
        log.warning("expression-friendly driving unavailable for this avatar: %s", e)
        multiplier = None
    return PreparedAvatar(face=face, feature=feature, info=info, x_s=x_s, R_s=R_s,
                          eye_ratios=torch.from_numpy(face.eye_ratios.astype(np.float32)).to(backend.device),
                          lip_ratio=lip, lip_normalization=motion.lip_normalization_delta(backend.lip, x_s, lip),
                          expression_reference=x_ref,
                          expression_multiplier=multiplier)
