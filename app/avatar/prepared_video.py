"""A video avatar prepared for animation: M run once on every frame of the clip (in batches) and the
per-frame constants of the keypoint math; F made per frame on demand (``PreparedVideo.frame``).

Why F is not cached per frame: its output is 32 x 16 x 64 x 64 float32 = 8.4 MB a frame (2.1 GB
for a 10 s clip at 25 fps), while F costs a fraction of W+G per output frame (measured by
``app.diagnostics.video_bench``). The last frames' are kept, so an output faster than the clip
reuses them."""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, fields

import torch

from engines import motion
from engines.backend import InferenceBackend

from ..imaging.device_io import image_to_tensor
from .prepared import PreparedAvatar
from .video import AvatarVideo

log = logging.getLogger(__name__)

# frames per M call at load (PyTorch backends take batches; the exported graphs have batch 1)
MOTION_BATCH = 16
_CACHED_FRAMES = 2


@dataclass(frozen=True)
class PreparedVideo:
    """Everything computed once per video avatar, per source frame (n = ``video.num_frames``), on the
    backend's device: ``info`` (M's refined output, batch n), ``x_s`` n x K x 3, ``R_s`` n x 3 x 3,
    the ratios (n x 2, n x 1; None without landmarks), each frame's lip normalisation (None: closed
    mouth, no landmarks, or an animal), the expression-friendly reference n x K x 3 and multipliers."""

    video: AvatarVideo
    info: motion.KeypointInfo
    x_s: torch.Tensor
    R_s: torch.Tensor
    eye_ratios: torch.Tensor | None
    lip_ratios: torch.Tensor | None
    lip_normalization: tuple[torch.Tensor | None, ...]
    expression_reference: torch.Tensor
    expression_multipliers: tuple[float | None, ...]
    _frames: OrderedDict[int, PreparedAvatar] = field(default_factory=OrderedDict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def num_frames(self) -> int:
        return self.video.num_frames

    @property
    def fps(self) -> float:
        return self.video.fps

    def frame(self, i: int, backend: InferenceBackend) -> PreparedAvatar:
        """Source frame ``i`` as a still's ``PreparedAvatar`` (its ``AvatarFace`` from
        ``AvatarVideo.face``, F run now on ``backend``, the same one that prepared the clip); the
        last ``_CACHED_FRAMES`` are kept. ``video`` of the result is this clip."""
        with self._lock:
            cached = self._frames.get(i)
            if cached is not None:
                self._frames.move_to_end(i)
                return cached
        face = self.video.face(i)
        with torch.inference_mode():
            feature = backend.appearance(image_to_tensor(face.network_input, backend.device))
        one = slice(i, i + 1)
        avatar = PreparedAvatar(
            face=face, feature=feature, info=_rows(self.info, one), x_s=self.x_s[one], R_s=self.R_s[one],
            eye_ratios=None if self.eye_ratios is None else self.eye_ratios[one],
            lip_ratio=None if self.lip_ratios is None else self.lip_ratios[one],
            lip_normalization=self.lip_normalization[i], expression_reference=self.expression_reference[one],
            expression_multiplier=self.expression_multipliers[i], video=self)
        with self._lock:
            self._frames[i] = avatar
            while len(self._frames) > _CACHED_FRAMES:
                self._frames.popitem(last=False)
        return avatar


def _rows(info: motion.KeypointInfo, rows: slice) -> motion.KeypointInfo:
    return motion.KeypointInfo(**{f.name: getattr(info, f.name)[rows] for f in fields(info)})


def _cat(infos: list[motion.KeypointInfo]) -> motion.KeypointInfo:
    return motion.KeypointInfo(**{f.name: torch.cat([getattr(i, f.name) for i in infos]) for f in fields(infos[0])})


def prepare_video(video: AvatarVideo, backend: InferenceBackend, *, batch: int | None = None) -> PreparedAvatar:
    """Run M on every frame of ``video`` (``batch`` frames a call, default ``MOTION_BATCH``)
    and derive the per-frame constants. The result is frame 0 as a still's
    ``PreparedAvatar`` (so whatever reads a still keeps working) with ``video`` set to the clip."""
    if batch is None:
        # every backend takes a batch (ONNX Runtime and TensorRT run it row by row), and a render
        # server's BatchedBackend passes M straight to its shared backend
        batch = MOTION_BATCH
    with torch.inference_mode():
        infos = []
        for start in range(0, video.num_frames, batch):
            images = [image_to_tensor(video.network_input(i), backend.device)
                      for i in range(start, min(start + batch, video.num_frames))]
            infos.append(backend.motion(torch.cat(images)))
        info = _cat(infos)
        x_s = motion.keypoints_from_info(info)
        R_s = info.rotation()
        still = motion.DrivingMotion(R=R_s, exp=info.exp, scale=info.scale, t=info.t)
        x_ref = motion.relative_keypoints(info, R_s, still, still, source_motion="video")
        animal = video.kind == "animal"
        eyes = lips = None
        if not animal and video.eye_ratios is not None and video.lip_ratios is not None:
            eyes = torch.from_numpy(video.eye_ratios).to(backend.device)
            lips = torch.from_numpy(video.lip_ratios).to(backend.device)
        multipliers: list[float | None] = []
        lip_deltas: list[torch.Tensor | None] = []
        for i in range(video.num_frames):
            multiplier: float | None = None
            if not animal:
                try:
                    multiplier = motion.expression_motion_multiplier(x_s[i:i + 1], x_ref[i:i + 1])
                except ValueError as e:
                    log.debug("frame %d: expression-friendly driving unavailable: %s", i, e)
            multipliers.append(multiplier)
            lip_deltas.append(None if lips is None else
                              motion.lip_normalization_delta(backend.lip, x_s[i:i + 1], lips[i:i + 1]))
        prepared = PreparedVideo(video=video, info=info, x_s=x_s, R_s=R_s, eye_ratios=eyes, lip_ratios=lips,
                                 lip_normalization=tuple(lip_deltas), expression_reference=x_ref,
                                 expression_multipliers=tuple(multipliers))
        return prepared.frame(0, backend)
