"""One live session on the render server: the client's avatar, prepared on the server's backend,
and an ``Animator`` holding the session's neutral reference, smoothing and face-lost state. It
turns decoded protocol messages into animated 512 x 512 crops; the WebSocket loop around it is
``app.remote.server.service``. Methods are called from one worker thread at a time.

Each avatar is animated on the backend of its kind's weight set (``WeightSets``: the human or the
animal networks, loaded on a session's first need); an avatar of another kind than the last one
gets a new ``Animator`` on that set's backend (and takes a new neutral reference).

The server animates the crop only: paste-back, mirror and background are the client's (its
settings for them never reach the server). The session's animator is built crop-only for that
(``Animator(crop_only=True)``), so its output is the bare rendered crop whatever those settings
are.

A group photo's K crops become one group face (``avatar_group_from_faces``), prepared as one batch
(one F and one M call) and rendered as one W+G batch of K rows, its K crops going back in one
result. A video avatar's per-frame crops arrive in ``avatar_frames`` messages after its header
(kept JPEG-encoded as they came, ``avatar_video_from_jpeg_crops``) and are prepared once, as the
local animator's clip is (``prepare_video``: M per frame now, F per frame on use); each frame then
names the clip frame it is rendered from (``Animator.process(..., source_index=)``): the client
keeps the clip's clock.

``FrameGate`` decides which of a session's frames are answered, and when (the proof of reading and
the frame-rate cap)."""
from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...animation.animator import Animator
from ...avatar.face import avatar_face_from_crop, avatar_group_from_faces
from ...avatar.framing import AvatarKind
from ...avatar.prepared import PreparedAvatar, prepare_avatar
from ...avatar.prepared_video import prepare_video
from ...avatar.video import avatar_video_from_jpeg_crops
from ...face import crop as fc
from ...face.driving import DrivingFace
from ...settings import LiveSettings
from .. import protocol as p
from .weight_sets import WeightSets

_NO_TRANSFORM = fc.CropTransform(M_o2c=np.eye(3)[:2], M_c2o=np.eye(3)[:2], dsize=fc.DRIVING_CROP.dsize)


