"""Video avatars, host side (no networks, no torch): a clip decoded once, its face tracked and framed
per frame, and each frame handed out as an ``AvatarFace`` exactly like a still's, so finishing,
paste-back and the background work unchanged.

The clip plays ping-pong (forward, then backward) on the output's clock: ``pingpong_index``.

Memory: a 10 s 720p clip at 25 fps is ~660 MiB as raw BGR frames, so the frames are kept JPEG
compressed (quality 95) and decoded on demand (one or two decoded frames are cached). The 256
network inputs are not kept: the frame's ``AvatarFace`` (decoded, cropped for the paste-back anyway)
makes its network input in the same step, and M runs on all of them only once, at load.
"""
from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..face import crop as fc
from ..face.layout import MEDIAPIPE_478, LandmarkLayout
from ..face.mask import feathered_square_mask
from ..face.ratios import eye_open_ratios, lip_open_ratio
from ..face.tracker import LandmarkSource
from ..imaging.image_io import MAX_AVATAR_SIDE, ImageError, limit_size
from .face import AvatarFace, NoFaceError
from .framing import AvatarBox, AvatarKind, check_avatar_kind
from .suggest import cat_crop_box, find_cat_face

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")
MAX_VIDEO_SECONDS = 10.0
# the face box's centre, side and angle are smoothed with a centred Gaussian of this width (seconds):
# long enough to remove the landmarks' frame-to-frame jitter, short next to a head's movements
BOX_SMOOTHING_SECONDS = 0.1
JPEG_QUALITY = 95
_FALLBACK_FPS = 25.0
_CACHED_FACES = 2


