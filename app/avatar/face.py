"""The avatar's face, prepared once: image, landmarks, 512 crop and 256 network input, eye/lip
ratios, the paste-back transform and mask, and (given a segmenter) the image's person mask."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..face import crop as fc
from ..face.layout import MEDIAPIPE_478, LandmarkLayout
from ..face.mask import feathered_square_mask
from ..face.ratios import eye_open_ratios, lip_open_ratio
from ..face.tracker import LandmarkSource
from ..imaging.image_io import MAX_AVATAR_SIDE, limit_size, load_image
from ..imaging.segmentation import PersonSegmenter
from .framing import AvatarBox, AvatarKind

log = logging.getLogger(__name__)


class NoFaceError(ValueError):
    """No usable face in the avatar image."""


@dataclass(frozen=True)
class AvatarFace:
    image: np.ndarray            # H x W x 3 BGR, downscaled to MAX_AVATAR_SIDE at most
    landmarks: np.ndarray        # N x 2, image pixels
    layout: LandmarkLayout
    transform: fc.CropTransform  # image <-> 512 crop
    crop: np.ndarray             # 512 x 512 x 3 BGR
    network_input: np.ndarray    # 256 x 256 x 3 BGR (area-resized crop)
    eye_ratios: np.ndarray       # 1 x 2 [left, right]
    lip_ratio: np.ndarray        # 1 x 1
    paste: fc.PasteMask
    num_faces: int               # faces found; the largest is used
    person_mask: np.ndarray | None = None   # H x W float32 person probability in [0, 1], if segmented
    kind: AvatarKind = "human"              # which weight set animates it
    box: AvatarBox | None = None            # the region that became the crop (None: a server's bare crop)


def prepare_avatar_face(image_or_path: np.ndarray | str | Path, source: LandmarkSource, *,
                        mask_crop: np.ndarray | None = None, max_side: int = MAX_AVATAR_SIDE,
                        segmenter: PersonSegmenter | None = None) -> AvatarFace:
    """Load (if a path), downscale large images, find the largest face, crop it in the official
    source framing (512, scale 2.3, vy -0.125) and prepare the paste-back mask; with a
    ``segmenter``, also the image's person mask (for the output background modes)."""
    if isinstance(image_or_path, np.ndarray):
        name, image = "avatar image", image_or_path
    else:
        name, image = str(image_or_path), load_image(image_or_path)
    image = limit_size(image, max_side)
    faces = source.detect_faces(image)
    if not faces:
        raise NoFaceError(f"{name}: no face found; use a clear, frontal portrait photo "
                          "(cartoons and animals are usually not detected)")
    if len(faces) > 1:
        log.info("%s: %d faces found, using the largest", name, len(faces))
    landmarks = faces[0]
    transform = fc.crop_transform(landmarks, source.layout, fc.AVATAR_CROP)
    crop = fc.warp_to_crop(image, transform, precise=True)
    mask = feathered_square_mask(fc.AVATAR_CROP.dsize) if mask_crop is None else mask_crop
    paste = fc.prepare_paste_mask(mask, transform.M_c2o, (image.shape[1], image.shape[0]))
    return AvatarFace(image=image, landmarks=landmarks, layout=source.layout, transform=transform, crop=crop,
                      network_input=fc.resize_for_network(crop), eye_ratios=eye_open_ratios(landmarks, source.layout),
                      lip_ratio=lip_open_ratio(landmarks, source.layout), paste=paste, num_faces=len(faces),
                      person_mask=None if segmenter is None else segmenter.segment(image))


def avatar_face_from_crop(crop: np.ndarray, eye_ratios: np.ndarray, lip_ratio: np.ndarray) -> AvatarFace:
    """An ``AvatarFace`` that is its own 512 crop (identity transform, no landmarks): what a render
    server makes of the crop and ratios a client uploads. Its network input is made exactly as the
    client's is; its paste-back fields are valid but unused (the client pastes back)."""
    side = fc.AVATAR_CROP.dsize
    if crop.shape != (side, side, 3) or crop.dtype != np.uint8:
        raise ValueError(f"avatar crop: expected {side}x{side}x3 uint8, got {crop.shape} {crop.dtype}")
    identity = np.eye(3, dtype=np.float64)[:2]
    transform = fc.CropTransform(M_o2c=identity, M_c2o=identity.copy(), dsize=side)
    return AvatarFace(image=crop, landmarks=np.zeros((0, 2), np.float32), layout=MEDIAPIPE_478,
                      transform=transform, crop=crop, network_input=fc.resize_for_network(crop),
                      eye_ratios=np.asarray(eye_ratios, np.float32).reshape(1, 2),
                      lip_ratio=np.asarray(lip_ratio, np.float32).reshape(1, 1),
                      paste=fc.prepare_paste_mask(feathered_square_mask(side), identity, (side, side)), num_faces=1)
