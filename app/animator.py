"""The animator: one driving face in, one animated avatar frame out.

It holds what a live session needs beyond the pure motion math of ``engines.motion``: the prepared
avatar, the user's neutral reference, the motion smoothing filters and the face-lost state. All
tunable behaviour comes from ``AnimationSettings`` (read once per frame).

Motion is always *relative*: the user's pose and expression are compared with their own neutral
reference (averaged over the first steady frames, or re-taken with ``calibrate``) and the change is
applied to the avatar's own pose and expression.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np
import torch

from engines import motion
from engines.backend import InferenceBackend

from .face import crop as fc
from .face.avatar import AvatarFace
from .face.driving import DrivingFace
from .face.smoothing import OneEuroFilter
from .settings import AnimationSettings, LiveSettings

log = logging.getLogger(__name__)

# Layout of the driver-motion vector that is smoothed, averaged and eased.
_ANG, _T, _SCALE = slice(0, 3), slice(3, 6), slice(6, 7)
_EXP = slice(7, 7 + 3 * motion.NUM_KP)
_EYES = slice(_EXP.stop, _EXP.stop + 2)
_LIP = slice(_EYES.stop, _EYES.stop + 1)
_SIZE = _LIP.stop
_GROUPS = {"rotation": (_ANG,), "translation": (_T, _SCALE), "expression": (_EXP,), "eyes": (_EYES,), "lips": (_LIP,)}
# One Euro tuning per group at smoothing strength 1 (min cutoff in Hz, beta in units/s of the group)
_STRONGEST_CUTOFF = 0.3
_WEAKEST_CUTOFF = 8.0
_BETA = {"rotation": 0.05, "translation": 5.0, "expression": 2.0, "eyes": 3.0, "lips": 3.0}
# A reference frame counts as steady when it stays within these of the window's mean.
_STEADY_DEGREES = 3.0
_STEADY_TRANSLATION = 0.02
_STEADY_SCALE = 0.03


def image_to_tensor(image_bgr: np.ndarray, device: torch.device) -> torch.Tensor:
    """H x W x 3 uint8 BGR -> 1 x 3 x H x W float RGB in [0, 1]."""
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(rgb).to(device).permute(2, 0, 1)[None].float().div_(255.0)


def tensor_to_image(image: torch.Tensor) -> np.ndarray:
    """1 x 3 x H x W RGB in [0, 1] -> H x W x 3 uint8 BGR (truncated, like the official code)."""
    planes = (image[0] * 255).clamp_(0, 255).to(torch.uint8).cpu().numpy()     # C x H x W
    return cv2.merge([planes[2], planes[1], planes[0]])       # interleave and reverse in one pass


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


class Status(str, Enum):
    NO_FACE_YET = "no face yet"
    CALIBRATING = "calibrating neutral"
    LIVE = "live"
    HOLDING = "face lost: holding"
    EASING = "face lost: easing to neutral"
    NEUTRAL = "face lost: neutral"


@dataclass(frozen=True)
class AnimatedFrame:
    image: np.ndarray      # what the outputs show: the avatar image (pasted) or the 512 crop, BGR
    status: Status
    rendered: bool         # False when a held / cached frame was returned without rendering


def driver_vector(info: motion.KeypointInfo, face: DrivingFace) -> np.ndarray:
    """The user's motion in one frame as a flat float64 vector (see the slices above)."""
    v = np.empty(_SIZE)
    v[_ANG] = [float(info.pitch[0, 0]), float(info.yaw[0, 0]), float(info.roll[0, 0])]
    v[_T] = info.t[0].detach().cpu().numpy()
    v[_SCALE] = float(info.scale[0, 0])
    v[_EXP] = info.exp[0].detach().cpu().numpy().reshape(-1)
    v[_EYES] = face.eye_ratios[0]
    v[_LIP] = face.lip_ratio[0]
    return v


class NeutralReference:
    """Averages the first ``n`` steady frames into the user's neutral reference. Until then the
    average of the frames seen so far serves, so animation starts at once."""

    def __init__(self) -> None:
        self.window: list[np.ndarray] = []
        self.value: np.ndarray | None = None
        self.final = False

    def reset(self) -> None:
        self.window, self.value, self.final = [], None, False

    def add(self, v: np.ndarray, n: int) -> None:
        if self.final:
            return
        self.window.append(v)
        frames = np.stack(self.window)
        mean = frames.mean(axis=0)
        steady = (np.abs(frames[:, _ANG] - mean[_ANG]).max() < _STEADY_DEGREES
                  and np.abs(frames[:, _T] - mean[_T]).max() < _STEADY_TRANSLATION
                  and np.abs(frames[:, _SCALE] / mean[_SCALE] - 1).max() < _STEADY_SCALE)
        if not steady:                    # moving: start the window again from this frame
            self.window = [v]
            mean = v
        self.value = mean
        if len(self.window) >= n:
            self.final = True
            log.info("neutral reference set from %d steady frames", len(self.window))


