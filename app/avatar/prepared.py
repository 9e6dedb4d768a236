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

    A group photo's B = ``len(face.group)`` animated faces are one batch along dim 0 (F and M ran
    once on their stacked network inputs): B is 1 for a single face, and everything is as it was.

    Without avatar landmarks (a face box on a face MediaPipe cannot read, or an animal; in a group:
    any of its faces) the eye/lip ratios are None, and so are what needs them: lip normalisation and
    eye/lip retargeting are then off. An animal avatar has neither (the official animal pipeline
    uses none)."""

    face: AvatarFace
    feature: torch.Tensor            # F output, B x 32 x 16 x 64 x 64
    info: motion.KeypointInfo        # M output (refined), batch B
    x_s: torch.Tensor                # B x K x 3
    R_s: torch.Tensor                # B x 3 x 3, the avatar's head rotation(s)
    eye_ratios: torch.Tensor | None  # B x 2 float32; None without landmarks
    lip_ratio: torch.Tensor | None   # B x 1 float32; None without landmarks
    # B x K x 3 (a face whose mouth is already closed: zeros); None without landmarks, for an animal,
    # or when no face's mouth is open
    lip_normalization: torch.Tensor | None
    # "expression-friendly" driving: the relative keypoints of a motionless frame and the
    # convex-hull size ratio, fixed per avatar (they need neither the driver nor the settings)
    expression_reference: torch.Tensor                  # B x K x 3
    # None: keypoints span no 3-D hull (or an animal); a float for one face, a B x 1 x 1 tensor for a
    # group (a face whose hull fails gets 1.0)
    expression_multiplier: float | torch.Tensor | None
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

    @property
    def batch(self) -> int:
        """How many faces are animated together (the batch size of every tensor here)."""
        return int(self.x_s.shape[0])

    @property
    def num_faces(self) -> int:
        """The animated faces: ``batch``."""
        return self.batch


def _ratios(values: list[np.ndarray | None], width: int, device: torch.device) -> torch.Tensor | None:
    if any(v is None for v in values):
        return None
    stacked = np.concatenate([np.asarray(v, np.float32).reshape(1, width) for v in values])
    return torch.from_numpy(stacked).to(device)


def prepare_avatar(face: AvatarFace, backend: InferenceBackend) -> PreparedAvatar:
    """Run F and M on the avatar's network input(s) and derive the per-avatar constants; a group's
    faces go through F and M as one batch. ``backend`` must hold the networks of ``face.kind`` (the
    caller's choice)."""
    group = face.group
    images = [image_to_tensor(f.network_input, backend.device) for f in group]
    image = images[0] if len(images) == 1 else torch.cat(images)
    feature = backend.appearance(image)
    info = backend.motion(image)
    x_s = motion.keypoints_from_info(info)
    R_s = info.rotation()
    still = motion.DrivingMotion(R=R_s, exp=info.exp, scale=info.scale, t=info.t)
    x_ref = motion.relative_keypoints(info, R_s, still, still)
    animal = face.kind == "animal"
    # an animal has no retargeting, no lip normalisation and no expression-friendly driving
    eyes = None if animal else _ratios([f.eye_ratios for f in group], 2, backend.device)
    lip = None if animal else _ratios([f.lip_ratio for f in group], 1, backend.device)
    multiplier: float | torch.Tensor | None = None
    if not animal:
        multiplier = _expression_multiplier(x_s, x_ref)
    if not animal and (eyes is None or lip is None):
        log.info("avatar %swithout landmarks: eye/lip retargeting and lip normalisation are off",
                 "face " if len(group) > 1 else "")
    return PreparedAvatar(face=face, feature=feature, info=info, x_s=x_s, R_s=R_s, eye_ratios=eyes, lip_ratio=lip,
                          lip_normalization=None if lip is None else motion.lip_normalization_delta(backend.lip, x_s,
                                                                                                    lip),
                          expression_reference=x_ref, expression_multiplier=multiplier)


def _expression_multiplier(x_s: torch.Tensor, x_ref: torch.Tensor) -> float | torch.Tensor | None:
    """One face: its convex-hull multiplier (None if its keypoints span no volume). A group: B x 1 x 1,
    a face whose hull fails getting 1.0 (its motion unscaled)."""
    if x_s.shape[0] == 1:
        try:
            return motion.expression_motion_multiplier(x_s, x_ref)
        except ValueError as e:
            log.warning("expression-friendly driving unavailable for this avatar: %s", e)
            return None
    values = []
    for i in range(x_s.shape[0]):
        try:
            values.append(motion.expression_motion_multiplier(x_s[i:i + 1], x_ref[i:i + 1]))
        except ValueError as e:
            log.warning("expression-friendly driving of face %d unscaled: %s", i + 1, e)
            values.append(1.0)
    return torch.tensor(values, dtype=x_s.dtype, device=x_s.device).reshape(-1, 1, 1)
