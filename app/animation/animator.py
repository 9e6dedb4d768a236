"""The animator: one driving face in, one animated avatar frame out.

It holds what a live session needs beyond the pure motion math of ``engines.motion``: the prepared
avatar, the user's neutral reference, the motion smoothing and the face-lost state. All tunable
behaviour comes from ``AnimationSettings`` (read once per frame). Motion is *relative*: the change
of the user's pose and expression from their own neutral reference (the first steady frames, or
re-taken with ``calibrate``) is applied to the avatar's by ``motion.animate_keypoints``, the
function the parity kit checks.

The per-frame chain stays on the backend's device: the driver's motion, its smoothing, the
keypoint math, the MLPs, the renderer and (on a GPU) the paste-back are queued without waiting,
and the frame's one device -> host transfer is the finished image with a validity byte. Only
while a neutral reference is taken (a few frames) does the motion come to the host. The output's
background (``AnimationSettings.background``) is composited last, on the device where the
paste-back runs there (``app.compositing.background``), else on the host with the paste-back and
the mirror (``app.compositing.finishing``); still, held and neutral frames get it too.

An animal avatar (``PreparedAvatar.kind``; the animator's backend then holds the animal networks)
is driven by the official animal formula (``motion.animate_animal_keypoints``) with the neutral
reference as its first frame: the reference's keypoints and the convex-hull multiplier are made
when the reference changes (the multiplier on the host: only while the reference is taken, whose
frames read the motion back anyway), never on a live frame. Smoothing, the face-lost states, the
background and the outputs are the same for both kinds; an avatar without open ratios (no
landmarks, or an animal) gets no eye/lip retargeting and no lip normalisation.

A video avatar (``PreparedAvatar.video``) plays its clip ping-pong on the output's clock: frame
``process``'s ``t`` shows source frame ``pingpong_index(t - t_first)`` (``t_first``: the first frame
this avatar processed), or the ``source_index`` a caller names. Each frame is driven with that
source frame's prepared values by the official video composition (``source_motion="video"``: the
clip's own scale and translation) and finished into that frame's image; frames without a driving
face and the face-lost hold show the clip's own frame. A still avatar takes none of these steps.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np
import torch

from engines import motion
from engines.backend import InferenceBackend

from ..avatar.prepared import PreparedAvatar
from ..avatar.video import pingpong_index
from ..compositing.background import BackgroundCompositor
from ..compositing.finishing import OutputFinisher
from ..compositing.paste_device import DevicePasteBack
from ..face.driving import DrivingFace
from ..imaging.device_io import (
    HostToDevice,
    fetch_batch,
    fetch_image,
    fetch_images,
    image_to_tensor,
    render_to_planes,
    renders_to_planes,
)
from ..imaging.segmentation import MediaPipeSelfieSegmentation, PersonSegmenter
from ..settings import AnimationSettings, LiveSettings
from . import driver_motion as driver
from .face_lost import FaceLostState
from .frames import AnimatedFrame, Status
from .retargeting import Retargeting, undriven_keypoints, without_retargeting

log = logging.getLogger(__name__)


class Animator:
    """Per-frame animation of one avatar. ``process`` is called from one thread (the inference
    stage); ``set_avatar`` and ``calibrate`` may be called from any thread and take effect on the
    next frame.

    ``paste_on_device``: blend the rendered crop into the avatar image on the backend's device
    (default: on CUDA devices; on a CPU, OpenCV's paste-back is faster); the background is then
    composited there too, else the crop is finished on the host (``OutputFinisher``, which keeps
    the held output either way). ``segmenter``: makes the person segmenter of the background
    modes, on first need (default: MediaPipe Selfie Segmentation).

    ``crop_only``: every output is the rendered 512 x 512 crop, unmirrored, without a background
    (the still output: the avatar's crop), whatever the settings' ``paste_back``, ``mirror`` and
    ``background`` say: the render server's animator, whose client finishes the crop. Nothing is
    pasted on the device then. A group photo's faces (``PreparedAvatar.batch`` > 1) are rendered in
    one batch and always finished on the host (the device paste-back is single-face)."""

    def __init__(self, backend: InferenceBackend, settings: LiveSettings, avatar: PreparedAvatar, *,
                 paste_on_device: bool | None = None,
                 segmenter: Callable[[], PersonSegmenter] = MediaPipeSelfieSegmentation,
                 crop_only: bool = False) -> None:
        if crop_only and paste_on_device:
            raise ValueError("a crop-only animator pastes nothing: paste_on_device must be off")
        self.backend = backend
        self.settings = settings
        if paste_on_device is None:
            paste_on_device = backend.device.type == "cuda" and not crop_only
        self.paste_on_device = paste_on_device
        self.avatar = avatar
        # the avatar of this frame: ``avatar`` itself, or a video avatar's current source frame
        self._frame = avatar
        self._clip_start: float | None = None     # t of the first frame a video avatar processed
        self.reference = driver.NeutralReference()
        self.smoother = driver.MotionSmoother(backend.device)
        self.face_lost = FaceLostState()
        self.retargeting = Retargeting(backend.device)
        self.last_keypoints: torch.Tensor | None = None   # x_d of the last rendered frame
        self._upload = HostToDevice(backend.device)
        self._lock = threading.Lock()
        self._pending_avatar: PreparedAvatar | None = None
        self._calibrate_requested = False
        self._device_paste: DevicePasteBack | None = None
        self._last_raw: torch.Tensor | None = None        # driver vector of the last valid frame
        self.finisher = OutputFinisher(avatar.face, segmenter, crop_only=crop_only)
        self._controls: tuple[AnimationSettings, motion.MotionControls] | None = None
        # the settings as they apply to the avatar (retargeting off without its open ratios)
        self._applied: tuple[AnimationSettings, PreparedAvatar, AnimationSettings] | None = None
        # an animal avatar's reference keypoints and multiplier: (avatar, reference vector, x_d_ref, multiplier)
        self._animal_reference: tuple[PreparedAvatar, torch.Tensor, torch.Tensor, float] | None = None

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

    @property
    def background(self) -> BackgroundCompositor:
        """The output background's compositor (the finisher's)."""
        return self.finisher.background

    def close(self) -> None:
        """Release the background's person segmenter (MediaPipe's graph). Call it once no frame is
        in flight; a later frame in a background mode would make a new one."""
        self.finisher.close()

    # -- per frame (inference thread) ----------------------------------------------------------
    @torch.inference_mode()
    def process(self, face: DrivingFace | None, t: float, *, source_index: int | None = None) -> AnimatedFrame:
        """The output for the driving ``face`` (None: no face in this frame) at ``t`` seconds (the
        motion's timeline). For a video avatar ``source_index`` names the clip's frame to show
        (a render server's client does); None: the ping-pong playback on ``t``'s clock. Still
        avatars ignore it."""
        self._apply_requests()
        if self.avatar.video is not None:
            self._source_frame(t, source_index)
        s = self._settings_for_avatar(self.settings.snapshot())
        # constants of changed settings (and a new avatar's paste-back) go up now, while nothing
        # is queued: an upload from pageable memory waits for the device to finish what is queued
        self.smoother.tune(s)
        self.retargeting.prepare(s)
        self._motion_controls(s)
        if s.paste_back and self._on_device:
            self._paste_back_on_device()
        if self.finisher.begin(s, self.backend.device if self._on_device else None):
            self.face_lost.neutral_image = None     # made for another output: made anew
        raw, valid = self._driver_motion(face, s) if face is not None else (None, None)
        if raw is None:
            return self._face_lost(t, s)
        v = self.face_lost.seen(self.smoother(raw, t, s), t, s)
        return self._render(v, s, Status.LIVE if self.reference.final else Status.CALIBRATING, valid)

    # -- internals ----------------------------------------------------------------------------
    @property
    def _on_device(self) -> bool:
        """Whether this frame is pasted (and composited) on the device: never for a group photo,
        whose faces are pasted in turn on the host (``DevicePasteBack`` pastes one face)."""
        return self.paste_on_device and self.avatar.batch == 1

    def _apply_requests(self) -> None:
        with self._lock:
            avatar, self._pending_avatar = self._pending_avatar, None
            calibrate, self._calibrate_requested = self._calibrate_requested, False
        if avatar is not None:
            self.avatar = self._frame = avatar
            self._clip_start = None
            self._device_paste = None
            self.face_lost.neutral_image = None
            self.last_keypoints = None
            self.finisher.reset(avatar.face)
        if calibrate:
            self.reference.reset()

    def _source_frame(self, t: float, source_index: int | None) -> None:
        """Make the video avatar's source frame for ``t`` (or ``source_index``) this frame's avatar:
        its prepared values, and its image for the finisher (the held neutral image and the device
        paste-back are made anew for it)."""
        video = self.avatar.video
        assert video is not None
        if self._clip_start is None:
            self._clip_start = t
        index = pingpong_index(t - self._clip_start, video.fps, video.num_frames) if source_index is None \
            else source_index
        frame = video.frame(index, self.backend)
        if frame is not self._frame:
            self._frame = frame
            self._device_paste = None
            self.face_lost.neutral_image = None
            self.finisher.set_face(frame.face)

    def _settings_for_avatar(self, s: AnimationSettings) -> AnimationSettings:
        """``s`` as it applies to the current avatar (retargeting without ratios, an animal's
        paste-back), the same object while neither changes (the per-settings constants are keyed
        on its identity)."""
        if self._applied is None or self._applied[0] is not s or self._applied[1] is not self.avatar:
            self._applied = (s, self.avatar, without_retargeting(s, self.avatar).for_kind(self.avatar.kind))
        return self._applied[2]

    def _driver_motion(self, face: DrivingFace, s: AnimationSettings) -> tuple[torch.Tensor | None, ...]:
        """This frame's driver vector on the device and its validity flag (None: no flag needed),
        or (None, None) for a frame to treat as faceless."""
        # both uploads first, then the work: nothing below waits for the device until the fetch
        crop = image_to_tensor(face.network_input, self.backend.device, lambda rgb: self._upload("crop", rgb))
        ratios = self._upload("ratios", face.open_ratios.astype(np.float32))
        raw = driver.driver_vector(self.backend.motion(crop), ratios)
        valid: torch.Tensor | None = None
        if not self.reference.final:
            # calibrating: the steadiness test reads the motion on the host (a few frames only)
            host = raw.double().cpu().numpy()
            if not np.isfinite(host).all():
                log.warning("motion extractor returned NaN/inf; frame skipped")
                return None, None
            self.reference.add(host, s.reference_frames, raw.device)
        else:
            # live: a NaN/inf motion is replaced by the last valid one on the device (no waiting
            # here); the flag comes back with the image and the frame is then dropped
            valid = torch.isfinite(raw).all()
            last = self._last_raw if self._last_raw is not None else self.reference.vector
            assert last is not None         # for the type checker: the final reference's frames came first
            raw = torch.where(valid, raw, last)
        self._last_raw = raw
        return raw, valid

    def _face_lost(self, t: float, s: AnimationSettings) -> AnimatedFrame:
        if self.face_lost.last_motion is None or self.reference.vector is None:
            # nothing animated yet: the avatar as it is (never the camera image)
            return AnimatedFrame(self.finisher.still(s), Status.NO_FACE_YET, rendered=False)
        lost = self.face_lost.lost(t, s)
        if lost.holding and self.avatar.video is not None:
            # a video avatar's clip plays on: its own frame, unanimated
            return AnimatedFrame(self.finisher.still(s), Status.HOLDING, rendered=False)
        if lost.holding and self.finisher.last is not None:
            return AnimatedFrame(self.finisher.last, Status.HOLDING, rendered=False)
        if lost.neutral and self.face_lost.neutral_image is not None:
            return AnimatedFrame(self.face_lost.neutral_image, Status.NEUTRAL, rendered=False)
        v = self.face_lost.eased(lost, self.reference.vector)
        self.smoother(v, t, s)        # keep the filters on the eased motion: resuming glides from here
        frame = self._render(v, s, Status.NEUTRAL if lost.neutral else Status.EASING)
        if lost.neutral and frame.rendered:
            self.face_lost.neutral_image = frame.image
        return frame

    def _render(self, v: torch.Tensor, s: AnimationSettings, status: Status,
                valid: torch.Tensor | None = None) -> AnimatedFrame:
        a = self._frame
        try:
            x_d = self._driving_keypoints(v, s)
        except ValueError as e:     # degenerate geometry: keep the last frame
            log.warning("frame skipped: %s", e)
            return self._skipped(s, status)
        finite = torch.isfinite(x_d).all()
        valid = finite if valid is None else valid & finite
        x_d = torch.where(finite, x_d, self.last_keypoints if self.last_keypoints is not None else a.x_s)
        self.last_keypoints = x_d
        # all faces of a group photo in one W+G call (feature, x_s and x_d of batch B) and one fetch
        rendered = self.backend.render(a.feature, a.x_s, x_d)
        if a.batch > 1:
            crops, ok = fetch_batch(renders_to_planes(rendered), valid)
            if not ok:
                log.warning("frame skipped: NaN or inf in the driver's motion or the driving keypoints")
                return self._skipped(s, status)
            return AnimatedFrame(self.finisher.finish(crops, s), status, rendered=True)
        planes = render_to_planes(rendered)
        if s.paste_back and self.paste_on_device:
            planes = self._paste_back_on_device()(planes)
        if self.paste_on_device and not s.background.keeps:
            # composited on the device; the small unkeyed region to segment comes in the same fetch
            # (the small copy only on the frames that segment)
            parts = [p for p in self.background.compose_on_device(planes, a.face, s, self._upload) if p is not None]
            fetched, ok = fetch_images(parts, valid)
            if ok:
                small = fetched[1] if len(fetched) > 1 else None
                image = self.finisher.finish_pasted(self.background.finish(fetched[0], small, a.face, s), s)
        else:
            image, ok = fetch_image(planes, valid)
            if ok and s.paste_back and self.paste_on_device:
                # the background keeps here: nothing to composite
                image = self.finisher.finish_pasted(self._paste_back_on_device().compose(image), s)
            elif ok:
                image = self.finisher.finish(image, s)
        if not ok:
            log.warning("frame skipped: NaN or inf in the driver's motion or the driving keypoints")
            return self._skipped(s, status)
        return AnimatedFrame(image, status, rendered=True)

    def _skipped(self, s: AnimationSettings, status: Status) -> AnimatedFrame:
        held = self.finisher.last if self.avatar.video is None else None     # a clip shows its own frame
        return AnimatedFrame(held if held is not None else self.finisher.still(s), status, rendered=False)

    def _paste_back_on_device(self) -> DevicePasteBack:
        if self._device_paste is None:
            face = self._frame.face
            self._device_paste = DevicePasteBack(face.image, face.transform.M_c2o, face.paste,
                                                 face.transform.dsize, self.backend.device)
        return self._device_paste

    def _motion_controls(self, s: AnimationSettings) -> motion.MotionControls:
        if self._controls is None or self._controls[0] is not s:
            self._controls = (s, motion.MotionControls.make(
                self.backend.device, rotation_multiplier=s.rotation_multiplier,
                rotation_limit_deg=s.rotation_limit_deg, expression_multiplier=s.expression_multiplier,
                undriven_keypoints=undriven_keypoints(s), translation_lock=s.translation_lock))
        return self._controls[1]

    def _driving_keypoints(self, v: torch.Tensor, s: AnimationSettings) -> torch.Tensor:
        """x_d from the (smoothed) driver vector, all on the device: ``motion.animate_keypoints``
        with the settings' controls, relative to the neutral reference (an animal avatar:
        ``motion.animate_animal_keypoints``, stitching if ``animal_stitching``, the driving
        multiplier ``motion_strength``; a video avatar's source frame by the video composition)."""
        a = self._frame
        # for the type checker: the reference's first frame set both before any frame is rendered
        assert self.reference.motion is not None and self.reference.vector is not None
        if a.kind == "animal":
            x_d_ref, multiplier = self._animal_reference_keypoints()
            return motion.animate_animal_keypoints(
                a.info, a.x_s, driver.driving_motion(v), x_d_ref, multiplier,
                stitching_net=self.backend.stitching if s.animal_stitching else None,
                driving_multiplier=s.motion_strength, check_finite=False)
        return motion.animate_keypoints(
            a.info, a.x_s, driver.driving_motion(v), self.reference.motion,
            stitching_net=self.backend.stitching if s.stitching else None, option=s.driving_option,
            x_d_ref=a.expression_reference, expression_multiplier=a.expression_multiplier,
            lip_delta=a.lip_normalization if s.normalize_lip and s.lip_mode == "off" else None,
            R_s=a.R_s, controls=self._motion_controls(s), check_finite=False,
            source_motion="image" if a.video is None else "video",
            retargeting=self.retargeting.offsets(v, self.reference.vector, a, self.backend, s)).final

    def _animal_reference_keypoints(self) -> tuple[torch.Tensor, float]:
        """The animal formula's reference keypoints (the neutral reference's, on the avatar) and its
        convex-hull multiplier, made anew only when the reference or the avatar changes: the
        multiplier is read on the host, which only frames that take the reference do anyway."""
        a, vector, reference = self._frame, self.reference.vector, self.reference.motion
        assert vector is not None and reference is not None
        cached = self._animal_reference
        if cached is None or cached[0] is not a or cached[1] is not vector:
            x_d_ref = motion.animal_keypoints(a.info, reference)
            try:
                multiplier = motion.expression_motion_multiplier(a.x_s, x_d_ref)
            except ValueError as e:     # flat keypoints: the motion as it is, unscaled
                log.warning("animal motion unscaled: %s", e)
                multiplier = 1.0
            if not np.isfinite(multiplier):
                log.warning("animal motion unscaled: the reference's keypoints span no volume")
                multiplier = 1.0
            cached = self._animal_reference = (a, vector, x_d_ref, multiplier)
        return cached[2], cached[3]
