"""The animator: one driving face in, one animated avatar frame out.

It holds what a live session needs beyond the pure motion math of ``engines.motion``: the prepared
avatar, the user's neutral reference, the motion smoothing filters and the face-lost state. All
tunable behaviour comes from ``AnimationSettings`` (read once per frame).

Motion is always *relative*: the user's pose and expression are compared with their own neutral
reference (averaged over the first steady frames, or re-taken with ``calibrate``) and the change is
applied to the avatar's own pose and expression.

The per-frame chain stays on the backend's device: the driver's motion vector, its smoothing, the
keypoint math, the MLPs, the renderer and (on a GPU) the paste-back are torch operations queued
without waiting, and the frame's one device -> host transfer is the finished image (with a
validity byte). Only while a neutral reference is being taken (a few frames) does the motion come
to the host, for the steadiness test.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
import torch

from engines import motion
from engines.backend import InferenceBackend

from .face import crop as fc
from .face.avatar import AvatarFace
from .face.driving import DrivingFace
from .face.paste_device import DevicePasteBack
from .face.smoothing import OneEuroFilter
from .settings import AnimationSettings, LiveSettings, SmoothingGroup

log = logging.getLogger(__name__)

# Layout of the driver-motion vector that is smoothed, averaged and eased.
_ANG, _T, _SCALE = slice(0, 3), slice(3, 6), slice(6, 7)
_EXP = slice(7, 7 + 3 * motion.NUM_KP)
_EYES = slice(_EXP.stop, _EXP.stop + 2)
_LIP = slice(_EYES.stop, _EYES.stop + 1)
_SIZE = _LIP.stop
_GROUP_PARTS = {SmoothingGroup.ROTATION: (_ANG,), SmoothingGroup.TRANSLATION: (_T, _SCALE),
                SmoothingGroup.EXPRESSION: (_EXP,), SmoothingGroup.EYES: (_EYES,), SmoothingGroup.LIPS: (_LIP,)}
# One Euro tuning per group at smoothing strength 1 (min cutoff in Hz, beta in units/s of the group)
_STRONGEST_CUTOFF = 0.3
_WEAKEST_CUTOFF = 8.0
_BETA = {SmoothingGroup.ROTATION: 0.05, SmoothingGroup.TRANSLATION: 5.0, SmoothingGroup.EXPRESSION: 2.0,
         SmoothingGroup.EYES: 3.0, SmoothingGroup.LIPS: 3.0}
# A reference frame counts as steady when it stays within these of the window's mean.
_STEADY_DEGREES = 3.0
_STEADY_TRANSLATION = 0.02
_STEADY_SCALE = 0.03


def image_to_tensor(image_bgr: np.ndarray, device: torch.device,
                    upload: Callable[[np.ndarray], torch.Tensor] | None = None) -> torch.Tensor:
    """H x W x 3 uint8 BGR -> 1 x 3 x H x W float RGB in [0, 1] on ``device``; the bytes go up
    through ``upload`` when given (the live loop's non-blocking uploads), as uint8."""
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    on_device = upload(rgb) if upload is not None else torch.from_numpy(rgb).to(device)
    return on_device.permute(2, 0, 1)[None].float().div_(255.0)


def render_to_planes(image: torch.Tensor) -> torch.Tensor:
    """1 x 3 x H x W RGB in [0, 1] -> 3 x H x W uint8 RGB planes (truncated, like the official code)."""
    return (image[0] * 255).clamp_(0, 255).to(torch.uint8)


def fetch_image(planes: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[np.ndarray, bool]:
    """The frame's one device -> host transfer: 3 x H x W uint8 RGB planes (and a 0-dim bool
    validity flag, riding along as one extra byte) -> H x W x 3 BGR image and the flag."""
    if planes.device.type == "cpu":
        p = planes.numpy()
        ok = True if valid is None else bool(valid.numpy())       # no transfer on the CPU
        if p.size == 0:
            return np.empty(p.shape[1:] + (3,), np.uint8), ok
        return cv2.merge([p[2], p[1], p[0]]), ok                  # interleave and reverse in one pass
    return unpack_frame(pack_frame(planes, valid).cpu().numpy(), planes.shape[1], planes.shape[2], valid is not None)


def pack_frame(planes: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """On the device: RGB planes -> interleaved BGR bytes, then the validity byte (if any)."""
    flat = planes.flip(0).permute(1, 2, 0).reshape(-1)
    return flat if valid is None else torch.cat([flat, valid.reshape(1).to(torch.uint8)])


def unpack_frame(host: np.ndarray, height: int, width: int, has_flag: bool) -> tuple[np.ndarray, bool]:
    """On the host: the bytes of ``pack_frame`` -> H x W x 3 BGR image (a view) and the flag."""
    return host[:height * width * 3].reshape(height, width, 3), not has_flag or bool(host[-1])


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


class Status(StrEnum):
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


def driving_motion(v: torch.Tensor) -> motion.DrivingMotion:
    """A driver vector -> the batch-of-one ``DrivingMotion`` of the keypoint math (views of ``v``
    and its rotation matrix)."""
    return motion.DrivingMotion(R=motion.rotation_matrix(v[0:1], v[1:2], v[2:3]),
                                exp=v[_EXP].reshape(1, motion.NUM_KP, 3), scale=v[_SCALE].reshape(1, 1),
                                t=v[_T].reshape(1, 3))


def driver_vector(info: motion.KeypointInfo, ratios: torch.Tensor) -> torch.Tensor:
    """The user's motion in one frame as a flat float32 vector on the motion's device (see the
    slices above); ``ratios`` = [left eye, right eye, lip] open ratios from the landmarks."""
    return torch.cat([info.pitch.reshape(1), info.yaw.reshape(1), info.roll.reshape(1), info.t.reshape(3),
                      info.scale.reshape(1), info.exp.reshape(-1), ratios.reshape(3)]).float()


class HostToDevice:
    """Uploads of a frame's inputs that do not wait for the GPU. A plain copy from pageable host
    memory drains the CUDA stream first; a copy from page-locked memory is queued like a kernel.
    So each named input goes through its own page-locked staging buffer, reused once the copy
    queued from it last time has finished. On a CPU device the array is used in place."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._staging: dict[str, tuple[torch.Tensor, torch.cuda.Event]] = {}

    def __call__(self, name: str, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type != "cuda":
            return host.to(self.device)
        staged = self._staging.get(name)
        if staged is None or staged[0].shape != host.shape or staged[0].dtype != host.dtype:
            staged = (torch.empty(host.shape, dtype=host.dtype, pin_memory=True), torch.cuda.Event())
            self._staging[name] = staged
        buffer, done = staged
        if not done.query():       # the last copy is still in flight (normally long finished)
            done.synchronize()
        buffer.copy_(host)
        on_device = buffer.to(self.device, non_blocking=True)
        done.record()
        return on_device


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
    """One Euro filtering of the driver vector with a strength per ``SmoothingGroup``, read from
    the settings each frame. One filter runs over the whole vector with per-element cutoffs and
    betas (a handful of device operations per frame instead of one set per group); a group at
    strength 0 gets an infinite cutoff, which passes it through unchanged."""

    def __init__(self) -> None:
        self.filter = OneEuroFilter()
        self._tuning: tuple[tuple[float, ...], torch.device, torch.Tensor, torch.Tensor] | None = None

    def reset(self) -> None:
        self.filter.reset()

    def tune(self, settings: AnimationSettings, device: torch.device) -> None:
        """Per-element cutoffs and betas for these settings, uploaded when they change."""
        strengths = tuple(settings.smoothing(group) for group in SmoothingGroup)
        if self._tuning is not None and self._tuning[:2] == (strengths, device):
            return
        cutoff, beta = np.empty(_SIZE, np.float32), np.empty(_SIZE, np.float32)
        for group, strength in zip(SmoothingGroup, strengths, strict=True):
            for part in _GROUP_PARTS[group]:
                # strength 0..1 -> cutoff from 8 Hz (light) down to 0.3 Hz (heavy), geometric
                cutoff[part] = (np.inf if strength <= 0
                                else _WEAKEST_CUTOFF * (_STRONGEST_CUTOFF / _WEAKEST_CUTOFF) ** strength)
                beta[part] = 0.0 if strength <= 0 else _BETA[group]
        self._tuning = (strengths, device, torch.from_numpy(cutoff).to(device), torch.from_numpy(beta).to(device))

    def __call__(self, v: torch.Tensor, t: float, settings: AnimationSettings) -> torch.Tensor:
        self.tune(settings, v.device)
        self.filter.min_cutoff, self.filter.beta = self._tuning[2], self._tuning[3]
        return self.filter(v, t)


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


class Animator:
    """Per-frame animation of one avatar. ``process`` is called from one thread (the inference
    stage); ``set_avatar`` and ``calibrate`` may be called from any thread and take effect on the
    next frame.

    ``paste_on_device``: blend the rendered crop into the avatar image on the backend's device
    (default: on CUDA devices; on a CPU, OpenCV's paste-back is faster)."""

    def __init__(self, backend: InferenceBackend, settings: LiveSettings, avatar: PreparedAvatar, *,
                 paste_on_device: bool | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.paste_on_device = backend.device.type == "cuda" if paste_on_device is None else paste_on_device
        self._upload = HostToDevice(backend.device)
        self._lock = threading.Lock()
        self._pending_avatar: PreparedAvatar | None = None
        self._calibrate_requested = False
        self.avatar = avatar
        self._device_paste: DevicePasteBack | None = None
        self.reference = NeutralReference()
        self._reference: torch.Tensor | None = None       # reference.value on the device
        self._reference_motion: motion.DrivingMotion | None = None   # its DrivingMotion
        self.smoother = MotionSmoother()
        self._last_raw: torch.Tensor | None = None        # driver vector of the last valid frame
        self._last_motion: torch.Tensor | None = None     # smoothed driver vector of the last frame
        self._last_image: np.ndarray | None = None
        self._lost_since: float | None = None
        self._lost_from: torch.Tensor | None = None
        self._neutral_image: np.ndarray | None = None
        self.last_keypoints: torch.Tensor | None = None   # x_d of the last rendered frame
        self._resume_from: torch.Tensor | None = None
        self._resume_start = 0.0
        self._constants: tuple[AnimationSettings, _SettingTensors] | None = None

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
        # constants of changed settings (and a new avatar's paste-back) go up now, while nothing
        # is queued: an upload from pageable memory waits for the device to finish what is queued
        self.smoother.tune(s, self.backend.device)
        self._setting_tensors(s)
        if s.paste_back and self.paste_on_device:
            self._paste_back_on_device()
        if face is None:
            return self._face_lost(t, s)
        # both uploads first, then the work: nothing below waits for the device until the fetch
        crop = image_to_tensor(face.network_input, self.backend.device, lambda rgb: self._upload("crop", rgb))
        ratios = self._upload("ratios", np.concatenate([face.eye_ratios.reshape(-1)[:2],
                                                        face.lip_ratio.reshape(-1)[:1]]).astype(np.float32))
        info = self.backend.motion(crop)
        raw = driver_vector(info, ratios)
        valid: torch.Tensor | None = None
        if not self.reference.final:
            # calibrating: the steadiness test reads the motion on the host (a few frames only)
            host = raw.double().cpu().numpy()
            if not np.isfinite(host).all():
                log.warning("motion extractor returned NaN/inf; frame skipped")
                return self._face_lost(t, s)
            self.reference.add(host, s.reference_frames)
            ref = torch.as_tensor(self.reference.value, dtype=torch.float32, device=raw.device)
            self._reference = ref
            self._reference_motion = driving_motion(ref)
        else:
            # live: a NaN/inf motion is replaced by the last valid one on the device (no waiting
            # here); the flag comes back with the image and the frame is then dropped
            valid = torch.isfinite(raw).all()
            raw = torch.where(valid, raw, self._last_raw if self._last_raw is not None else self._reference)
        self._last_raw = raw
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
        return self._render(v, s, status, valid)

    # -- internals ----------------------------------------------------------------------------
    def _apply_requests(self) -> None:
        with self._lock:
            avatar, self._pending_avatar = self._pending_avatar, None
            calibrate, self._calibrate_requested = self._calibrate_requested, False
        if avatar is not None:
            self.avatar = avatar
            self._device_paste = None
            self._neutral_image = None
            self._last_image = None
            self.last_keypoints = None
        if calibrate:
            self.reference.reset()

    def _face_lost(self, t: float, s: AnimationSettings) -> AnimatedFrame:
        if self._last_motion is None or self._reference is None:
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
        v = (1 - w) * self._lost_from + w * self._reference
        self.smoother(v, t, s)        # keep the filters on the eased motion: resuming glides from here
        self._last_motion = v
        frame = self._render(v, s, Status.NEUTRAL if w >= 1.0 else Status.EASING)
        if w >= 1.0 and frame.rendered:
            self._neutral_image = frame.image
        return frame

    def _still_avatar(self, s: AnimationSettings) -> np.ndarray:
        img = self.avatar.face.image if s.paste_back else self.avatar.face.crop
        return img[:, ::-1].copy() if s.mirror else img

    def _render(self, v: torch.Tensor, s: AnimationSettings, status: Status,
                valid: torch.Tensor | None = None) -> AnimatedFrame:
        a = self.avatar
        try:
            x_d = self._driving_keypoints(v, s)
        except ValueError as e:     # degenerate geometry: keep the last frame
            log.warning("frame skipped: %s", e)
            return self._skipped(s, status)
        finite = torch.isfinite(x_d).all()
        valid = finite if valid is None else valid & finite
        x_d = torch.where(finite, x_d, self.last_keypoints if self.last_keypoints is not None else a.x_s)
        self.last_keypoints = x_d
        rendered = self.backend.render(a.feature, a.x_s, x_d)
        if s.paste_back and self.paste_on_device:
            planes = self._paste_back_on_device()(render_to_planes(rendered))
        else:
            planes = render_to_planes(rendered)
        image, ok = fetch_image(planes, valid)
        if not ok:
            log.warning("frame skipped: NaN or inf in the driver's motion or the driving keypoints")
            return self._skipped(s, status)
        if s.paste_back:
            image = (self._paste_back_on_device().compose(image) if self.paste_on_device
                     else fc.paste_back(image, a.face.transform.M_c2o, a.face.image, a.face.paste))
        if s.mirror:
            image = np.ascontiguousarray(image[:, ::-1])
        self._last_image = image
        return AnimatedFrame(image, status, rendered=True)

    def _skipped(self, s: AnimationSettings, status: Status) -> AnimatedFrame:
        image = self._last_image if self._last_image is not None else self._still_avatar(s)
        return AnimatedFrame(image, status, rendered=False)

    def _paste_back_on_device(self) -> DevicePasteBack:
        if self._device_paste is None:
            face = self.avatar.face
            self._device_paste = DevicePasteBack(face.image, face.transform.M_c2o, face.paste,
                                                 face.transform.dsize, self.backend.device)
        return self._device_paste

    def _setting_tensors(self, s: AnimationSettings) -> _SettingTensors:
        if self._constants is None or self._constants[0] is not s:
            self._constants = (s, _SettingTensors.make(s, self.backend.device))
        return self._constants[1]

    def _driving_keypoints(self, v: torch.Tensor, s: AnimationSettings) -> torch.Tensor:
        """x_d from the (smoothed) driver vector, all on the device: ``motion.animate_keypoints``
        with the settings' controls, relative to the neutral reference."""
        a, c = self.avatar, self._setting_tensors(s)
        return motion.animate_keypoints(
            a.info, a.x_s, driving_motion(v), self._reference_motion,
            stitching_net=self.backend.stitching if s.stitching else None, option=s.driving_option,
            x_d_ref=a.expression_reference, expression_multiplier=a.expression_multiplier,
            lip_delta=a.lip_normalization if s.normalize_lip and s.lip_mode == "off" else None,
            R_s=a.R_s, controls=c.controls, check_finite=False, retargeting=self._retargeting(v, s, c)).final

    def _retargeting(self, v: torch.Tensor, s: AnimationSettings, c: _SettingTensors) -> list[torch.Tensor]:
        """R_eyes / R_lip offsets for the modes that are on. Their keypoints keep the avatar's own
        expression (``_SettingTensors``), so the networks alone set the openness."""
        a, offsets = self.avatar, []
        if s.eye_mode != "off":
            target = c.eye_target if s.eye_mode == "fixed" else self._follow_eye_target(v, self._reference)
            offsets.append(motion.eye_retarget_delta(self.backend.eye, a.x_s,
                                                     motion.combined_eye_ratios(a.eye_ratios, target)))
        if s.lip_mode != "off":
            target = c.lip_target if s.lip_mode == "fixed" else v[_LIP]
            offsets.append(motion.lip_retarget_delta(self.backend.lip, a.x_s,
                                                     motion.combined_lip_ratios(a.lip_ratio, target)))
        return offsets

    def _follow_eye_target(self, v: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """The user's eye openness on the avatar's scale (paper, sec. 4.3): the user's ratio times
        avatar-open / user-neutral, so a user with narrow eyes still opens the avatar's fully."""
        user_neutral = ref[_EYES].mean()
        avatar_open = self.avatar.eye_ratios.mean()
        user_now = v[_EYES].mean()
        scaled = (user_now * avatar_open / user_neutral.clamp_min(1e-3)).clamp(0.0, 0.8)
        usable = (user_neutral >= 1e-3) & torch.isfinite(user_now)
        return torch.where(usable, scaled, avatar_open).reshape(1, 1)


@dataclass(frozen=True)
class _SettingTensors:
    """The settings the keypoint math uses, as device tensors (made once per settings snapshot,
    not once per frame)."""

    controls: motion.MotionControls
    eye_target: torch.Tensor              # 1 x 1
    lip_target: torch.Tensor              # 1 x 1

    @staticmethod
    def make(s: AnimationSettings, device: torch.device) -> _SettingTensors:
        undriven = ((motion.EYE_KEYPOINTS if s.eye_mode != "off" else ())
                    + (motion.LIP_KEYPOINTS if s.lip_mode != "off" else ()))
        controls = motion.MotionControls.make(
            device, rotation_multiplier=s.rotation_multiplier, rotation_limit_deg=s.rotation_limit_deg,
            expression_multiplier=s.expression_multiplier, undriven_keypoints=undriven,
            translation_lock=s.translation_lock)
        return _SettingTensors(controls=controls,
                               eye_target=torch.tensor([[s.eye_target]], dtype=torch.float32, device=device),
                               lip_target=torch.tensor([[s.lip_target]], dtype=torch.float32, device=device))