def is_video_file(path: str | Path) -> bool:
    """Whether ``path`` names a video (by its suffix, case-insensitive): an avatar clip."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def pingpong_index(elapsed_s: float, fps: float, num_frames: int) -> int:
    """The clip frame shown ``elapsed_s`` seconds after the first, playing forward then backward at
    ``fps`` without repeating the end frames (0, 1, .., n-1, n-2, .., 1, 0, 1, ..); 0 for a
    one-frame clip or before the start."""
    if num_frames < 1:
        raise ValueError(f"pingpong_index: expected at least one frame, got {num_frames}")
    if num_frames == 1 or not elapsed_s > 0:
        return 0
    # a hair's tolerance: t = k / fps must give frame k despite float rounding
    step = int(math.floor(elapsed_s * fps + 1e-6))
    period = 2 * (num_frames - 1)
    k = step % period
    return k if k < num_frames else period - k


@dataclass(frozen=True)
class AvatarVideo:
    """A clip prepared as an avatar: ``num_frames`` frames at ``fps``, each kept encoded
    (``frames``: JPEG, or PNG for crops that must stay exact) with its smoothed crop (``params``,
    num_frames x 4 float64: centre x, centre y, side in the decoded frames' pixels, angle in radians)
    and its eye/lip ratios (num_frames x 2 and num_frames x 1 float32; frames without a face hold the
    last ones; None without landmarks). ``face(i)`` is frame i as an ``AvatarFace``.

    ``image_size`` (width, height) and ``image_scale`` (decoded pixels per file pixel) are those of
    the decoded frames; ``cropped``: the frames are their own 512 crops (identity transform)."""

    name: str
    fps: float
    frames: tuple[bytes, ...]
    params: np.ndarray
    image_size: tuple[int, int]
    eye_ratios: np.ndarray | None
    lip_ratios: np.ndarray | None
    landmarks: tuple[np.ndarray | None, ...]
    layout: LandmarkLayout = MEDIAPIPE_478
    kind: AvatarKind = "human"
    border: fc.BorderMode = "zeros"
    image_scale: float = 1.0
    cropped: bool = False
    faces_found: int = 0             # frames whose face was found (0: boxes given, or crops)
    _cache: OrderedDict[int, AvatarFace] = field(default_factory=OrderedDict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _mask_crop: np.ndarray = field(default_factory=lambda: feathered_square_mask(fc.AVATAR_CROP.dsize),
                                   repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.frames)
        if n == 0:
            raise ValueError(f"{self.name}: a video avatar needs at least one frame")
        if self.params.shape != (n, 4):
            raise ValueError(f"{self.name}: expected {n}x4 crop parameters, got {self.params.shape}")
        if (self.eye_ratios is None) != (self.lip_ratios is None):
            raise ValueError("video ratios: expected both eye and lip ratios, or neither")
        if self.eye_ratios is not None and (self.eye_ratios.shape != (n, 2) or self.lip_ratios is None
                                            or self.lip_ratios.shape != (n, 1)):
            raise ValueError(f"{self.name}: expected {n}x2 eye and {n}x1 lip ratios")
        if len(self.landmarks) != n:
            raise ValueError(f"{self.name}: expected landmarks (or None) for each of the {n} frames")

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def source_index(self, elapsed_s: float) -> int:
        """The frame shown ``elapsed_s`` seconds into the ping-pong playback."""
        return pingpong_index(elapsed_s, self.fps, self.num_frames)

    def image(self, i: int) -> np.ndarray:
        """Frame ``i`` decoded: H x W x 3 uint8 BGR."""
        image = cv2.imdecode(np.frombuffer(self.frames[self._check(i)], np.uint8), cv2.IMREAD_COLOR)
        if image is None:       # our own encoding: cannot happen short of memory corruption
            raise RuntimeError(f"{self.name}: frame {i} cannot be decoded")
        return image

    def transform(self, i: int) -> fc.CropTransform:
        """Frame ``i``'s image <-> 512 crop transform (its smoothed box)."""
        cx, cy, side, angle = (float(v) for v in self.params[self._check(i)])
        return fc.transform_from_params(fc.CropParams(cx, cy, side, angle), fc.AVATAR_CROP.dsize)

    def box(self, i: int) -> AvatarBox:
        """Frame ``i``'s crop box in the file's pixels (upright: what a display draws)."""
        x, y, side = fc.box_from_params(fc.CropParams(*(float(v) for v in self.params[self._check(i)])))
        return AvatarBox(x / self.image_scale, y / self.image_scale, side / self.image_scale)

    def face(self, i: int) -> AvatarFace:
        """Frame ``i`` as an avatar face: decoded image, its 512 crop and network input, transform,
        paste mask and ratios (no person mask: the background segments it on need). The last
        ``_CACHED_FACES`` are kept, so an output faster than the clip decodes each frame once."""
        i = self._check(i)
        with self._lock:
            face = self._cache.get(i)
            if face is not None:
                self._cache.move_to_end(i)
                return face
        face = self._make_face(i)
        with self._lock:
            self._cache[i] = face
            while len(self._cache) > _CACHED_FACES:
                self._cache.popitem(last=False)
        return face

    def crop(self, i: int) -> np.ndarray:
        """Frame ``i``'s 512 x 512 x 3 BGR crop, made from the kept frame without making (or
        caching) its face: what a render server's client uploads."""
        i = self._check(i)
        with self._lock:
            cached = self._cache.get(i)
        if cached is not None:
            return cached.crop
        return self._crop(self.image(i), self.transform(i))

    def network_input(self, i: int) -> np.ndarray:
        """Frame ``i``'s 256 x 256 x 3 BGR network input, without caching its face (load-time M)."""
        with self._lock:
            cached = self._cache.get(i)
        if cached is not None:
            return cached.network_input
        return fc.resize_for_network(self._crop(self.image(i), self.transform(i)))

    @property
    def memory_bytes(self) -> int:
        """Bytes held: the encoded frames, the per-frame boxes, ratios and landmarks, and the cached
        decoded faces."""
        total = sum(len(f) for f in self.frames) + self.params.nbytes + self._mask_crop.nbytes
        total += sum(a.nbytes for a in (self.eye_ratios, self.lip_ratios) if a is not None)
        total += sum(lm.nbytes for lm in self.landmarks if lm is not None)
        with self._lock:
            faces = list(self._cache.values())
        for f in faces:
            total += f.image.nbytes + f.network_input.nbytes + f.paste.mask.nbytes
            total += 0 if self.cropped else f.crop.nbytes
            total += sum(a.nbytes for a in (f.paste.box_weights, f.paste.box_complement) if a is not None)
        return total

    # -- internals ----------------------------------------------------------------------------
    def _check(self, i: int) -> int:
        if not 0 <= i < self.num_frames:
            raise IndexError(f"{self.name}: frame {i} out of 0..{self.num_frames - 1}")
        return int(i)

    def _crop(self, image: np.ndarray, transform: fc.CropTransform) -> np.ndarray:
        if self.cropped:
            return image
        # OpenCV's fixed-point warp (a few grey levels off the precise one a still uses, made
        # once): a clip's crop is made per output frame, ~20x faster
        return fc.warp_to_crop(image, transform, border=self.border)

    def _make_face(self, i: int) -> AvatarFace:
        image = self.image(i)
        transform = self.transform(i)
        crop = self._crop(image, transform)
        landmarks = self.landmarks[i]
        return AvatarFace(
            image=image, landmarks=np.zeros((0, 2), np.float32) if landmarks is None else landmarks,
            layout=self.layout, transform=transform, crop=crop, network_input=fc.resize_for_network(crop),
            eye_ratios=None if self.eye_ratios is None else self.eye_ratios[i:i + 1],
            lip_ratio=None if self.lip_ratios is None else self.lip_ratios[i:i + 1],
            paste=paste_mask_in_box(self._mask_crop, transform.M_c2o, (image.shape[1], image.shape[0])),
            num_faces=int(landmarks is not None), kind=self.kind, box=None if self.cropped else self.box(i),
            image_scale=self.image_scale, video=self)


def paste_mask_in_box(mask_crop: np.ndarray, M_c2o: np.ndarray, image_size: tuple[int, int]) -> fc.PasteMask:
    """``crop.prepare_paste_mask`` made per video frame: only the region the crop covers is warped
    (OpenCV's fixed-point warp, a grey level or two off the precise one at most), the rest of the
    full-size mask stays zero. ``image_size`` = (width, height)."""
    width, height = image_size
    side = mask_crop.shape[0]
    corners = np.array([[0, 0], [side, 0], [0, side], [side, side]], np.float64)
    M = np.asarray(M_c2o, np.float64)
    points = corners @ M[:2, :2].T + M[:2, 2]
    x0, y0 = (max(int(math.floor(v)), 0) for v in points.min(axis=0))
    x1 = min(int(math.ceil(points[:, 0].max())) + 1, width)
    y1 = min(int(math.ceil(points[:, 1].max())) + 1, height)
    mask = np.zeros((height, width, mask_crop.shape[2]), np.float32)
    if x1 <= x0 or y1 <= y0:
        return fc.PasteMask(mask=mask, box=(0, 0, 0, 0))
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]]) @ np.vstack([M[:2], [0.0, 0.0, 1.0]])
    warped = cv2.warpAffine(mask_crop, shift[:2], (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    weights = warped[..., 0].astype(np.float32) / 255.0
    mask[y0:y1, x0:x1] = weights[..., None]
    return fc.PasteMask(mask=mask, box=(x0, y0, x1, y1), box_weights=weights, box_complement=1.0 - weights)


def smooth_params(params: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Per-frame crop parameters (n x 4: centre x, centre y, side, angle) smoothed over the clip by a
    centred Gaussian of ``sigma_frames`` (zero-phase: all frames are known, so the box neither lags
    nor leads the face; the clip's ends are extended with their own values). 0: unchanged."""
    if sigma_frames <= 0 or len(params) < 2:
        return params.copy()
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(params, sigma_frames, axis=0, mode="nearest")


def hold_missing(values: Sequence[np.ndarray | None]) -> np.ndarray:
    """Per-frame values with the frames that have none (None) given the last one before them (those
    before the first given: the first given). Raises ``ValueError`` when none is given."""
    first = next((v for v in values if v is not None), None)
    if first is None:
        raise ValueError("no frame has a value")
    out, last = [], first
    for v in values:
        last = v if v is not None else last
        out.append(np.asarray(last))
    return np.stack(out)


def _encode(image: np.ndarray, lossless: bool) -> bytes:
    ok, data = (cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1]) if lossless
                else cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]))
    if not ok:
        raise RuntimeError("frame encoding failed")
    return data.tobytes()