class RenderSession:
    """``backends``: the replica's weight sets, one backend per avatar kind. ``frame_format``: how
    driving crops come and animated crops go (``jpeg`` or ``raw``)."""

    def __init__(self, backends: WeightSets, frame_format: str, quality: int = 90,
                 limits: p.Limits | None = None) -> None:
        self.backends = backends
        self.frame_format = frame_format
        self.quality = quality
        self.limits = limits or p.Limits()
        self.settings = LiveSettings()      # the motion settings; the output ones are the client's
        self.revision = 0
        self.animator: Animator | None = None
        self.kind: AvatarKind | None = None     # the avatar's kind: which set the animator runs on
        self.faces = 1                          # the avatar's faces: crops per result
        self.video_frames: int | None = None    # a video avatar's frames (None: a still)
        self.upload: _VideoUpload | None = None   # a video avatar whose frames are coming

    # -- messages (worker thread) --------------------------------------------------------------
    def set_avatar(self, header: dict[str, Any], payload: bytes) -> dict[str, Any] | None:
        """An ``avatar`` message: prepare it (F and M of its kind's set, loaded first when no
        session has needed it yet; a group's faces as one batch) and answer ``avatar_ready``; a
        video avatar's header starts its upload instead (None: no answer yet, ``add_frames``
        answers after the last frame). ``WeightSetError`` when the set cannot be loaded here."""
        t0 = time.perf_counter()
        if self.upload is not None:
            raise p.ProtocolError("avatar: the video avatar's frames are not all uploaded yet")
        kind = p.avatar_kind(header)
        video = p.video_fields(header)
        if video is not None:
            p.choice(header, "format", p.VIDEO_FORMATS)
            p.avatar_box(header)                # informational, but checked
            if payload:
                raise p.ProtocolError("avatar: a video avatar's crops come in avatar_frames messages")
            self.upload = _VideoUpload(kind, video)
            return None
        faces, crops = p.avatar_crops(header, payload)
        face = avatar_group_from_faces([avatar_face_from_crop(crop, f.eye_ratios, f.lip_ratio, kind=kind, box=f.box)
                                        for f, crop in zip(faces, crops, strict=True)])
        backend = self.backends.get(kind)
        with torch.inference_mode():
            avatar = prepare_avatar(face, backend)
        return self._use(avatar, t0, faces=len(crops), frames=None)

    def add_frames(self, header: dict[str, Any], payload: bytes) -> dict[str, Any] | None:
        """An ``avatar_frames`` message of the video avatar being uploaded: its frames checked and
        kept; after the clip's last one, the clip prepared and ``avatar_ready`` answered (else
        None). ``ProtocolError`` (``TOO_BIG``) once the clip's bytes pass ``max_video_bytes``."""
        upload = self.upload
        if upload is None:
            raise p.ProtocolError("avatar_frames without a video avatar header before them")
        upload.bytes += len(payload)
        if upload.bytes > self.limits.max_video_bytes:
            raise p.ProtocolError(f"video avatar over {self.limits.max_video_bytes} bytes", p.Close.TOO_BIG)
        upload.frames.extend(p.avatar_frames(header, payload, len(upload.frames), upload.video.frames))
        if len(upload.frames) < upload.video.frames:
            return None
        t0 = time.perf_counter()
        self.upload = None
        clip = avatar_video_from_jpeg_crops(upload.frames, upload.video.eye_ratios, upload.video.lip_ratios,
                                            upload.video.fps, upload.kind)
        avatar = prepare_video(clip, self.backends.get(upload.kind))
        return self._use(avatar, t0, faces=1, frames=clip.num_frames)

    def _use(self, avatar: PreparedAvatar, t0: float, *, faces: int, frames: int | None) -> dict[str, Any]:
        """Animate ``avatar`` from the next frame on (on a new animator when its kind changed) and
        say so (``avatar_ready``)."""
        kind = avatar.kind
        backend = self.backends.get(kind)
        if self.animator is None or kind != self.kind:
            if self.animator is not None:
                self.animator.close()
            # the bare crop goes back: the client pastes, composites and mirrors it
            self.animator = Animator(backend, self.settings, avatar, crop_only=True)
        else:
            self.animator.set_avatar(avatar)
        self.kind = kind
        self.faces, self.video_frames = faces, frames
        ready: dict[str, Any] = {"type": "avatar_ready", "kind": kind, "faces": faces,
                                 "ms": round((time.perf_counter() - t0) * 1000, 2)}
        if frames is not None:
            ready["frames"] = frames
        return ready

    def apply_settings(self, message: dict[str, Any]) -> None:
        revision = p.integer(message, "revision")
        changes = p.settings_from_wire(message.get("values"))
        try:
            self.settings.update(**changes)
        except (TypeError, ValueError) as e:
            raise p.ProtocolError(f"settings: {e}") from None
        self.revision = revision

    def calibrate(self) -> None:
        if self.animator is not None:
            self.animator.calibrate()

    def frame(self, header: dict[str, Any], payload: bytes, receipt: str = "") -> bytes:
        """A ``frame`` message -> the binary ``result`` message, carrying ``receipt``."""
        if self.upload is not None:
            raise p.ProtocolError("frame before the video avatar's last avatar_frames")
        if self.animator is None:
            raise p.ProtocolError("frame before avatar")
        seq = p.integer(header, "seq")
        t = p.number(header, "t", *p.TIME_RANGE_S)
        source = p.frame_source(header, self.video_frames)
        has_face = header.get("face")
        if not isinstance(has_face, bool):
            raise p.ProtocolError("frame.face: expected true or false")
        t0 = time.perf_counter()
        face = None
        if has_face:
            crop = p.decode_image(payload, self.frame_format, p.DRIVING_SHAPE)
            r = p.ratios(header, "ratios", 3)
            face = DrivingFace(network_input=crop, landmarks=np.zeros((0, 2), np.float32), transform=_NO_TRANSFORM,
                               eye_ratios=r[None, :2], lip_ratio=r[None, 2:])
        elif payload:
            raise p.ProtocolError("frame: a faceless frame carries no image")
        result: dict[str, Any] = {"type": "result", "seq": seq, "revision": self.revision, "receipt": receipt}
        t1 = time.perf_counter()
        out = self.animator.process(face, t, source_index=source)
        t2 = time.perf_counter()
        image = b""
        if out.rendered and out.image.ndim == 4:           # a group's crops, back to back
            crops = [p.encode_image(crop, self.frame_format, self.quality) for crop in out.image]
            result["sizes"] = [len(c) for c in crops]
            image = b"".join(crops)
        elif out.rendered:
            image = p.encode_image(out.image, self.frame_format, self.quality)
        t3 = time.perf_counter()
        result.update(status=str(out.status), rendered=out.rendered, reference=self.animator.has_reference,
                      ms={"decode": _ms(t0, t1), "animate": _ms(t1, t2), "encode": _ms(t2, t3)})
        return p.pack(result, image)

    def close(self) -> None:
        self.upload = None
        if self.animator is not None:
            self.animator.close()
            self.animator = None


