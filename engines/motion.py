"""Motion math of LivePortrait as pure functions on torch tensors.

Conventions (those of the official code, which the trained weights depend on):

* Keypoints are row vectors: a batch of K keypoints is ``B x K x 3`` and a rotation is applied as
  ``kp @ rot``. ``rotation_matrix`` therefore returns ``(Rz Ry Rx)^T``.
* Head pose comes out of the motion extractor as 66-bin logits (3 degrees per bin); the pose in
  degrees is the expectation over the bins.
* ``x = scale * (x_c @ R + exp) + t`` with ``t_z`` ignored (Eqn. 2 of the paper).

Nothing here holds state. The live animator computes each frame's driving keypoints with
``animate_keypoints``, the function the parity kit's pipeline fixture checks; called with
``check_finite=False`` it reads no tensor value into Python, so the frame's work stays queued on
the device.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Literal, get_args

import numpy as np
import torch

from .models.shapes import check_shape

NUM_KP = 21
NUM_BINS = 66
BIN_DEGREES = 3.0
# Expectation over bins i = 0..65 gives 3*i - 97.5, so the range is [-97.5, 97.5] degrees.
BIN_OFFSET_DEGREES = 97.5
# Below this source lip-open ratio, lip normalisation is skipped (official default).
LIP_NORMALIZE_THRESHOLD = 0.03

Network = Callable[[torch.Tensor], torch.Tensor]
DrivingOption = Literal["pose-friendly", "expression-friendly"]
DRIVING_OPTIONS: tuple[DrivingOption, ...] = get_args(DrivingOption)
# what the source is: a still image (its scale and translation follow the driver's) or a frame of a
# source video (each frame keeps its own scale and translation: the official video composition)
SourceMotion = Literal["image", "video"]
SOURCE_MOTIONS: tuple[SourceMotion, ...] = get_args(SourceMotion)


# --------------------------------------------------------------------------- validation
def _check(what: str, x: torch.Tensor, expected: Sequence[int | None]) -> None:
    check_shape(what, x, expected)


def require_finite(what: str, x: torch.Tensor) -> torch.Tensor:
    """Raise ``ValueError`` if ``x`` holds NaN or inf (a broken driving frame must never reach
    the renderer silently)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what}: contains NaN or inf")
    return x


