"""Animating on a render server: ``RemoteAnimator`` stands in for the local ``Animator`` in the
live loop (same ``process``, ``set_avatar``, ``calibrate``, ``close``), with the animation itself
done by ``python main.py serve`` on another machine. Capture, tracking, paste-back, background,
preview and virtual camera stay here; the client needs no weights and no networks.

The avatar goes once per session (and on each change) as its 512 x 512 crop with its kind
(``human`` or ``animal``: the weight set the server animates it with), face box and eye/lip ratios;
a group photo as its K faces' crops, boxes and ratios (all animated in one batch, the K crops
coming back per frame and pasted in turn by the finisher); a video avatar (``AvatarFace.video``) as
its clip's per-frame 512 crops, JPEG, made once when the avatar is adopted (``AvatarUpload``) and
sent at each (re)connection. Per frame it sends the 256 x 256 driving crop (the camera image never
leaves this machine), its eye/lip ratios and capture time (with the receipt of the last answer
read: the protocol's proof of reading), for a video avatar the clip frame s(i) to render from (the
ping-pong of this client's own output clock, as the local animator plays it), and waits for the
animated crop(s); a video's crop is pasted into the clip's frame s(i). When the server is gone,
``process`` returns at once with the last output (or the still avatar, never the camera; a video
avatar's clip frame s(i)) and a "reconnecting" status, while a background thread reconnects with
backoff and uploads the avatar and settings again. A slow server slows the animation stage, whose
drop-oldest queue keeps the latency from building up, as a slow local device does."""
from __future__ import annotations

import dataclasses
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from ..animation.frames import AnimatedFrame, Status
from ..avatar.face import AvatarFace
from ..avatar.framing import MAX_GROUP_FACES
from ..avatar.video import pingpong_index
from ..compositing.finishing import OutputFinisher
from ..face.driving import DrivingFace
from ..imaging.segmentation import MediaPipeSelfieSegmentation, PersonSegmenter
from ..settings import AnimationSettings, LiveSettings
from . import protocol as p

log = logging.getLogger(__name__)

RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)    # backoff between attempts; the last one repeats
VIDEO_CROP_QUALITY = 90             # a video avatar's uploaded crops (JPEG): ~50 KB a frame
FRAMES_PER_MESSAGE = 100            # a video's frames per avatar_frames message at most (its header's sizes)


class HideAuthorization(logging.Filter):
    """websockets logs the handshake's request headers at DEBUG: the Authorization header's value
    (the token) is replaced before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() == "authorization":
            record.args = (args[0], "[hidden]")
        return True


_websocket_log = logging.getLogger("websockets.client")
_websocket_log.addFilter(HideAuthorization())


class RemoteError(ValueError):
    """The render server cannot be used (unreachable, wrong token, another protocol version);
    the message is one line for the user."""


class RemoteAuthError(RemoteError):
    """The server refused the token."""


@dataclass(frozen=True)
class RemoteServer:
    """Where and how to reach a render server. ``frame_format``: how crops travel (``jpeg``, the
    default, or lossless ``raw``: 196 KB up and 786 KB down per frame). ``frame_timeout_s``: the
    longest wait for one frame (a CPU server takes seconds); a server that stops answering pings is
    noticed within ``ping_timeout_s`` anyway."""

    url: str
    token: str | None = field(default=None, repr=False)
    frame_format: str = "jpeg"
    quality: int = 90
    connect_timeout_s: float = 10.0
    frame_timeout_s: float = 60.0
    ping_interval_s: float = 2.0
    ping_timeout_s: float = 6.0
    ca_file: str | None = None          # wss:// with a certificate the system does not trust (self-signed)

    @classmethod
    def parse(cls, url: str, token: str | None = None, **options: Any) -> RemoteServer:
        """``ws://HOST:PORT`` or ``wss://HOST:PORT`` (the session path is added when missing)."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise RemoteError(f"--remote: expected ws://HOST:PORT or wss://HOST:PORT, got {url!r}")
        path = parts.path if parts.path not in ("", "/") else p.SESSION_PATH
        options.setdefault("frame_format", "jpeg")
        if options["frame_format"] not in p.FRAME_FORMATS:
            raise RemoteError(f"frame format: expected one of {', '.join(p.FRAME_FORMATS)}")
        return cls(urlunsplit((parts.scheme, parts.netloc, path, "", "")), token or None, **options)


