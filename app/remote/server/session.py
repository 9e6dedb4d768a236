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

``FrameGate`` decides which of a session's frames are answered, and when (the proof of reading and
the frame-rate cap)."""
from __future__ import annotations

import secrets
import time
from collections import deque
from typing import Any

import numpy as np
import torch

from ...animation.animator import Animator
from ...avatar.face import avatar_face_from_crop
from ...avatar.framing import AvatarKind
from ...avatar.prepared import prepare_avatar
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

    # -- messages (worker thread) --------------------------------------------------------------
    def set_avatar(self, header: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """An ``avatar`` message: prepare it (F and M of its kind's set, loaded first when no
        session has needed it yet) and answer ``avatar_ready``. ``WeightSetError`` when the set
        cannot be loaded here."""
        t0 = time.perf_counter()
        fmt = p.choice(header, "format", p.AVATAR_FORMATS)
        kind = p.avatar_kind(header)
        box = p.avatar_box(header)
        eye_ratios, lip_ratio = p.avatar_ratios(header)
        crop = p.decode_image(payload, fmt, p.CROP_SHAPE)
        face = avatar_face_from_crop(crop, eye_ratios, lip_ratio, kind=kind, box=box)
        backend = self.backends.get(kind)
        with torch.inference_mode():
            avatar = prepare_avatar(face, backend)
        if self.animator is None or kind != self.kind:
            if self.animator is not None:
                self.animator.close()
            # the bare crop goes back: the client pastes, composites and mirrors it
            self.animator = Animator(backend, self.settings, avatar, crop_only=True)
        else:
            self.animator.set_avatar(avatar)
        self.kind = kind
        return {"type": "avatar_ready", "kind": kind, "ms": round((time.perf_counter() - t0) * 1000, 2)}

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
        if self.animator is None:
            raise p.ProtocolError("frame before avatar")
        seq = p.integer(header, "seq")
        t = p.number(header, "t", *p.TIME_RANGE_S)
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
        out = self.animator.process(face, t)
        t2 = time.perf_counter()
        image = p.encode_image(out.image, self.frame_format, self.quality) if out.rendered else b""
        t3 = time.perf_counter()
        result.update(status=str(out.status), rendered=out.rendered, reference=self.animator.has_reference,
                      ms={"decode": _ms(t0, t1), "animate": _ms(t1, t2), "encode": _ms(t2, t3)})
        return p.pack(result, image)

    def close(self) -> None:
        if self.animator is not None:
            self.animator.close()
            self.animator = None


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
