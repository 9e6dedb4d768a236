"""The render server's wire protocol, version 4: what a client and a server say to each other over
one WebSocket per live session at ``/v1/session`` (the path is the API's version, the hello's
``version`` the protocol's). Shared by both sides; imports neither Ray nor a WebSocket library.

Control messages are JSON text. Images travel in binary messages: a 4-byte big-endian header
length, a JSON header, then the image bytes (JPEG, PNG or raw H x W x 3 uint8 BGR; several images
back to back where the header's ``sizes`` gives each one's bytes).

Client -> server, in this order at the start: ``hello`` (text), ``avatar`` (binary: the avatar's
512 x 512 crop(s) as PNG or raw, its kind, face box(es) and eye/lip ratios; for a video avatar the
clip's description, its crops following in ``avatar_frames``), ``settings`` (text); then ``frame``
(binary: the 256 x 256 driving crop, its eye/lip ratios and capture time, and for a video avatar
the clip frame to show; a faceless frame has no image) any number of times, with ``settings``,
``calibrate`` and a new ``avatar`` in between.
Server -> client: ``welcome`` after ``hello`` (with the session's ``Limits``), ``avatar_ready``
after each avatar (a video's: after its last ``avatar_frames``), one ``result`` per ``frame``
(binary: status, whether it rendered, and the animated 512 x 512 crop(s) when it did).
Anything else ends the session with one of the ``Close`` codes and a one-line reason.

The avatar (since version 3): ``kind`` is ``human`` or ``animal`` (``AVATAR_KINDS``: the weight
set that animates it); ``box`` is ``[x, y, size]``, the square of the avatar file (its pixels) that
became the crop, or null (found by face detection); it is informational, the client has cropped
already. ``eye_ratios`` (2 numbers) and ``lip_ratio`` (1) are both given or both null: an avatar
without landmarks (a cartoon or an animal in a box) has no ratios. A server loads a kind's weight
set when a session first needs it.

Group photos (new in version 4): an ``avatar`` with ``faces: [{box, eye_ratios, lip_ratio}, ...]``
(each face's fields checked as a single avatar's) and ``sizes`` (each crop's bytes) carries K = 1..4
crops back to back, in the faces' order; one face may still come as above (the fields at the top,
one crop). The server animates the K faces as one batch, and each rendered ``result`` carries K
crops back to back with their ``sizes``, in the same order.

Video avatars (new in version 4): an ``avatar`` with ``video: {fps, frames: N}`` (fps in
``VIDEO_FPS_RANGE``, N in 1..``MAX_VIDEO_FRAMES``), ``format: "jpeg"`` and ``ratios`` (N x
``[eye_l, eye_r, lip]``, or null without landmarks) and no payload, then the N per-frame 512 x 512
crops as JPEG in one or more ``avatar_frames`` messages (each ``start``: its first frame's index,
the frames in order without gaps; ``sizes``: each frame's bytes; each message under
``Limits.max_avatar_bytes``, all of them under ``Limits.max_video_bytes``), uploaded once per
session; ``avatar_ready`` follows the last. Every frame is checked as an avatar crop. Each
``frame`` then names ``source``, the clip frame i (0 <= i < N) its crop is rendered from (required
for a video avatar, refused for a still); its ``result`` is one crop.

Proof of reading (since version 2): each ``result`` carries a ``receipt``, a fresh random string,
and each ``frame`` after the first carries the ``receipt`` of the last result the client has read
(which acknowledges every earlier result too; a receipt the server does not hold acknowledges
nothing). A frame that arrives while ``Limits.max_unread`` results are unacknowledged is dropped
unanswered, before its image is decoded; more than ``Limits.drop_budget`` dropped frames within a
second end the session with ``Close.NOT_READING``. The server cannot see whether a client reads
(its answers would pile up in memory); this bounds them. A client that sends a frame and waits
for its answer, as ours does, never has a frame dropped.

Numbers are JSON numbers; one that is not finite as a float (``1e400``, an integer hundreds of
digits long) or out of its field's range is a protocol error. A frame's ``t`` is in seconds on the
client's monotonic clock, within ``TIME_RANGE_S``. A binary message's JSON header is at most
``MAX_HEADER_BYTES``, an ``avatar``'s ``MAX_AVATAR_HEADER_BYTES`` (a video's per-frame ratios).
"""
from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, Literal, TypeGuard, get_args, get_origin