@dataclass(frozen=True)
class RemoteFrame:
    """The server's answer to one frame."""

    status: str                         # a ``Status`` value
    rendered: bool
    crop: np.ndarray | None             # 512 x 512 x 3 BGR when rendered (a group: K x 512 x 512 x 3)


@dataclass(frozen=True)
class AvatarUpload:
    """An avatar face as it goes to the server, encoded once: the ``avatar`` message's ``header`` and
    ``payload`` (a still's crop, a group's K crops, PNG), and for a video avatar its per-frame 512
    crops as JPEG (``frames``; the header describes the clip, the payload is empty)."""

    face: AvatarFace
    header: dict[str, Any]
    payload: bytes
    frames: tuple[bytes, ...] = ()

    @property
    def faces(self) -> int:
        """Crops per result: the animated faces."""
        return len(self.face.group)


def avatar_upload(face: AvatarFace, *, max_video_bytes: int = p.Limits().max_video_bytes) -> AvatarUpload:
    """What ``face`` uploads as (see ``AvatarUpload``). A video's crops are re-made from its kept
    frames and encoded here (a few ms a frame: call it off the animation thread, as the renderer's
    ``adopt`` does); ``ValueError`` when they pass ``max_video_bytes`` (the protocol's default
    limit). An avatar without landmarks sends null ratios."""
    video = face.video
    if video is not None:
        frames = tuple(p.encode_image(video.crop(i), "jpeg", VIDEO_CROP_QUALITY) for i in range(video.num_frames))
        total = sum(len(f) for f in frames)
        if total > max_video_bytes:
            raise ValueError(f"video avatar: its {video.num_frames} crops are {total / 2**20:.1f} MiB, over the render "
                             f"server's {max_video_bytes / 2**20:.0f} MiB; use a shorter clip")
        if video.num_frames > p.MAX_VIDEO_FRAMES:
            raise ValueError(f"video avatar: {video.num_frames} frames, a render server takes {p.MAX_VIDEO_FRAMES}")
        header = p.video_avatar_header(face.kind, face.box, video.fps, video.num_frames,
                                       *_both_or_none(video.eye_ratios, video.lip_ratios))
        return AvatarUpload(face, header, b"", frames)
    if not face.others:
        header = p.avatar_header("png", face.kind, face.box, *_both_or_none(face.eye_ratios, face.lip_ratio))
        return AvatarUpload(face, header, p.encode_image(face.crop, "png"))
    crops = [p.encode_image(f.crop, "png") for f in face.group]
    fields = [p.FaceFields(f.box, *_both_or_none(f.eye_ratios, f.lip_ratio)) for f in face.group]
    header = p.group_avatar_header("png", face.kind, fields, [len(c) for c in crops])
    return AvatarUpload(face, header, b"".join(crops))