def read_clip(path: str | Path, *, max_seconds: float = MAX_VIDEO_SECONDS,
              max_side: int = MAX_AVATAR_SIDE) -> tuple[list[np.ndarray], float, float]:
    """The first ``max_seconds`` of a video file decoded (each frame downscaled like a still
    image, longest side ``max_side``), with its frame rate and the downscaling factor. Raises
    ``ImageError`` naming the file when it cannot be read or has no frame."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ImageError(f"{path}: not a video OpenCV can read (corrupt, truncated or unsupported format)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and 1 <= fps <= 240 else _FALLBACK_FPS
        limit = max(1, int(math.floor(max_seconds * fps + 1e-6)))
        frames: list[np.ndarray] = []
        while len(frames) < limit:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise ImageError(f"{path}: the video has no frame that can be decoded")
    height, width = frames[0].shape[:2]
    frames = [limit_size(f, max_side) if max(f.shape[:2]) > max_side else f for f in frames]
    scale = (frames[0].shape[1] / width + frames[0].shape[0] / height) / 2
    return frames, fps, scale


def load_avatar_video(path: str | Path, source: LandmarkSource | None, *, max_seconds: float = MAX_VIDEO_SECONDS,
                      max_side: int = MAX_AVATAR_SIDE, kind: AvatarKind = "human", box: AvatarBox | None = None,
                      smooth_seconds: float = BOX_SMOOTHING_SECONDS) -> AvatarVideo:
    """A video file -> ``AvatarVideo``: its first ``max_seconds`` decoded once and kept compressed,
    the face tracked per frame with ``source`` (a human, without ``box``: its largest face), each
    frame's official crop derived from its landmarks and the crops smoothed over the whole clip both
    ways (``smooth_seconds``: the Gaussian's sigma). Frames without a face keep the last box and
    ratios (before the first face: the first found). With ``box`` (the file's pixels) every frame
    uses that box, untracked (no eye/lip ratios); an animal without one is framed by the cat-face
    detector on the first frame, for the whole clip. Raises ImageError (unreadable, no frames) or
    NoFaceError (no face in any frame), each one line naming the file."""
    kind = check_avatar_kind(kind)
    name = str(path)
    frames, fps, scale = read_clip(path, max_seconds=max_seconds, max_side=max_side)
    n = len(frames)
    height, width = frames[0].shape[:2]
    landmarks: list[np.ndarray | None] = [None] * n
    layout = MEDIAPIPE_478 if source is None else source.layout
    eyes = lips = None
    found = 0
    if box is not None:
        p = fc.params_from_box(box.x * scale, box.y * scale, box.size * scale)
        params = np.tile(p.as_array(), (n, 1))
    elif kind == "animal":
        rect = find_cat_face(frames[0])
        if rect is None:
            raise NoFaceError(f"{name}: no cat face found in the first frame; give the face's square with "
                              "--avatar-box X,Y,SIZE")
        params = np.tile(fc.params_from_box(*cat_crop_box(rect)).as_array(), (n, 1))
    else:
        if source is None:
            raise ValueError("a human video avatar needs a landmark source")
        source.reset()
        try:
            for i, frame in enumerate(frames):
                landmarks[i] = source.track(frame)
        finally:
            source.reset()
        found = sum(lm is not None for lm in landmarks)
        if found == 0:
            raise NoFaceError(f"{name}: no face found in its {n} frames; for a cartoon give the face's square "
                              "with --avatar-box X,Y,SIZE")
        if found < n:
            log.info("%s: no face in %d of %d frames; they keep the last box", name, n - found, n)
        raw = [None if lm is None else fc.crop_params(lm, layout, fc.AVATAR_CROP).as_array() for lm in landmarks]
        params = smooth_params(hold_missing(raw), smooth_seconds * fps)
        eyes = hold_missing([None if lm is None else eye_open_ratios(lm, layout).reshape(2) for lm in landmarks])
        lips = hold_missing([None if lm is None else lip_open_ratio(lm, layout).reshape(1) for lm in landmarks])
    # the official framing keeps its black border (parity); a box is padded with the edge colour
    border: fc.BorderMode = "zeros" if box is None and kind == "human" else "replicate"
    video = AvatarVideo(name=name, fps=fps, frames=tuple(_encode(f, lossless=False) for f in frames),
                        params=params.astype(np.float64), image_size=(width, height),
                        eye_ratios=None if eyes is None else eyes.astype(np.float32),
                        lip_ratios=None if lips is None else lips.astype(np.float32),
                        landmarks=tuple(landmarks), layout=layout, kind=kind, border=border,
                        image_scale=scale, faces_found=found)
    log.info("%s: %d frames at %.2f fps (%dx%d), %.1f MB held", name, n, fps, width, height,
             video.memory_bytes / 1e6)
    return video


def avatar_video_from_crops(crops: Sequence[np.ndarray], eye_ratios: np.ndarray | None,
                            lip_ratios: np.ndarray | None, fps: float, kind: AvatarKind = "human") -> AvatarVideo:
    """A video avatar whose frames are its own 512 crops (identity transform, no landmarks), as
    ``avatar_face_from_crop`` is for a still: what a render server makes of the per-frame crops a
    client uploads. ``crops``: 512 x 512 x 3 uint8 BGR each, kept losslessly (PNG) so the server's
    network inputs equal the client's; ratios num_frames x 2 and num_frames x 1, both or neither."""
    side = fc.AVATAR_CROP.dsize
    for i, crop in enumerate(crops):
        if crop.shape != (side, side, 3) or crop.dtype != np.uint8:
            raise ValueError(f"avatar crop {i}: expected {side}x{side}x3 uint8, got {crop.shape} {crop.dtype}")
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"video avatar: expected a positive frame rate, got {fps}")
    n = len(crops)
    params = np.tile(fc.params_from_box(0.0, 0.0, float(side)).as_array(), (n, 1))
    return AvatarVideo(name="uploaded video avatar", fps=float(fps),
                       frames=tuple(_encode(c, lossless=True) for c in crops), params=params, image_size=(side, side),
                       eye_ratios=None if eye_ratios is None else np.asarray(eye_ratios, np.float32).reshape(n, 2),
                       lip_ratios=None if lip_ratios is None else np.asarray(lip_ratios, np.float32).reshape(n, 1),
                       landmarks=(None,) * n, kind=check_avatar_kind(kind), border="replicate", cropped=True)


def avatar_video_from_jpeg_crops(frames: Sequence[bytes], eye_ratios: np.ndarray | None,
                                 lip_ratios: np.ndarray | None, fps: float, kind: AvatarKind = "human") -> AvatarVideo:
    """``avatar_video_from_crops`` for crops that arrive JPEG-encoded (a client's upload): the bytes
    are kept as they came (each frame decodes to exactly the crop the caller checked, without a
    lossless copy of every frame). ``frames``: each a JPEG of a 512 x 512 picture, checked by the
    caller (the protocol's ``decode_image``); ratios num_frames x 2 and num_frames x 1, both or
    neither."""
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"video avatar: expected a positive frame rate, got {fps}")
    side = fc.AVATAR_CROP.dsize
    n = len(frames)
    params = np.tile(fc.params_from_box(0.0, 0.0, float(side)).as_array(), (n, 1))
    return AvatarVideo(name="uploaded video avatar", fps=float(fps), frames=tuple(bytes(f) for f in frames),
                       params=params, image_size=(side, side),
                       eye_ratios=None if eye_ratios is None else np.asarray(eye_ratios, np.float32).reshape(n, 2),
                       lip_ratios=None if lip_ratios is None else np.asarray(lip_ratios, np.float32).reshape(n, 1),
                       landmarks=(None,) * n, kind=check_avatar_kind(kind), border="replicate", cropped=True)
