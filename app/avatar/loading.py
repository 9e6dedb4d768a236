"""Loading an avatar file: its face found, cropped and segmented (all a render server's client
needs), and prepared through a backend's networks (what the local animator needs)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from engines.backend import InferenceBackend

from ..face.tracker import LandmarkSource, MediaPipeFaceMesh
from ..imaging.segmentation import MediaPipeSelfieSegmentation, PersonSegmenter
from .face import AvatarFace, prepare_avatar_face
from .framing import AvatarChoice
from .prepared import PreparedAvatar, prepare_avatar
from .prepared_video import prepare_video
from .video import AvatarVideo, is_video_file, load_avatar_video

log = logging.getLogger(__name__)


DEFAULT_AVATAR = Path(__file__).resolve().parents[2] / "assets" / "avatars" / "astronaut.png"


def person_segmenter() -> PersonSegmenter | None:
    """MediaPipe's person segmenter, or None where MediaPipe is not installed (landmarks replayed on
    a GPU machine): the background compositor then segments the avatar itself when a mode needs it."""
    try:
        return MediaPipeSelfieSegmentation()
    except ImportError as e:
        log.info("no person segmentation at avatar preparation (%s)", e)
        return None


def load_avatar_face(choice: AvatarChoice | str | Path, source: LandmarkSource | None = None) -> AvatarFace:
    """The chosen avatar file -> its face, cropped (from its box, if it has one) and segmented
    (raises ImageError / NoFaceError / ValueError): all a client of a render server prepares itself
    (no networks). A group photo's faces are those of ``choice.faces`` (all found, at most four, when
    None). The face mesh runs only for a human avatar (``source``, or one made here). A
    bare path is a human avatar whose face is found by detection. A video file (``is_video_file``)
    gives its clip's first frame, whose ``video`` is the whole clip (``load_video_face``)."""
    if not isinstance(choice, AvatarChoice):
        choice = AvatarChoice(Path(choice))
    if is_video_file(choice.path):
        return load_video_face(choice, source).face(0)
    own = source is None and choice.kind == "human"
    if own:
        source = MediaPipeFaceMesh()
    segmenter = person_segmenter()
    try:
        return prepare_avatar_face(choice.path, source, kind=choice.kind, box=choice.box, segmenter=segmenter,
                                   faces=choice.faces)
    finally:
        if segmenter is not None:
            segmenter.close()
        if own and source is not None:
            source.close()


def load_avatar(choice: AvatarChoice, backend: InferenceBackend,
                source: LandmarkSource | None = None) -> PreparedAvatar:
    """Avatar file with its kind and face box -> everything the animator needs (raises ImageError /
    NoFaceError); the image is segmented here too, once, for the output background modes.
    ``backend`` holds the networks of ``choice.kind``. A video file (``is_video_file``) becomes a
    video avatar (``load_avatar_video_file``)."""
    if is_video_file(choice.path):
        return load_avatar_video_file(choice, backend, source)
    t0 = time.perf_counter()
    face = load_avatar_face(choice, source)
    with torch.inference_mode():
        avatar = prepare_avatar(face, backend)
    log.info("%s avatar %s prepared in %.2f s (%dx%d)", choice.kind, choice.path, time.perf_counter() - t0,
             face.image.shape[1], face.image.shape[0])
    return avatar


def load_video_face(choice: AvatarChoice, source: LandmarkSource | None = None) -> AvatarVideo:
    """The chosen video file -> its clip, decoded, tracked and framed (no networks): the video
    counterpart of ``load_avatar_face`` (raises ImageError / NoFaceError). The face mesh runs only for a
    human avatar without a box (``source``, or one made here)."""
    own = source is None and choice.kind == "human" and choice.box is None
    if own:
        source = MediaPipeFaceMesh()
    try:
        return load_avatar_video(choice.path, source, kind=choice.kind, box=choice.box)
    finally:
        if own and source is not None:
            source.close()


def load_avatar_video_file(choice: AvatarChoice, backend: InferenceBackend,
                           source: LandmarkSource | None = None) -> PreparedAvatar:
    """A video avatar file -> its first frame prepared as a still, with the whole clip prepared in
    ``PreparedAvatar.video`` (M on every frame; raises ImageError / NoFaceError)."""
    t0 = time.perf_counter()
    video = load_video_face(choice, source)
    t1 = time.perf_counter()
    avatar = prepare_video(video, backend)
    log.info("%s video avatar %s: %d frames at %.2f fps loaded in %.2f s (decoding and tracking %.2f s), "
             "%.1f MB held on the host", choice.kind, choice.path, video.num_frames, video.fps,
             time.perf_counter() - t0, t1 - t0, video.memory_bytes / 1e6)
    return avatar