def _both_or_none(eye: np.ndarray | None, lip: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    # an avatar without landmarks (a boxed cartoon or animal) has no ratios: they go as null
    return (None, None) if eye is None or lip is None else (eye, lip)


class ServerLink:
    """One WebSocket session with the server at a time, opened again in a background thread after
    it is lost. ``animate`` is called from one thread (the animation stage); ``set_avatar`` from
    the same one."""

    def __init__(self, server: RemoteServer, face: AvatarFace | AvatarUpload, settings: AnimationSettings) -> None:
        self.server = server
        self._avatar = face if isinstance(face, AvatarUpload) else avatar_upload(face)
        self._limits = p.Limits()           # the session's, from its welcome
        self._settings = settings
        self._revision = 0
        self._ws: ClientConnection | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reconnecting: threading.Thread | None = None
        self._calibrate = False
        self._seq = 0
        self._receipt: str | None = None    # of the last result read, sent with the next frame
        self.reference = False          # the server holds a neutral reference (as of the last answer)
        self.connects = 0               # sessions opened (reconnections included)

    def connect(self) -> None:
        """Open the session now; ``RemoteError`` with one line when it cannot be."""
        ws = self._open()
        with self._lock:
            self._ws = ws

    def set_avatar(self, face: AvatarFace | AvatarUpload) -> None:
        """Use ``face`` from now on: uploaded now when connected, else on reconnection."""
        avatar = self._avatar = face if isinstance(face, AvatarUpload) else avatar_upload(face)
        ws = self._ws
        if ws is not None:
            try:
                self._upload_avatar(ws, avatar)
            except (ConnectionClosed, OSError, TimeoutError, p.ProtocolError) as e:
                self._lost(ws, e)

    def request_calibration(self) -> None:
        self._calibrate = True

    def animate(self, face: DrivingFace | None, t: float, s: AnimationSettings,
                source: int | None = None) -> RemoteFrame | None:
        """One frame through the server (``source``: a video avatar's clip frame to render from);
        None when there is no connection (one is being made)."""
        ws = self._ws
        if ws is None:
            self._reconnect_in_background()
            return None
        try:
            if s is not self._settings:
                self._send_settings(ws, s)
            if self._calibrate:
                self._calibrate = False
                ws.send(p.text({"type": "calibrate"}))
            self._seq += 1
            header: dict[str, Any] = {"type": "frame", "seq": self._seq, "t": t, "face": face is not None}
            if self._receipt is not None:
                header["receipt"] = self._receipt
            if source is not None:
                header["source"] = source
            payload = b""
            if face is not None:
                header["ratios"] = face.open_ratios.tolist()
                payload = p.encode_image(face.network_input, self.server.frame_format, self.server.quality)
            ws.send(p.pack(header, payload))
            reply, body = p.unpack(_binary(ws.recv(timeout=self.server.frame_timeout_s)))
            if reply.get("type") != "result" or reply.get("seq") != self._seq:
                raise p.ProtocolError("answer out of order")
            self._receipt = p.receipt(reply)
            rendered = reply.get("rendered") is True
            crop = p.result_crops(reply, body, self.server.frame_format, self._avatar.faces) if rendered else None
            self.reference = reply.get("reference") is True
            return RemoteFrame(str(reply.get("status")), rendered, crop)
        except (ConnectionClosed, OSError, TimeoutError, p.ProtocolError) as e:
            self._lost(ws, e)
            return None

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()
        if self._reconnecting is not None:
            self._reconnecting.join(timeout=2.0)

    # -- internals -----------------------------------------------------------------------------
    def _open(self) -> ClientConnection:
        """A new session: handshake, hello, avatar, settings."""
        s = self.server
        self._receipt = None
        headers = {"Authorization": f"Bearer {s.token}"} if s.token else None
        context = None
        if s.url.startswith("wss:"):
            context = ssl.create_default_context(cafile=s.ca_file)
        try:
            ws = connect(s.url, additional_headers=headers, open_timeout=s.connect_timeout_s, close_timeout=1.0,
                         ping_interval=s.ping_interval_s, ping_timeout=s.ping_timeout_s, ssl=context,
                         max_size=(MAX_GROUP_FACES + 1) * int(np.prod(p.CROP_SHAPE)) + p.MAX_HEADER_BYTES,
                         compression=None,
                         user_agent_header="AvatarCam", logger=_websocket_log,
                         legacy=True)   # the link owns the connection's lifetime
        except InvalidStatus as e:
            code = e.response.status_code
            if code in (401, 403):
                raise RemoteAuthError(f"the render server at {s.url} refused the token (HTTP {code}); give the "
                                      "token the server was started with: its --token/--token-file, or on a Ray "
                                      "cluster the AVATARCAM_TOKEN (or token_file) of its nodes") from None
            raise RemoteError(f"the render server at {s.url} answered HTTP {code}; "
                              "is it an AvatarCam server?") from None
        except (InvalidURI, InvalidHandshake) as e:
            raise RemoteError(f"cannot talk to the render server at {s.url}: {e}") from None
        except ssl.SSLCertVerificationError as e:
            raise RemoteError(f"the render server at {s.url} has a certificate this machine does not trust "
                              f"({e.verify_message}); for a self-signed one give it with --remote-ca PEM") from None
        except ssl.SSLError as e:
            raise RemoteError(f"TLS with the render server at {s.url} failed: {e.reason or e}") from None
        except (OSError, TimeoutError) as e:
            raise RemoteError(f"cannot reach the render server at {s.url}: {e.strerror or e or 'timed out'}") from None
        try:
            ws.send(p.text({"type": "hello", "version": p.VERSION, "format": s.frame_format, "quality": s.quality}))
            welcome = p.parse_text(_text(ws.recv(timeout=s.connect_timeout_s)))
            if welcome.get("type") != "welcome":
                raise p.ProtocolError("expected welcome")
            self._limits = _limits(welcome.get("limits"))
            self._upload_avatar(ws, self._avatar)
            self._send_settings(ws, self._settings)
        except ConnectionClosed as e:
            ws.close()
            raise RemoteError(f"the render server at {s.url} ended the session: {_closed_reason(e)}") from None
        except (OSError, TimeoutError, p.ProtocolError) as e:
            ws.close()
            raise RemoteError(f"the render server at {s.url} did not start a session: {e}") from None
        self.connects += 1
        log.info("rendering on %s", s.url)
        return ws

    def _upload_avatar(self, ws: ClientConnection, avatar: AvatarUpload) -> None:
        """The avatar message (a video's frames after it, in messages under the session's limit)
        and its ``avatar_ready``."""
        ws.send(p.pack(avatar.header, avatar.payload))
        if avatar.frames:
            if sum(len(f) for f in avatar.frames) > self._limits.max_video_bytes:
                raise p.ProtocolError(f"the video avatar is over this server's {self._limits.max_video_bytes} bytes")
            for start, chunk in _chunks(avatar.frames, self._limits.max_avatar_bytes - p.MAX_HEADER_BYTES - 4):
                ws.send(p.pack(p.avatar_frames_header(start, [len(f) for f in chunk]), b"".join(chunk)))
        ready = p.parse_text(_text(ws.recv(timeout=self.server.frame_timeout_s)))
        if ready.get("type") != "avatar_ready":
            raise p.ProtocolError("expected avatar_ready")

    def _send_settings(self, ws: ClientConnection, s: AnimationSettings) -> None:
        self._revision += 1
        ws.send(p.text({"type": "settings", "revision": self._revision, "values": p.settings_to_wire(s.motion)}))
        self._settings = s

    def _lost(self, ws: ClientConnection, error: BaseException) -> None:
        with self._lock:
            if self._ws is ws:
                self._ws = None
        ws.close()
        reason = _closed_reason(error) if isinstance(error, ConnectionClosed) else str(error) or type(error).__name__
        log.warning("render server connection lost (%s); reconnecting", reason)
        self._reconnect_in_background()

    def _reconnect_in_background(self) -> None:
        with self._lock:
            if self._closed.is_set() or (self._reconnecting is not None and self._reconnecting.is_alive()):
                return
            self._reconnecting = threading.Thread(target=self._reconnect, name="render-server-reconnect", daemon=True)
            self._reconnecting.start()

    def _reconnect(self) -> None:
        attempt = 0
        while not self._closed.wait(RECONNECT_DELAYS_S[min(attempt, len(RECONNECT_DELAYS_S) - 1)]):
            attempt += 1
            try:
                ws = self._open()
            except RemoteError as e:
                log.log(logging.WARNING if attempt == 1 else logging.DEBUG, "reconnecting: %s", e)
                continue
            with self._lock:
                if self._closed.is_set():
                    ws.close()
                    return
                self._ws = ws
            log.info("render server is back after %d attempt(s)", attempt)
            return


class RemoteAvatar:
    """What the window reads of an avatar (``.face``), for one animated on a server, with what it
    uploads as (``upload``, encoded here: a video's crops take seconds to make)."""

    def __init__(self, face: AvatarFace) -> None:
        self.face = face
        self.upload = avatar_upload(face)


class RemoteAnimator:
    """The ``Animator`` interface, animated on a render server. ``connect`` before the first frame
    (``RemoteError`` when the server cannot be used); ``close`` at the end. The server's crops are
    finished here by the same ``OutputFinisher`` as the local animator's CPU path."""

    def __init__(self, server: RemoteServer, settings: LiveSettings, face: AvatarFace | RemoteAvatar, *,
                 segmenter: Callable[[], PersonSegmenter] = MediaPipeSelfieSegmentation) -> None:
        self.settings = settings
        self.avatar = face if isinstance(face, RemoteAvatar) else RemoteAvatar(face)
        self.link = ServerLink(server, self.avatar.upload, settings.snapshot())
        self.finisher = OutputFinisher(self.avatar.face, segmenter)
        self._lock = threading.Lock()
        self._pending: RemoteAvatar | None = None
        self._clip_start: float | None = None      # t of a video avatar's first frame (its clock's zero)
        self._status = Status.NO_FACE_YET
        self._applied: tuple[AnimationSettings, str, AnimationSettings] | None = None

    def connect(self) -> None:
        self.link.connect()

    # -- control (any thread) ------------------------------------------------------------------
    def set_avatar(self, avatar: AvatarFace | RemoteAvatar) -> None:
        """Animate ``avatar`` from the next frame on (a bare face is encoded for upload here)."""
        pending = avatar if isinstance(avatar, RemoteAvatar) else RemoteAvatar(avatar)
        with self._lock:
            self._pending = pending

    def calibrate(self) -> None:
        self.link.request_calibration()

    @property
    def has_reference(self) -> bool:
        return self.link.reference

    def close(self) -> None:
        self.link.close()
        self.finisher.close()

    # -- per frame (inference thread) ----------------------------------------------------------
    def process(self, face: DrivingFace | None, t: float) -> AnimatedFrame:
        s = self.settings.snapshot()
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.avatar = pending
            self._clip_start = None
            self.finisher.reset(pending.face)
            self.link.set_avatar(pending.upload)
        source = self._source_frame(t)
        out = self._output_settings(s)
        self.finisher.begin(out)
        answer = self.link.animate(face, t, s, source)
        s = out                             # the rest is finishing: the output as it applies here
        # a video avatar shows its clip's own frame s(i) whenever nothing is rendered (never the camera)
        video = source is not None
        if answer is None:
            return AnimatedFrame(self.finisher.still(s) if video else self.finisher.held(s), Status.SERVER_LOST,
                                 rendered=False)
        if answer.status in _SERVER_STATUSES:
            self._status = Status(answer.status)
        if answer.rendered and answer.crop is not None:
            return AnimatedFrame(self.finisher.finish(answer.crop, s), self._status, rendered=True)
        if self._status == Status.NO_FACE_YET or video:
            return AnimatedFrame(self.finisher.still(s), self._status, rendered=False)
        # the server showed a kept frame (holding, neutral, skipped): so does the client, from its last crop
        return AnimatedFrame(self.finisher.held(s), self._status, rendered=False)

    def _source_frame(self, t: float) -> int | None:
        """A video avatar's clip frame for ``t``: the ping-pong on this client's output clock (from
        the avatar's first frame, as the local animator plays it), made the finisher's face (its
        image is what the crop is pasted into); None for a still avatar."""
        video = self.avatar.face.video
        if video is None:
            return None
        if self._clip_start is None:
            self._clip_start = t
        index = pingpong_index(t - self._clip_start, video.fps, video.num_frames)
        self.finisher.set_face(video.face(index))
        return index

    def _output_settings(self, s: AnimationSettings) -> AnimationSettings:
        """``s`` as it applies to the current avatar's output (an animal's paste-back), the same
        object while neither changes."""
        kind = self.avatar.face.kind
        if self._applied is None or self._applied[0] is not s or self._applied[1] != kind:
            self._applied = (s, kind, s.for_kind(kind))
        return self._applied[2]


_SERVER_STATUSES = {str(s) for s in Status}


def _limits(values: Any) -> p.Limits:
    """The welcome's ``limits`` (the defaults for any not given, or not a number)."""
    default = p.Limits()
    if not isinstance(values, dict):
        return default
    sizes = {name: values[name] for name in ("max_avatar_bytes", "max_video_bytes")
             if isinstance(values.get(name), int) and values[name] > p.MAX_HEADER_BYTES * 2}
    return dataclasses.replace(default, **sizes)


def _chunks(frames: tuple[bytes, ...], max_bytes: int) -> list[tuple[int, tuple[bytes, ...]]]:
    """``frames`` cut into runs of at most ``max_bytes`` (and ``FRAMES_PER_MESSAGE`` frames; a frame
    over ``max_bytes`` alone), each with its first frame's index."""
    runs: list[tuple[int, tuple[bytes, ...]]] = []
    start, size = 0, 0
    for i, frame in enumerate(frames):
        if i > start and (size + len(frame) > max_bytes or i - start >= FRAMES_PER_MESSAGE):
            runs.append((start, frames[start:i]))
            start, size = i, 0
        size += len(frame)
    runs.append((start, frames[start:]))
    return runs


def _binary(message: str | bytes) -> bytes:
    if not isinstance(message, bytes):
        raise p.ProtocolError("expected a binary message")
    return message


def _text(message: str | bytes) -> str:
    if not isinstance(message, str):
        raise p.ProtocolError("expected a text message")
    return message


def _closed_reason(e: ConnectionClosed) -> str:
    close = e.rcvd or e.sent
    if close is None:
        return "connection dropped"
    return f"{close.reason or 'closed'} (code {close.code})"