import cv2
import numpy as np

from ..avatar.framing import AVATAR_KINDS, MAX_GROUP_FACES, AvatarBox, AvatarKind
from ..settings import MotionSettings

VERSION = 4
SESSION_PATH = "/v1/session"       # the API's version: kept while the protocol changes (the hello says which)
HEALTH_PATH = "/v1/health"

DRIVING_SHAPE = (256, 256, 3)      # the frame's driving crop, BGR uint8
CROP_SHAPE = (512, 512, 3)         # the avatar's crop and the animated crop, BGR uint8
FRAME_FORMATS = ("jpeg", "raw")    # driving crops and animated crops
AVATAR_FORMATS = ("png", "raw")    # the avatar crop goes lossless, once
VIDEO_FORMATS = ("jpeg",)          # a video avatar's per-frame crops: hundreds of them
MAX_VIDEO_FRAMES = 600             # a video avatar's frames at most (10 s at 60 fps)
VIDEO_FPS_RANGE = (1.0, 120.0)

_HEADER_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 4096
MAX_AVATAR_HEADER_BYTES = 64 * 1024    # an avatar's header: a video's N x 3 ratios
TIME_RANGE_S = (0.0, 1e9)          # a frame's t: a monotonic clock's seconds (1e9 s: 31 years of uptime)
MAX_RECEIPT_CHARS = 64
MAX_JPEG_SCANS = 32                # baseline JPEG has 1 scan, a progressive one about 10
BOX_RANGE = 1e6                    # an avatar box's corner and side, in pixels, at most this far out


class Close(IntEnum):
    """WebSocket close codes the server ends a session with (4xxx: this protocol's own)."""

    NORMAL = 1000
    GOING_AWAY = 1001          # the server is stopping (sent to every open session before it does)
    POLICY = 1008              # a wrong or missing token (refused before the handshake completes)
    TOO_BIG = 1009             # a message over its size limit
    INTERNAL = 1011            # a bug on the server: this session ends, the server goes on
    TRY_LATER = 1013           # the server holds its maximum number of sessions
    MALFORMED = 4400           # a message that does not follow this protocol
    IDLE = 4408                # no frame or avatar for the idle timeout
    VERSION = 4426             # a protocol version the server does not speak
    NOT_READING = 4429         # frames sent without reading the answers (see the receipts above)