def _batch_keypoints(what: str, x: torch.Tensor) -> torch.Tensor:
    """Accept B x K x 3 or flat B x 3K keypoints; return B x K x 3 (a view where possible)."""
    if isinstance(x, torch.Tensor):
        if x.ndim == 2 and x.shape[1] % 3 == 0:
            return x.reshape(x.shape[0], x.shape[1] // 3, 3)
        if x.ndim == 3 and x.shape[2] == 3:
            return x
    shape = "x".join(map(str, x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
    raise ValueError(f"{what}: expected shape BxKx3 (or Bx3K), got {shape}")


# --------------------------------------------------------------------------- head pose
def headpose_bins_to_degrees(pose: torch.Tensor) -> torch.Tensor:
    """66-bin logits (B x 66) -> degrees (B,). Any other shape (e.g. degrees already, B x 1) is
    returned unchanged, as the official code does, so refined and raw outputs both pass through."""
    if pose.ndim == 2 and pose.shape[1] == NUM_BINS:
        idx = torch.arange(NUM_BINS, dtype=pose.dtype, device=pose.device)
        prob = torch.softmax(pose, dim=1)
        return torch.sum(prob * idx, dim=1) * BIN_DEGREES - BIN_OFFSET_DEGREES
    return pose


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (B or B x 1 each) -> B x 3 x 3 matrix for row vectors, i.e. ``(Rz Ry Rx)^T``:
    pitch is applied first, then yaw, then roll."""
    angles = []
    for name, a in (("pitch", pitch), ("yaw", yaw), ("roll", roll)):
        if not (a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1)):
            raise ValueError(f"{name}: expected shape B or Bx1 (degrees), got {'x'.join(map(str, a.shape))}")
        # Same operation order as the reference (deg / 180 * pi) so float32 rounding agrees.
        angles.append(a.reshape(-1) / 180 * math.pi)
    p, y, r = angles
    if not (p.shape == y.shape == r.shape):
        raise ValueError("pitch, yaw and roll must have the same batch size")
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    cp, sp, cy, sy, cr, sr = torch.cos(p), torch.sin(p), torch.cos(y), torch.sin(y), torch.cos(r), torch.sin(r)
    rot_x = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], dim=1).reshape(-1, 3, 3)
    rot_y = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], dim=1).reshape(-1, 3, 3)
    rot_z = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], dim=1).reshape(-1, 3, 3)
    return (rot_z @ (rot_y @ rot_x)).transpose(1, 2)


def euler_from_rotation(rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of ``rotation_matrix``: B x 3 x 3 -> (pitch, yaw, roll) in degrees, each B.
    Yaw is kept in [-90, 90]."""
    _check("rot", rot, (None, 3, 3))
    a = rot.transpose(1, 2)   # back to the column-vector matrix Rz Ry Rx
    yaw = torch.asin(torch.clamp(-a[:, 2, 0], -1.0, 1.0))
    pitch = torch.atan2(a[:, 2, 1], a[:, 2, 2])
    roll = torch.atan2(a[:, 1, 0], a[:, 0, 0])
    to_deg = 180.0 / math.pi
    return pitch * to_deg, yaw * to_deg, roll * to_deg


# Implicit keypoints that the official pipeline treats as the eye and lip region
# (its animation_region "eyes" / "lip" options).
EYE_KEYPOINTS = (11, 13, 15, 16, 18)
LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)


# --------------------------------------------------------------------------- keypoint info
@dataclass(frozen=True)
class KeypointInfo:
    """Refined output of the motion extractor for a batch of B faces.

    pitch, yaw, roll: B x 1 degrees; t: B x 3; exp: B x K x 3; scale: B x 1;
    kp: B x K x 3 canonical keypoints x_c."""

    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor
    scale: torch.Tensor
    kp: torch.Tensor

    def to(self, *args, **kwargs) -> KeypointInfo:
        return replace(self, **{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def rotation(self) -> torch.Tensor:
        return rotation_matrix(self.pitch, self.yaw, self.roll)


def refine_motion_output(raw: dict[str, torch.Tensor]) -> KeypointInfo:
    """Motion-extractor outputs (pitch/yaw/roll logits B x 66, t B x 3, exp B x 3K, scale B x 1,
    kp B x 3K) -> ``KeypointInfo`` (degrees B x 1, keypoints B x K x 3). ``scale`` is used raw."""
    missing = {"pitch", "yaw", "roll", "t", "exp", "scale", "kp"} - set(raw)
    if missing:
        raise ValueError(f"motion output lacks {', '.join(sorted(missing))}")
    b = raw["t"].shape[0]
    _check("t", raw["t"], (b, 3))
    _check("scale", raw["scale"], (b, 1))

    def degrees(name: str) -> torch.Tensor:
        d = headpose_bins_to_degrees(raw[name])
        return d.reshape(b, 1)

    return KeypointInfo(
        pitch=degrees("pitch"), yaw=degrees("yaw"), roll=degrees("roll"), t=raw["t"],
        exp=_batch_keypoints("exp", raw["exp"]), scale=raw["scale"], kp=_batch_keypoints("kp", raw["kp"]),
    )


def transform_keypoints(kp: torch.Tensor, rot: torch.Tensor, exp: torch.Tensor, scale: torch.Tensor,
                        t: torch.Tensor) -> torch.Tensor:
    """Eqn. 2: ``x = scale * (kp @ rot + exp)``, then ``x[..., :2] += t[:, :2]`` (t_z is ignored).

    kp, exp: B x K x 3 (or flat B x 3K); rot: B x 3 x 3; scale: B x 1; t: B x 3 -> B x K x 3."""
    kp = _batch_keypoints("kp", kp)
    b, k = kp.shape[:2]
    exp = _batch_keypoints("exp", exp)
    _check("exp", exp, (b, k, 3))
    _check("rot", rot, (b, 3, 3))
    _check("scale", scale, (b, 1))
    _check("t", t, (b, 3))
    x = (kp @ rot + exp) * scale[..., None]
    return x + torch.nn.functional.pad(t[:, None, :2], (0, 1))


def keypoints_from_info(info: KeypointInfo) -> torch.Tensor:
    """The implicit keypoints x of a face from its motion: Eqn. 2 with its own pose."""
    return transform_keypoints(info.kp, info.rotation(), info.exp, info.scale, info.t)


# --------------------------------------------------------------------------- relative motion
@dataclass(frozen=True)
class DrivingMotion:
    """Motion of one driving frame (or a reference frame): R B x 3 x 3 (row-vector convention, as
    ``rotation_matrix`` returns), exp B x K x 3, scale B x 1, t B x 3. Motion templates store these."""

    R: torch.Tensor
    exp: torch.Tensor
    scale: torch.Tensor
    t: torch.Tensor

    @staticmethod
    def from_info(info: KeypointInfo) -> DrivingMotion:
        return DrivingMotion(R=info.rotation(), exp=info.exp, scale=info.scale, t=info.t)


@dataclass(frozen=True)
class MotionControls:
    """The user's controls on relative motion, as tensors on the motion's device (made when the
    controls change, so the per-frame math needs no host values):

    rotation_multiplier: 3 (pitch, yaw, roll), scales each relative Euler angle;
    rotation_limit: 3 degrees, caps each scaled relative angle at +-limit;
    expression_weights: 1 x K x 3, scales the expression change per keypoint;
    translation_weights: 3, scales the translation change (z is dropped in any case)."""

    rotation_multiplier: torch.Tensor
    rotation_limit: torch.Tensor
    expression_weights: torch.Tensor
    translation_weights: torch.Tensor

    @staticmethod
    def make(device: torch.device | str, *, rotation_multiplier: Sequence[float] = (1.0, 1.0, 1.0),
             rotation_limit_deg: Sequence[float] = (180.0, 180.0, 180.0), expression_multiplier: float = 1.0,
             undriven_keypoints: Sequence[int] = (), translation_lock: bool = False) -> MotionControls:
        """Controls from plain values. The defaults change nothing (a 180 degree cap is no cap);
        ``undriven_keypoints`` keep the source's own expression (weight 0)."""
        weights = np.full((1, NUM_KP, 3), expression_multiplier, np.float32)
        weights[:, list(undriven_keypoints)] = 0.0
        move = 0.0 if translation_lock else 1.0

        def tensor(x: object) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, np.float32), device=device)

        return MotionControls(rotation_multiplier=tensor(rotation_multiplier),
                              rotation_limit=tensor(rotation_limit_deg), expression_weights=tensor(weights),
                              translation_weights=tensor([move, move, move]))


def limit_rotation(rot: torch.Tensor, multiplier: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """A relative rotation (B x 3 x 3, row-vector convention) with each Euler angle (pitch, yaw,
    roll) scaled by ``multiplier`` (3) and capped at +-``limit`` (3, degrees)."""
    angles = torch.stack(euler_from_rotation(rot), dim=1) * multiplier
    angles = torch.minimum(torch.maximum(angles, -limit), limit)
    return rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2])


def relative_keypoints(source: KeypointInfo, R_s: torch.Tensor, driving: DrivingMotion,
                       reference: DrivingMotion, controls: MotionControls | None = None, *,
                       source_motion: SourceMotion = "image") -> torch.Tensor:
    """Driving keypoints for the source from the driver's motion *relative* to a reference frame
    (the "pose-friendly" formula of the official pipeline):

    R = (R_d R_ref^T) R_s, exp = exp_s + (exp_d - exp_ref), s = s_s * s_d / s_ref,
    t = t_s + (t_d - t_ref) with t_z = 0; x_d = s * (x_c,s @ R + exp) + t.

    ``source_motion="video"`` (the source is one frame of a source video, the official video
    composition in relative mode): s = s_s and t = t_s (t_z = 0), the source frame's own; the
    driver's scale and translation are ignored, so the clip's own head movement is kept.

    With ``controls``, the relative rotation goes through ``limit_rotation`` and the expression and
    translation changes are weighted; neutral controls give the formula above within float32
    rounding of the Euler round trip."""
    if source_motion not in SOURCE_MOTIONS:
        raise ValueError(f"unknown source motion {source_motion!r}; expected one of {SOURCE_MOTIONS}")
    R_rel = driving.R @ reference.R.transpose(1, 2)
    exp_delta, t_delta = driving.exp - reference.exp, driving.t - reference.t
    if controls is not None:
        R_rel = limit_rotation(R_rel, controls.rotation_multiplier, controls.rotation_limit)
        exp_delta = exp_delta * controls.expression_weights
        t_delta = t_delta * controls.translation_weights
    R_new = R_rel @ R_s
    exp_new = source.exp + exp_delta
    if source_motion == "video":
        scale_new, t_new = source.scale, source.t
    else:
        scale_new = source.scale * (driving.scale / reference.scale)
        t_new = source.t + t_delta
    t_new = torch.cat([t_new[..., :2], torch.zeros_like(t_new[..., 2:])], dim=-1)
    return scale_new[..., None] * (source.kp @ R_new + exp_new) + t_new[:, None, :]


def convex_hull_volume(kp: torch.Tensor) -> float:
    """Volume of the 3-D convex hull of one set of keypoints (1 x K x 3 or K x 3)."""
    from scipy.spatial import ConvexHull, QhullError

    pts = kp.detach().reshape(-1, 3).double().cpu().numpy()
    if not np.isfinite(pts).all():
        raise ValueError("keypoints contain NaN or inf")
    try:
        return float(ConvexHull(pts).volume)
    except QhullError as e:  # flat or degenerate keypoint sets have no 3-D hull
        raise ValueError(f"keypoints span no 3-D volume: {str(e).splitlines()[0]}") from None


def expression_motion_multiplier(x_s: torch.Tensor, x_d_ref: torch.Tensor) -> float:
    """Ratio that maps driving-keypoint displacements to the source's size:
    sqrt(V(x_s)) / sqrt(V(x_d,ref)) with V the 3-D convex-hull volume."""
    return float(np.sqrt(convex_hull_volume(x_s)) / np.sqrt(convex_hull_volume(x_d_ref)))


def expression_friendly(x_d: torch.Tensor, x_d_ref: torch.Tensor, x_s: torch.Tensor,
                        multiplier: float | torch.Tensor) -> torch.Tensor:
    """The "expression-friendly" option: keypoint displacement from the reference, rescaled by
    ``multiplier`` (a float, or a B x 1 x 1 tensor: one per source of a batch) and added to the
    source keypoints."""
    return (x_d - x_d_ref) * multiplier + x_s


def apply_driving_multiplier(x_s: torch.Tensor, x_d: torch.Tensor, multiplier: float) -> torch.Tensor:
    """Scale the motion (x_d - x_s) by ``multiplier``; 1.0 leaves x_d unchanged."""
    return x_s + (x_d - x_s) * multiplier


# --------------------------------------------------------------------------- stitching / retargeting
def stitching_offsets(stitching_net: Network, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """Raw output of the stitching MLP S for (x_s, x_d): B x (3K + 2)."""
    x_s, x_d = _batch_keypoints("x_s", x_s), _batch_keypoints("x_d", x_d)
    _check("x_d", x_d, tuple(x_s.shape))
    b = x_s.shape[0]
    return stitching_net(torch.cat([x_s.reshape(b, -1), x_d.reshape(b, -1)], dim=1))


def apply_stitching(stitching_net: Network, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """x_d corrected by S so the animated crop pastes back without shoulder misalignment: a per
    keypoint offset plus one (tx, ty) shift shared by all keypoints (z is not shifted)."""
    x_s, x_d = _batch_keypoints("x_s", x_s), _batch_keypoints("x_d", x_d)
    b, k = x_d.shape[:2]
    delta = stitching_offsets(stitching_net, x_s, x_d)
    _check("stitching output", delta, (b, 3 * k + 2))
    shift = torch.nn.functional.pad(delta[:, None, 3 * k:3 * k + 2], (0, 1))
    return x_d + delta[:, :3 * k].reshape(b, k, 3) + shift


def eye_retarget_delta(eye_net: Network, x_s: torch.Tensor, eye_ratios: torch.Tensor) -> torch.Tensor:
    """Keypoint offset (B x K x 3) from R_eyes. eye_ratios: B x 3 =
    [source left eye, source right eye, target eye-open ratio]."""
    x_s = _batch_keypoints("x_s", x_s)
    b, k = x_s.shape[:2]
    _check("eye_ratios", eye_ratios, (b, 3))
    return eye_net(torch.cat([x_s.reshape(b, -1), eye_ratios.to(x_s.dtype)], dim=1)).reshape(b, k, 3)


def lip_retarget_delta(lip_net: Network, x_s: torch.Tensor, lip_ratios: torch.Tensor) -> torch.Tensor:
    """Keypoint offset (B x K x 3) from R_lip. lip_ratios: B x 2 = [source lip, target lip-open ratio]."""
    x_s = _batch_keypoints("x_s", x_s)
    b, k = x_s.shape[:2]
    _check("lip_ratios", lip_ratios, (b, 2))
    return lip_net(torch.cat([x_s.reshape(b, -1), lip_ratios.to(x_s.dtype)], dim=1)).reshape(b, k, 3)


def combined_eye_ratios(source_eyes: torch.Tensor, target_eye: torch.Tensor) -> torch.Tensor:
    """R_eyes input [source left, source right, target]: source_eyes B x 2, target_eye B x 1 (or
    1 x 1: one target for every source of the batch)."""
    eyes = source_eyes.reshape(-1, 2)
    target = target_eye.reshape(-1, 1).to(source_eyes.dtype).expand(eyes.shape[0], 1)
    return torch.cat([eyes, target], dim=1)


def combined_lip_ratios(source_lip: torch.Tensor, target_lip: torch.Tensor) -> torch.Tensor:
    """R_lip input [source lip, target]: source_lip B x 1, target_lip B x 1 (or 1 x 1: one target
    for every source of the batch)."""
    lip = source_lip.reshape(-1, 1)
    target = target_lip.reshape(-1, 1).to(source_lip.dtype).expand(lip.shape[0], 1)
    return torch.cat([lip, target], dim=1)


def lip_normalization_delta(lip_net: Network, x_s: torch.Tensor, source_lip_ratio: torch.Tensor,
                            threshold: float = LIP_NORMALIZE_THRESHOLD) -> torch.Tensor | None:
    """Offset that closes the avatar's mouth before animation (target lip ratio 0), so an open-mouth
    portrait is driven from a closed neutral. None when the source mouth is already closed. For a
    batch of B sources (x_s B x K x 3, source_lip_ratio B x 1), the threshold applies per source:
    B x K x 3 with zeros for the closed mouths; None when every mouth is closed."""
    ratios = combined_lip_ratios(source_lip_ratio, torch.zeros_like(source_lip_ratio.reshape(-1, 1)))
    if ratios.shape[0] == 1:
        if float(ratios[0, 0]) < threshold:
            return None
        return lip_retarget_delta(lip_net, x_s, ratios)
    is_open = ratios[:, 0] >= threshold
    if not bool(is_open.any()):
        return None
    delta = lip_retarget_delta(lip_net, x_s, ratios)
    return delta * is_open.to(delta.dtype)[:, None, None]


@dataclass(frozen=True)
class StitchedMotion:
    """Driving keypoints of one frame just before stitching (retargeting offsets included) and
    final (B x K x 3 each)."""

    before_stitching: torch.Tensor
    final: torch.Tensor


def animate_keypoints(source: KeypointInfo, x_s: torch.Tensor, driving: DrivingMotion, reference: DrivingMotion,
                      *, stitching_net: Network | None, option: DrivingOption = "pose-friendly",
                      x_d_ref: torch.Tensor | None = None,
                      expression_multiplier: float | torch.Tensor | None = None,
                      lip_delta: torch.Tensor | None = None, driving_multiplier: float = 1.0,
                      R_s: torch.Tensor | None = None, controls: MotionControls | None = None,
                      retargeting: Sequence[torch.Tensor] = (), check_finite: bool = True,
                      source_motion: SourceMotion = "image") -> StitchedMotion:
    """The driving keypoints of one frame, as the official pipeline computes them for an image
    source (or, with ``source_motion="video"``, one frame of a source video: see
    ``relative_keypoints``) with relative motion and stitching, plus the live app's controls:

    relative motion (with ``controls``) -> (expression-friendly rescaling) -> + ``retargeting``
    offsets (B x K x 3 each, e.g. R_eyes / R_lip) -> stitching (if ``stitching_net``)
    -> + lip normalisation delta -> driving multiplier.

    For "expression-friendly", ``x_d_ref`` is the relative keypoints of the reference frame and
    ``expression_multiplier`` its ``expression_motion_multiplier`` (both computed once; for a batch
    of B sources, a B x 1 x 1 tensor). The source may be a batch of B faces driven by one driving
    frame (``driving`` and ``reference`` of batch 1): everything broadcasts to B x K x 3. ``R_s``
    is the source's rotation when already computed. Non-finite keypoints raise ``ValueError``
    unless ``check_finite`` is False: then nothing here reads a tensor value into Python (the
    caller handles NaN on the device), and every branch depends on arguments only."""
    if option == "expression-friendly":
        if x_d_ref is None or expression_multiplier is None:
            raise ValueError("expression-friendly needs x_d_ref and expression_multiplier "
                             "(none when the source's keypoints span no 3-D volume)")
    elif option != "pose-friendly":
        raise ValueError(f"unknown driving option {option!r}; expected one of {DRIVING_OPTIONS}")
    x_d = relative_keypoints(source, source.rotation() if R_s is None else R_s, driving, reference, controls,
                             source_motion=source_motion)
    if option == "expression-friendly":
        x_d = expression_friendly(x_d, x_d_ref, x_s, expression_multiplier)
    for delta in retargeting:
        x_d = x_d + delta
    before = x_d
    if stitching_net is not None:
        x_d = apply_stitching(stitching_net, x_s, x_d)
        if lip_delta is not None:
            x_d = x_d + lip_delta
    if driving_multiplier != 1.0:       # 1.0 leaves x_d as it is: skip three device operations
        x_d = apply_driving_multiplier(x_s, x_d, driving_multiplier)
    return StitchedMotion(before_stitching=before,
                          final=require_finite("driving keypoints", x_d) if check_finite else x_d)


# --------------------------------------------------------------------------- animal avatars
def animal_keypoints(source: KeypointInfo, driving: DrivingMotion) -> torch.Tensor:
    """The official animal pipeline's driving keypoints before rescaling: the driver's *absolute*
    rotation and expression on the source's scale and canonical keypoints, with the driver's
    translation (t_z = 0): Eqn. 2 with ``s_s``, ``kp_s`` and the driver's R, exp, t. B x K x 3."""
    return transform_keypoints(source.kp, driving.R, driving.exp, source.scale, driving.t)


def animate_animal_keypoints(source: KeypointInfo, x_s: torch.Tensor, driving: DrivingMotion,
                             x_d_ref: torch.Tensor, motion_multiplier: float, *,
                             stitching_net: Network | None = None, driving_multiplier: float = 1.0,
                             check_finite: bool = True) -> torch.Tensor:
    """The driving keypoints of one frame for an animal avatar, as the official animal pipeline
    computes them (the kit's ``glue_animal_motion``):

    x_d = (animal_keypoints(driving) - x_d_ref) * motion_multiplier + x_s -> stitching (if
    ``stitching_net``, the human S) -> driving multiplier.

    ``x_d_ref`` is ``animal_keypoints`` of the reference frame (the official pipeline's first
    driving frame; the live app's neutral reference) and ``motion_multiplier`` is
    ``expression_motion_multiplier(x_s, x_d_ref)``, both computed once per reference. There is no
    eye/lip retargeting and no lip normalisation. Non-finite keypoints raise ``ValueError`` unless
    ``check_finite`` is False (nothing here then reads a tensor value into Python)."""
    x_d = (animal_keypoints(source, driving) - x_d_ref) * motion_multiplier + x_s
    if stitching_net is not None:
        x_d = apply_stitching(stitching_net, x_s, x_d)
    if driving_multiplier != 1.0:
        x_d = apply_driving_multiplier(x_s, x_d, driving_multiplier)
    return require_finite("driving keypoints", x_d) if check_finite else x_d