@dataclass
class _VideoUpload:
    """A video avatar's frames as they come: its header's fields and the JPEG crops so far."""

    kind: AvatarKind
    video: p.VideoFields
    frames: list[bytes] = field(default_factory=list)
    bytes: int = 0


class FrameGate:
    """Which of a session's frames are answered, and when: the proof of reading (``protocol``'s
    receipts: the results sent and not yet acknowledged) and the frame-rate cap. Called from the
    event loop only (a few microseconds a frame).

    A frame is answered when fewer than ``max_unread`` results are unacknowledged. A client that
    has read every answer (one frame at a time, as ours sends) and comes sooner than ``max_fps``
    allows waits for its turn (one frame of slack, so an uneven stream under the cap is not
    slowed); that wait is bounded, since such a client waits for its answer, and its own queue
    drops its oldest frame meanwhile, as for a slow device. A frame sent before the last answer was
    read and over the cap is dropped rather than kept waiting, so a client that pipelines faster
    than the cap builds no queue here. Every dropped frame counts: more than ``drop_budget``
    within a second end the session (``Close.NOT_READING``)."""

    def __init__(self, limits: p.Limits) -> None:
        self.max_unread = limits.max_unread
        self.interval = 1.0 / limits.max_fps
        self._next_frame_at = 0.0
        self._unread: deque[str] = deque()
        self._drops: deque[float] = deque(maxlen=limits.drop_budget + 1)     # times of the latest drops

    @property
    def unread(self) -> int:
        return len(self._unread)

    def admit(self, header: dict[str, Any], now: float) -> float | None:
        """A ``frame`` header arrived at ``now`` (seconds): acknowledge its receipt, then the
        seconds to wait before answering it, or None to drop it unanswered (before its image is
        decoded). ``ProtocolError(NOT_READING)`` once more than a second's worth have been
        dropped within a second."""
        presented = p.receipt(header)
        if presented is not None and presented in self._unread:
            while self._unread.popleft() != presented:        # acknowledges every earlier result too
                pass
        if len(self._unread) >= self.max_unread:
            return self._drop(now)
        wait = max(0.0, self._next_frame_at - self.interval - now)
        if wait > 0 and self._unread:                         # pipelined and over the cap
            return self._drop(now)
        self._next_frame_at = max(now + wait, self._next_frame_at) + self.interval
        return wait

    def issue(self) -> str:
        """A fresh receipt for the next result, counted unread until the client acknowledges it."""
        receipt = secrets.token_hex(8)
        self._unread.append(receipt)
        return receipt

    def _drop(self, now: float) -> None:
        self._drops.append(now)
        if len(self._drops) == self._drops.maxlen and now - self._drops[0] <= 1.0:
            raise p.ProtocolError("frames sent without reading the answers", p.Close.NOT_READING)
        return None


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000, 3)