class ProtocolError(ValueError):
    """A message that breaks the protocol; ``code`` is the close code to end the session with."""

    def __init__(self, message: str, code: Close = Close.MALFORMED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Limits:
    """What one session may send. Sizes in bytes; ``max_fps``: frames rendered per second at most
    (a frame that comes sooner waits for its turn); ``max_unread``: results sent and not yet
    acknowledged by a receipt, beyond which frames are dropped unanswered."""

    max_text_bytes: int = 16 * 1024
    max_frame_bytes: int = MAX_HEADER_BYTES + 4 + int(np.prod(DRIVING_SHAPE))
    max_avatar_bytes: int = 8 * 1024 * 1024      # one avatar or avatar_frames message
    max_video_bytes: int = 64 * 1024 * 1024      # a video avatar's frames, all messages together
    max_fps: float = 120.0
    max_unread: int = 2

    @property
    def drop_budget(self) -> int:
        """Dropped frames a session may have within a second before it is closed: a second's worth."""
        return max(1, math.ceil(self.max_fps))

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


# -- envelopes ---------------------------------------------------------------------------------
def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """A binary message: header length, JSON header, payload."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER_LENGTH.pack(len(head)) + head + payload


def unpack(message: bytes) -> tuple[dict[str, Any], bytes]:
    """A binary message -> (header, payload); ``ProtocolError`` if it is not one (a header over
    ``MAX_HEADER_BYTES`` is one only for an ``avatar``, up to ``MAX_AVATAR_HEADER_BYTES``)."""
    if len(message) < _HEADER_LENGTH.size:
        raise ProtocolError("binary message shorter than its header length")
    (length,) = _HEADER_LENGTH.unpack_from(message)
    if length > MAX_AVATAR_HEADER_BYTES or _HEADER_LENGTH.size + length > len(message):
        raise ProtocolError("binary message header length out of range")
    header = _json_object(message[_HEADER_LENGTH.size:_HEADER_LENGTH.size + length])
    if length > MAX_HEADER_BYTES and header["type"] != "avatar":
        raise ProtocolError("binary message header length out of range")
    return header, message[_HEADER_LENGTH.size + length:]


def text(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def parse_text(message: str) -> dict[str, Any]:
    return _json_object(message)


def _json_object(raw: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):      # RecursionError: hostile nesting
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ProtocolError("message is not a JSON object with a type")
    return value


# -- fields ------------------------------------------------------------------------------------
def _finite_number(value: Any) -> TypeGuard[int | float]:
    """A JSON number that is a finite float: not a bool, not NaN or infinite, not an integer
    beyond float range (which ``math.isfinite`` would raise ``OverflowError`` on)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_FLOAT_MAX <= value <= _FLOAT_MAX           # an int comparison: never overflows
    return isinstance(value, float) and math.isfinite(value)


_FLOAT_MAX = int(sys.float_info.max)


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a one-line reason about a hostile value."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def number(message: dict[str, Any], key: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite number field within [low, high]."""
    value = message.get(key)
    if not _finite_number(value) or not low <= value <= high:
        raise ProtocolError(f"{message['type']}.{key}: expected a number in [{low}, {high}]")
    return float(value)


def integer(message: dict[str, Any], key: str, low: int = 0, high: int = 2**53) -> int:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(f"{message['type']}.{key}: expected an integer in [{low}, {high}]")
    return value


def receipt(message: dict[str, Any]) -> str | None:
    """A frame's optional ``receipt``: the one of the last result its client has read."""
    value = message.get("receipt")
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_RECEIPT_CHARS:
        raise ProtocolError(f"{message['type']}.receipt: expected a string of at most {MAX_RECEIPT_CHARS} characters")
    return value


def ratios(message: dict[str, Any], key: str, count: int) -> np.ndarray:
    """A list of ``count`` open ratios (finite, 0..2) -> float32 array."""
    value = message.get(key)
    if not isinstance(value, list) or len(value) != count:
        raise ProtocolError(f"{message['type']}.{key}: expected {count} numbers")
    return np.array([number({"type": message["type"], key: v}, key, 0.0, 2.0) for v in value], np.float32)


def choice(message: dict[str, Any], key: str, options: tuple[str, ...]) -> str:
    value = message.get(key)
    if value not in options:
        raise ProtocolError(f"{message['type']}.{key}: expected one of {', '.join(options)}")
    return value


# -- the avatar --------------------------------------------------------------------------------
def avatar_header(fmt: str, kind: AvatarKind, box: AvatarBox | None, eye_ratios: np.ndarray | None,
                  lip_ratio: np.ndarray | None) -> dict[str, Any]:
    """An ``avatar`` message's header: the crop's format (``AVATAR_FORMATS``), the avatar's kind,
    its face box (None: found by detection) and its eye (2) and lip (1) open ratios, None for an
    avatar without landmarks (both or neither)."""
    if (eye_ratios is None) != (lip_ratio is None):
        raise ValueError("avatar ratios: give both the eye and the lip ratios, or neither")
    return {"type": "avatar", "format": fmt, "kind": kind,
            "box": None if box is None else [float(box.x), float(box.y), float(box.size)],
            "eye_ratios": None if eye_ratios is None else [float(v) for v in np.reshape(eye_ratios, -1)[:2]],
            "lip_ratio": None if lip_ratio is None else [float(np.reshape(lip_ratio, -1)[0])]}


def avatar_kind(message: dict[str, Any]) -> AvatarKind:
    """An ``avatar`` message's ``kind``: one of ``AVATAR_KINDS``."""
    value = message.get("kind")
    for kind in AVATAR_KINDS:
        if value == kind:
            return kind
    raise ProtocolError(f"{message['type']}.kind: expected one of {', '.join(AVATAR_KINDS)}, got {shown(value)}")


def avatar_box(message: dict[str, Any]) -> AvatarBox | None:
    """An ``avatar`` message's ``box``: ``[x, y, size]`` in the avatar file's pixels, or null
    (absent counts as null)."""
    value = message.get("box")
    if value is None:
        return None
    where = f"{message['type']}.box"
    if not isinstance(value, list) or len(value) != 3 or not all(_finite_number(v) for v in value):
        raise ProtocolError(f"{where}: expected [x, y, size] or null")
    x, y, size = (float(v) for v in value)
    if max(abs(x), abs(y), size) > BOX_RANGE:
        raise ProtocolError(f"{where}: expected numbers within {BOX_RANGE:g} pixels")
    try:
        return AvatarBox(x, y, size)
    except ValueError as e:                   # a side under 16 pixels
        raise ProtocolError(f"{where}: {e}") from None


def avatar_ratios(message: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """An ``avatar`` message's eye (2) and lip (1) open ratios as float32 arrays, or (None, None)
    when both are null (or absent): an avatar without landmarks. One without the other is an error."""
    eye, lip = message.get("eye_ratios"), message.get("lip_ratio")
    if eye is None and lip is None:
        return None, None
    if eye is None or lip is None:
        raise ProtocolError(f"{message['type']}: eye_ratios and lip_ratio are both numbers or both null")
    return ratios(message, "eye_ratios", 2), ratios(message, "lip_ratio", 1)


# -- group photos (version 4) ------------------------------------------------------------------
@dataclass(frozen=True)
class FaceFields:
    """One face of an ``avatar`` message: its box (None: found by detection) and its eye (2) and lip
    (1) open ratios (both None: no landmarks)."""

    box: AvatarBox | None
    eye_ratios: np.ndarray | None
    lip_ratio: np.ndarray | None


def group_avatar_header(fmt: str, kind: AvatarKind, faces: Sequence[FaceFields],
                        sizes: Sequence[int]) -> dict[str, Any]:
    """A group photo's ``avatar`` header: the crops' format, the kind, each face's box and ratios
    (as ``avatar_header``'s) and each crop's bytes (``sizes``, in the faces' order)."""
    if not 1 <= len(faces) <= MAX_GROUP_FACES or len(sizes) != len(faces):
        raise ValueError(f"group avatar: expected 1..{MAX_GROUP_FACES} faces with a size each")
    one = [avatar_header(fmt, kind, f.box, f.eye_ratios, f.lip_ratio) for f in faces]
    return {"type": "avatar", "format": fmt, "kind": kind,
            "faces": [{k: h[k] for k in ("box", "eye_ratios", "lip_ratio")} for h in one],
            "sizes": [int(n) for n in sizes]}


def avatar_faces(message: dict[str, Any]) -> list[FaceFields]:
    """An ``avatar`` message's faces: its ``faces`` (1..``MAX_GROUP_FACES``, each checked as a single
    avatar's fields), or without ``faces`` the one face of its top-level ``box`` and ratios."""
    if "faces" not in message:
        return [FaceFields(avatar_box(message), *avatar_ratios(message))]
    faces = message["faces"]
    if not isinstance(faces, list) or not 1 <= len(faces) <= MAX_GROUP_FACES:
        raise ProtocolError(f"{message['type']}.faces: expected a list of 1 to {MAX_GROUP_FACES} faces")
    out = []
    for i, face in enumerate(faces):
        if not isinstance(face, dict):
            raise ProtocolError(f"{message['type']}.faces[{i}]: expected an object")
        fields = {"type": f"{message['type']}.faces[{i}]", **{k: face.get(k) for k in ("box", "eye_ratios",
                                                                                         "lip_ratio")}}
        out.append(FaceFields(avatar_box(fields), *avatar_ratios(fields)))
    return out


def split_payload(message: dict[str, Any], payload: bytes, count: int | None = None) -> list[bytes]:
    """A payload of several images back to back, cut by the header's ``sizes`` (positive byte
    counts adding up to the payload; ``count`` of them when given)."""
    sizes = message.get("sizes")
    where = f"{message['type']}.sizes"
    if not isinstance(sizes, list) or not sizes or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 < n <= len(payload) for n in sizes):
        raise ProtocolError(f"{where}: expected a list of positive byte counts")
    if count is not None and len(sizes) != count:
        raise ProtocolError(f"{where}: expected {count} sizes, got {len(sizes)}")
    if sum(sizes) != len(payload):
        raise ProtocolError(f"{where}: they add up to {sum(sizes)} bytes, the payload has {len(payload)}")
    ends = np.cumsum([0, *sizes]).tolist()
    return [payload[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]


def avatar_crops(message: dict[str, Any], payload: bytes) -> tuple[list[FaceFields], list[np.ndarray]]:
    """A still ``avatar`` message's faces and their 512 x 512 crops (its ``format``): one crop for the
    single-face form, ``sizes`` cutting the payload into one crop per face for ``faces``."""
    fmt = choice(message, "format", AVATAR_FORMATS)
    faces = avatar_faces(message)
    parts = split_payload(message, payload, len(faces)) if "faces" in message else [payload]
    return faces, [decode_image(part, fmt, CROP_SHAPE) for part in parts]


def result_crops(message: dict[str, Any], payload: bytes, fmt: str, count: int) -> np.ndarray:
    """A rendered ``result``'s crops: one (512 x 512 x 3) for ``count`` 1, else the ``count`` crops
    its ``sizes`` cut (count x 512 x 512 x 3), in the avatar's faces' order."""
    if count == 1:
        return decode_image(payload, fmt, CROP_SHAPE)
    return np.stack([decode_image(part, fmt, CROP_SHAPE) for part in split_payload(message, payload, count)])


# -- video avatars (version 4) ------------------------------------------------------------------
@dataclass(frozen=True)
class VideoFields:
    """A video ``avatar`` message's clip: frame rate, frame count and per-frame ratios (``eye_ratios``
    frames x 2, ``lip_ratios`` frames x 1 float32; both None without landmarks)."""

    fps: float
    frames: int
    eye_ratios: np.ndarray | None
    lip_ratios: np.ndarray | None


def video_avatar_header(kind: AvatarKind, box: AvatarBox | None, fps: float, frames: int,
                        eye_ratios: np.ndarray | None, lip_ratios: np.ndarray | None) -> dict[str, Any]:
    """A video avatar's ``avatar`` header (its crops follow in ``avatar_frames``): kind, the first
    frame's box (informational), ``video: {fps, frames}`` and ``ratios``: frames x [eye_l, eye_r,
    lip] from ``eye_ratios`` (frames x 2) and ``lip_ratios`` (frames x 1), or null without them."""
    if (eye_ratios is None) != (lip_ratios is None):
        raise ValueError("video ratios: give both the eye and the lip ratios, or neither")
    ratios_: list[list[float]] | None = None
    if eye_ratios is not None and lip_ratios is not None:
        table = np.concatenate([np.reshape(eye_ratios, (frames, 2)), np.reshape(lip_ratios, (frames, 1))], axis=1)
        ratios_ = [[float(v) for v in row] for row in table]
    return {"type": "avatar", "format": "jpeg", "kind": kind,
            "box": None if box is None else [float(box.x), float(box.y), float(box.size)],
            "video": {"fps": float(fps), "frames": int(frames)}, "ratios": ratios_}


def video_fields(message: dict[str, Any]) -> VideoFields | None:
    """An ``avatar`` message's ``video`` (None: a still avatar): fps in ``VIDEO_FPS_RANGE``, frames in
    1..``MAX_VIDEO_FRAMES``, and ``ratios`` (frames x 3 numbers in [0, 2], or null)."""
    video = message.get("video")
    if video is None:
        return None
    if "faces" in message:
        raise ProtocolError(f"{message['type']}: a video avatar has one face (no faces list)")
    if not isinstance(video, dict):
        raise ProtocolError(f"{message['type']}.video: expected {{fps, frames}}")
    where = {"type": f"{message['type']}.video", **video}
    fps = number(where, "fps", *VIDEO_FPS_RANGE)
    frames = integer(where, "frames", 1, MAX_VIDEO_FRAMES)
    table = message.get("ratios")
    if table is None:
        return VideoFields(fps, frames, None, None)
    if not isinstance(table, list) or len(table) != frames:
        raise ProtocolError(f"{message['type']}.ratios: expected {frames} rows of [eye_l, eye_r, lip] or null")
    rows = [ratios({"type": f"{message['type']}.ratios[{i}]", "row": row}, "row", 3) for i, row in enumerate(table)]
    values = np.stack(rows)
    return VideoFields(fps, frames, values[:, :2].copy(), values[:, 2:].copy())


def avatar_frames_header(start: int, sizes: Sequence[int]) -> dict[str, Any]:
    """An ``avatar_frames`` header: the index of its first frame and each frame's JPEG bytes."""
    return {"type": "avatar_frames", "start": int(start), "sizes": [int(n) for n in sizes]}


def avatar_frames(message: dict[str, Any], payload: bytes, expected_start: int, total: int) -> list[bytes]:
    """An ``avatar_frames`` message's JPEG crops, each checked as an avatar crop (512 x 512, decodable,
    ``decode_image``'s checks): ``start`` must be ``expected_start`` (the frames come in order) and
    the frames must stay within the clip's ``total``. The bytes are handed back as they came."""
    start = integer(message, "start", 0, MAX_VIDEO_FRAMES)
    if start != expected_start:
        raise ProtocolError(f"{message['type']}.start: expected frame {expected_start}, got {start}")
    parts = split_payload(message, payload)
    if start + len(parts) > total:
        raise ProtocolError(f"{message['type']}: frames {start}..{start + len(parts) - 1} beyond the clip's {total}")
    for part in parts:
        decode_image(part, "jpeg", CROP_SHAPE)
    return parts


def frame_source(message: dict[str, Any], frames: int | None) -> int | None:
    """A ``frame``'s ``source``: the clip frame (0 <= i < ``frames``) of a video avatar, required
    then; refused for a still avatar (``frames`` None), for which it is None."""
    if frames is None:
        if message.get("source") is not None:
            raise ProtocolError(f"{message['type']}.source: only for a video avatar")
        return None
    return integer(message, "source", 0, frames - 1)


# -- images ------------------------------------------------------------------------------------
def encode_image(image: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """H x W x 3 uint8 BGR -> bytes in ``fmt`` (jpeg, png or raw)."""
    if fmt == "raw":
        return np.ascontiguousarray(image, np.uint8).tobytes()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", image, params)
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as {fmt}")
    return data.tobytes()


def decode_image(payload: bytes, fmt: str, shape: tuple[int, int, int]) -> np.ndarray:
    """Bytes in ``fmt`` -> H x W x 3 uint8 BGR of exactly ``shape``; ``ProtocolError`` otherwise."""
    if fmt == "raw":
        if len(payload) != int(np.prod(shape)):
            raise ProtocolError(f"raw image: expected {int(np.prod(shape))} bytes, got {len(payload)}")
        return np.frombuffer(payload, np.uint8).reshape(shape).copy()
    declared = encoded_size(payload, fmt)
    if declared is not None and declared != (shape[1], shape[0]):
        # checked before decoding: a small file can declare a huge picture
        raise ProtocolError(f"{fmt} image: expected {shape[1]}x{shape[0]}, got {declared[0]}x{declared[1]}")
    if fmt == "jpeg" and (scans := jpeg_scans(payload)) > MAX_JPEG_SCANS:
        # checked before decoding: every scan is another pass over the whole picture
        raise ProtocolError(f"jpeg image: {scans} scans, at most {MAX_JPEG_SCANS} accepted")
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR) if declared else None
    if image is None:
        raise ProtocolError(f"{fmt} image could not be decoded")
    if image.shape != shape:
        raise ProtocolError(f"{fmt} image: expected {shape[1]}x{shape[0]}, got {image.shape[1]}x{image.shape[0]}")
    return image


def jpeg_scans(payload: bytes) -> int:
    """How many scans (start-of-scan markers, FF DA) a JPEG has, at most: entropy-coded data never
    holds FF DA (an FF there is followed by 00 or a restart marker), so counting the bytes counts
    the scans, plus any FF DA inside metadata (then the count is high: an honest encoder's frame
    has none). A C-speed byte search: microseconds per frame."""
    return payload.count(b"\xff\xda")


def encoded_size(payload: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) that a PNG or baseline/progressive JPEG declares in its header, read without
    decoding; None when the bytes are not such a file."""
    if fmt == "png":
        if payload[:8] != b"\x89PNG\r\n\x1a\n" or payload[12:16] != b"IHDR" or len(payload) < 24:
            return None
        return struct.unpack(">II", payload[16:24])
    i = 2
    if payload[:2] != b"\xff\xd8":
        return None
    while i + 9 <= len(payload):
        if payload[i] != 0xFF:
            return None
        marker = payload[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:     # markers without a length
            i += 2
            continue
        length = struct.unpack(">H", payload[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):    # start of frame
            height, width = struct.unpack(">HH", payload[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


# -- settings ----------------------------------------------------------------------------------
# The server receives the motion settings, every field of them; the output settings (paste-back,
# mirror, background) only change what the client makes of the crop and never travel.
def settings_to_wire(s: MotionSettings) -> dict[str, Any]:
    """Every ``MotionSettings`` field of ``s`` as JSON values (``s`` may be a whole
    ``AnimationSettings``: its output fields are left out)."""
    return {name: list(v) if isinstance(v := getattr(s, name), tuple) else v for name in MotionSettings.field_names()}


def _wire_reader(kind: Any) -> Callable[[Any], tuple[bool, Any]]:
    """How a value of a field of type ``kind`` is read from JSON: value -> (type ok, value)."""
    if kind is bool:
        return lambda v: (isinstance(v, bool), v)
    if kind is float:
        return lambda v: (_finite_number(v), v)
    if kind is int:
        return lambda v: (_finite_number(v) and float(v).is_integer(), int(v) if _finite_number(v) else v)
    if get_origin(kind) is tuple:
        size = len(get_args(kind))
        return lambda v: (isinstance(v, list) and len(v) == size and all(_finite_number(x) for x in v), v)
    if get_origin(kind) is Literal:        # the driving option and the retargeting modes
        return lambda v: (isinstance(v, str) and len(v) < 64, v)
    raise TypeError(f"no wire form for settings of type {kind}")


# one reader per field, from its declared type: a field of a type without a wire form fails here, at import
_WIRE_READERS = {name: _wire_reader(kind) for name, kind in MotionSettings.field_types().items()}


def settings_from_wire(values: Any) -> dict[str, Any]:
    """A ``settings`` message's values -> keyword arguments for ``LiveSettings.update`` (types
    checked here, from the fields' types; ranges by ``validated``). Only ``MotionSettings`` fields
    are accepted."""
    if not isinstance(values, dict) or set(values) - set(_WIRE_READERS):
        raise ProtocolError("settings.values: expected an object of known settings")
    out: dict[str, Any] = {}
    for name, value in values.items():
        ok, out[name] = _WIRE_READERS[name](value)
        if not ok:
            raise ProtocolError(f"settings.{name}: wrong type")
    return out