class MotionSmoother:
    """One Euro filters per motion group, with strengths read from the settings each frame."""

    def __init__(self) -> None:
        self.filters = {g: OneEuroFilter() for g in _GROUPS}

    def reset(self) -> None:
        for f in self.filters.values():
            f.reset()

    def __call__(self, v: np.ndarray, t: float, settings: AnimationSettings) -> np.ndarray:
        out = v.copy()
        for group, parts in _GROUPS.items():
            strength = getattr(settings, f"smooth_{group}")
            f = self.filters[group]
            x = np.concatenate([v[p] for p in parts])
            if strength <= 0:
                f.reset()
                f(x, t)          # keep the state current so switching smoothing on does not jump
                continue
            # strength 0..1 -> cutoff from 8 Hz (light) down to 0.3 Hz (heavy), geometric
            f.min_cutoff = _WEAKEST_CUTOFF * (_STRONGEST_CUTOFF / _WEAKEST_CUTOFF) ** strength
            f.beta = _BETA[group]
            y = f(x, t)
            i = 0
            for p in parts:
                n = p.stop - p.start
                out[p] = y[i:i + n]
                i += n
        return out


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


class Animator:
    """Per-frame animation of one avatar. ``process`` is called from one thread (the inference
    stage); ``set_avatar`` and ``calibrate`` may be called from any thread and take effect on the
    next frame."""

    def __init__(self, backend: InferenceBackend, settings: LiveSettings, avatar: PreparedAvatar) -> None:
        self.backend = backend
        self.settings = settings
        self._lock = threading.Lock()
        self._pending_avatar: PreparedAvatar | None = None
        self._calibrate_requested = False
        self.avatar = avatar
        self.reference = NeutralReference()
        self.smoother = MotionSmoother()
        self._last_motion: np.ndarray | None = None     # smoothed driver vector of the last frame
        self._last_image: np.ndarray | None = None
        self._lost_since: float | None = None
        self._lost_from: np.ndarray | None = None
        self._neutral_image: np.ndarray | None = None
        self.last_keypoints: torch.Tensor | None = None    # x_d of the last rendered frame
        self._resume_from: np.ndarray | None = None
        self._resume_start = 0.0

    # -- control (any thread) ------------------------------------------------------------------
    def set_avatar(self, avatar: PreparedAvatar) -> None:
        with self._lock:
            self._pending_avatar = avatar

    def calibrate(self) -> None:
        """Take a new neutral reference from the next steady frames."""
        with self._lock:
            self._calibrate_requested = True

    @property
    def has_reference(self) -> bool:
        return self.reference.final

    # -- per frame (inference thread) ----------------------------------------------------------
    @torch.inference_mode()
    def process(self, face: DrivingFace | None, t: float) -> AnimatedFrame:
        s = self.settings.snapshot()
        self._apply_requests()
        if face is None:
            return self._face_lost(t, s)
        info = self.backend.motion(image_to_tensor(face.network_input, self.backend.device))
        raw = driver_vector(info, face)
        if not np.isfinite(raw).all():
            log.warning("motion extractor returned NaN/inf; frame skipped")
            return self._face_lost(t, s)
        self.reference.add(raw, s.reference_frames)
        v = self.smoother(raw, t, s)
        if self._lost_since is not None:          # the face is back: glide from where we are
            self._lost_since = None
            if self._last_motion is not None and s.resume_seconds > 0:
                self._resume_from, self._resume_start = self._last_motion, t
        if self._resume_from is not None:
            w = _smoothstep((t - self._resume_start) / max(s.resume_seconds, 1e-6))
            v = (1 - w) * self._resume_from + w * v
            if w >= 1.0:
                self._resume_from = None
        self._last_motion = v
        status = Status.LIVE if self.reference.final else Status.CALIBRATING
        return self._render(v, s, status)

    # -- internals ----------------------------------------------------------------------------
    def _apply_requests(self) -> None:
        with self._lock:
            avatar, self._pending_avatar = self._pending_avatar, None
            calibrate, self._calibrate_requested = self._calibrate_requested, False
        if avatar is not None:
            self.avatar = avatar
            self._neutral_image = None
            self._last_image = None
        if calibrate:
            self.reference.reset()

    def _face_lost(self, t: float, s: AnimationSettings) -> AnimatedFrame:
        if self._last_motion is None or self.reference.value is None:
            # nothing animated yet: the avatar as it is (never the camera image)
            return AnimatedFrame(self._still_avatar(s), Status.NO_FACE_YET, rendered=False)
        if self._lost_since is None:
            self._lost_since, self._lost_from = t, self._last_motion
        elapsed = t - self._lost_since
        if elapsed < s.hold_seconds and self._last_image is not None:
            return AnimatedFrame(self._last_image, Status.HOLDING, rendered=False)
        w = 1.0 if s.ease_seconds <= 0 else _smoothstep((elapsed - s.hold_seconds) / s.ease_seconds)
        if w >= 1.0 and self._neutral_image is not None:
            return AnimatedFrame(self._neutral_image, Status.NEUTRAL, rendered=False)
        v = (1 - w) * self._lost_from + w * self.reference.value
        self.smoother(v, t, s)        # keep the filters on the eased motion: resuming glides from here
        self._last_motion = v
        frame = self._render(v, s, Status.NEUTRAL if w >= 1.0 else Status.EASING)
        if w >= 1.0:
            self._neutral_image = frame.image
        return frame

    def _still_avatar(self, s: AnimationSettings) -> np.ndarray:
        img = self.avatar.face.image if s.paste_back else self.avatar.face.crop
        return img[:, ::-1].copy() if s.mirror else img

    def _render(self, v: np.ndarray, s: AnimationSettings, status: Status) -> AnimatedFrame:
        try:
            x_d = self._driving_keypoints(v, s)
        except ValueError as e:     # non-finite keypoints or degenerate geometry: keep the last frame
            log.warning("frame skipped: %s", e)
            image = self._last_image if self._last_image is not None else self._still_avatar(s)
            return AnimatedFrame(image, status, rendered=False)
        self.last_keypoints = x_d
        a = self.avatar
        crop = tensor_to_image(self.backend.render(a.feature, a.x_s, x_d))
        if s.paste_back:
            image = fc.paste_back(crop, a.face.transform.M_c2o, a.face.image, a.face.paste)
        else:
            image = crop
        if s.mirror:
            image = np.ascontiguousarray(image[:, ::-1])
        self._last_image = image
        return AnimatedFrame(image, status, rendered=True)

    def _driving_keypoints(self, v: np.ndarray, s: AnimationSettings) -> torch.Tensor:
        a, ref = self.avatar, self.reference.value
        dev = self.backend.device
        src = a.info

        def tensor(x: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, np.float32).reshape(shape), device=dev)

        # rotation: the user's rotation relative to the reference, as angles, scaled and limited
        # (3x3 bookkeeping in numpy: cheaper than a dozen tiny torch calls per frame)
        rel = motion.euler_from_rotation_np(motion.rotation_matrix_np(*v[_ANG]) @ motion.rotation_matrix_np(*ref[_ANG]).T)
        limited = [float(np.clip(angle * mult, -limit, limit))
                   for angle, mult, limit in zip(rel, s.rotation_multiplier, s.rotation_limit_deg)]
        R_new = tensor(motion.rotation_matrix_np(*limited), (1, 3, 3)) @ a.R_s

        exp_delta = (v[_EXP] - ref[_EXP]) * s.expression_multiplier
        # with retargeting on, the eye / lip keypoints keep the avatar's own expression and the
        # retargeting network sets their openness instead (no double counting)
        exp_delta = exp_delta.reshape(motion.NUM_KP, 3)
        if s.eye_mode != "off":
            exp_delta[list(motion.EYE_KEYPOINTS)] = 0.0
        if s.lip_mode != "off":
            exp_delta[list(motion.LIP_KEYPOINTS)] = 0.0
        exp_new = src.exp + tensor(exp_delta, (1, motion.NUM_KP, 3))
        scale_new = src.scale * float(v[_SCALE][0] / ref[_SCALE][0])
        t_delta = np.zeros(3) if s.translation_lock else (v[_T] - ref[_T])
        t_delta[2] = -float(src.t[0, 2])        # t_z of the result is 0, as in the official pipeline
        t_new = src.t + tensor(t_delta, (1, 3))
        x_d = scale_new[..., None] * (src.kp @ R_new + exp_new) + t_new[:, None, :]

        if s.driving_option == "expression-friendly":
            if a.expression_multiplier is None:
                raise ValueError("the avatar's keypoints span no 3-D volume (expression-friendly driving)")
            x_d = motion.expression_friendly(x_d, a.expression_reference, a.x_s, a.expression_multiplier)

        if s.eye_mode != "off":
            target = s.eye_target if s.eye_mode == "fixed" else self._follow_eye_target(v, ref)
            ratios = motion.combined_eye_ratios(a.eye_ratios, torch.tensor([[target]], device=dev))
            x_d = x_d + motion.eye_retarget_delta(self.backend.eye, a.x_s, ratios)
        if s.lip_mode != "off":
            target = s.lip_target if s.lip_mode == "fixed" else float(v[_LIP][0])
            ratios = motion.combined_lip_ratios(a.lip_ratio, torch.tensor([[target]], device=dev))
            x_d = x_d + motion.lip_retarget_delta(self.backend.lip, a.x_s, ratios)

        if s.stitching:
            x_d = motion.apply_stitching(self.backend.stitching, a.x_s, x_d)
            if s.normalize_lip and s.lip_mode == "off" and a.lip_normalization is not None:
                x_d = x_d + a.lip_normalization
        return motion.require_finite("driving keypoints", x_d)

    def _follow_eye_target(self, v: np.ndarray, ref: np.ndarray) -> float:
        """The user's eye openness on the avatar's scale (paper, sec. 4.3): the user's ratio times
        avatar-open / user-neutral, so a user with narrow eyes still opens the avatar's fully."""
        user_neutral = float(np.mean(ref[_EYES]))
        avatar_open = float(self.avatar.eye_ratios.mean())
        user_now = float(np.mean(v[_EYES]))
        if user_neutral < 1e-3 or not math.isfinite(user_now):
            return avatar_open
        return float(np.clip(user_now * avatar_open / user_neutral, 0.0, 0.8))
