"""The avatar's face, prepared once: image, landmarks (when found), 512 crop and 256 network input,
eye/lip ratios (when there are landmarks), the paste-back transform and mask, and (given a
segmenter) the image's person mask.

The crop comes from one of three places: a human face found by the face mesh (the official
framing), a face box given by the user (any face: cartoons, animals), or, for an animal avatar
without a box, the cat-face detector (``suggest.py``)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..face import crop as fc
from ..face.layout import MEDIAPIPE_478, LandmarkLayout
from ..face.mask import feathered_square_mask
from ..face.ratios import eye_open_ratios, lip_open_ratio
from ..face.regions import face_centre, region_in_box
from ..face.tracker import LandmarkSource, detect_faces_windowed
from ..imaging.image_io import MAX_AVATAR_SIDE, limit_size, load_image
from ..imaging.segmentation import PersonSegmenter
from .framing import MAX_GROUP_FACES, AvatarBox, AvatarKind, check_avatar_kind
from .suggest import cat_crop_box, find_cat_face

if TYPE_CHECKING:
    from .video import AvatarVideo

log = logging.getLogger(__name__)


class NoFaceError(ValueError):
    """No usable face in the avatar image."""


@dataclass(frozen=True)
class AvatarFace:
    image: np.ndarray            # H x W x 3 BGR, downscaled to MAX_AVATAR_SIDE at most
    landmarks: np.ndarray        # N x 2 float32, image pixels; N = 0 without landmarks
    layout: LandmarkLayout
    transform: fc.CropTransform  # image <-> 512 crop
    crop: np.ndarray             # 512 x 512 x 3 BGR
    network_input: np.ndarray    # 256 x 256 x 3 BGR (area-resized crop)
    eye_ratios: np.ndarray | None   # 1 x 2 [left, right]; None without landmarks
    lip_ratio: np.ndarray | None    # 1 x 1; None without landmarks
    paste: fc.PasteMask          # this face's paste mask (in a group: times its region)
    num_faces: int               # faces found (0: the crop came from a box alone)
    person_mask: np.ndarray | None = None   # H x W float32 person probability in [0, 1], if segmented
    kind: AvatarKind = "human"              # which weight set animates it
    box: AvatarBox | None = None            # the region that became the crop, in the pixels of the image
                                            # given (the file's, before downscaling); None: a server's bare crop
    image_scale: float = 1.0                # ``image`` pixels per pixel of the image given (<= 1)
    # a group photo: the other animated faces of the same image, in face-number order (each a full
    # AvatarFace sharing ``image``, with its own crop, transform, ratios, box and region-weighted
    # paste mask; their own ``others`` empty), and the union of all animated faces' paste masks
    others: tuple[AvatarFace, ...] = ()
    group_paste: fc.PasteMask | None = None
    number: int = 1                         # this face's number in the image (1.. left to right)
    # a video avatar: the clip this face is a frame of (every frame's face carries it, so whatever
    # holds the face, a renderer or the window, holds the clip); None for a still image
    video: AvatarVideo | None = None

    @property
    def group(self) -> tuple[AvatarFace, ...]:
        """All animated faces of the image: this one (the selected face) first, then ``others``."""
        return (self, *self.others)

    @property
    def output_paste(self) -> fc.PasteMask:
        """The region the animated faces are pasted into: ``group_paste`` for a group, else ``paste``
        (what the background compositor treats as the pasted region)."""
        return self.group_paste if self.group_paste is not None else self.paste

    @property
    def has_landmarks(self) -> bool:
        """Whether the face's landmarks were found, so eye/lip ratios exist (retargeting can run). A
        render server's face has the client's ratios without the landmarks themselves."""
        return self.eye_ratios is not None and self.lip_ratio is not None


def prepare_avatar_face(image_or_path: np.ndarray | str | Path, source: LandmarkSource | None, *,
                        kind: AvatarKind = "human", box: AvatarBox | None = None,
                        mask_crop: np.ndarray | None = None, max_side: int = MAX_AVATAR_SIDE,
                        segmenter: PersonSegmenter | None = None,
                        faces: tuple[int, ...] | None = None) -> AvatarFace:
    """Load (if a path), downscale large images (longest side ``max_side``), find the face(s), crop
    each to 512 and prepare the paste-back mask; with a ``segmenter``, also the image's person mask
    (for the output background modes).

    ``box`` (the given image's pixels, scaled here with the downscaling) is the crop's square,
    padded with the edge colour where it leaves the image. Without it, a human face is framed
    officially from its landmarks (512, scale 2.3, vy -0.125; black outside the image) and an
    animal's from the cat-face detector. Landmarks and eye/lip ratios are kept only for kind
    "human" and a face (of ``source``) whose centre lies in the crop's box; the face mesh is not
    run for animals (``source`` may be None then).

    A human avatar without a box is a group photo when several faces are found: the
    ``MAX_GROUP_FACES`` largest are numbered 1.. left to right (by face centre) and those in
    ``faces`` (None: all) are animated, the first returned with the others in ``others``, each
    paste mask multiplied by the face's region (``app.face.regions``, split between the centres of
    all numbered faces, so a face switched off is not pasted over either). With one face found,
    the result is the single face as ever. With ``faces`` given, ``box`` frames the first selected
    face instead of its detection (a correction of that face's crop; the others stay detected).

    Raises ImageError, NoFaceError (also for a face number beyond those found), or ValueError for
    a box that misses the image."""
    kind = check_avatar_kind(kind)
    if isinstance(image_or_path, np.ndarray):
        name, image = "avatar image", image_or_path
    else:
        name, image = str(image_or_path), load_image(image_or_path)
    height, width = image.shape[:2]
    image = limit_size(image, max_side)
    # limit_size keeps the aspect up to rounding: one factor for both axes is exact enough
    scale = (image.shape[1] / width + image.shape[0] / height) / 2
    if kind == "human" and source is None:
        raise ValueError("a human avatar needs a landmark source")
    if box is not None and not _overlaps(box, width, height):
        raise ValueError(f"{name}: the avatar box {box} lies outside the {width}x{height} image")
    if kind == "human" and (box is None or faces is not None):
        assert source is not None
        return _prepare_group(name, image, scale, source, box=box, faces=faces, mask_crop=mask_crop,
                              segmenter=segmenter)

    landmarks, layout, num_faces = np.zeros((0, 2), np.float32), MEDIAPIPE_478, 0
    if box is not None:
        params = fc.params_from_box(box.x * scale, box.y * scale, box.size * scale)
        if kind == "human":
            assert source is not None
            layout = source.layout
            found = source.detect_faces(image)
            inside = [f for f in found if _inside(f.mean(axis=0), params)]
            num_faces = len(found)
            if inside:
                landmarks = inside[0]
            else:
                log.info("%s: no face detected in the box %s; no eye/lip retargeting", name, box)
    else:
        rect = find_cat_face(image)
        if rect is None:
            raise NoFaceError(f"{name}: no cat face found; give the face's square with --avatar-box X,Y,SIZE")
        params = fc.params_from_box(*cat_crop_box(rect))
        num_faces = 1
    return _framed_face(image, scale, landmarks, layout, params, kind=kind, box=box, num_faces=num_faces,
                        mask_crop=mask_crop,
                        person_mask=None if segmenter is None else segmenter.segment(image))


def _prepare_group(name: str, image: np.ndarray, scale: float, source: LandmarkSource, *, box: AvatarBox | None,
                   faces: tuple[int, ...] | None, mask_crop: np.ndarray | None,
                   segmenter: PersonSegmenter | None) -> AvatarFace:
    """A human avatar framed from its detected faces (see ``prepare_avatar_face``)."""
    layout = source.layout
    found = detect_faces_windowed(source, image)
    if not found:
        raise NoFaceError(f"{name}: no face found; for a cartoon give the face's square with "
                          "--avatar-box X,Y,SIZE, for an animal use --avatar-kind animal")
    if len(found) > MAX_GROUP_FACES:
        log.info("%s: %d faces found, using the %d largest", name, len(found), MAX_GROUP_FACES)
    # detect_faces gives the largest first: keep those, then number them left to right
    numbered = sorted(found[:MAX_GROUP_FACES], key=lambda f: float(face_centre(f)[0]))
    selected = tuple(range(1, len(numbered) + 1)) if faces is None else tuple(sorted(set(faces)))
    missing = [n for n in selected if not 1 <= n <= len(numbered)]
    if missing:
        raise NoFaceError(f"{name}: face {missing[0]} asked for (--faces), but {len(numbered)} "
                          f"face{'s' if len(numbered) != 1 else ''} found")
    if len(numbered) > 1:
        log.info("%s: %d faces found, animating %s", name, len(numbered), ", ".join(map(str, selected)))
    person_mask = None if segmenter is None else segmenter.segment(image)
    centres = np.stack([face_centre(f) for f in numbered])
    group: list[AvatarFace] = []
    for n in selected:
        landmarks, params, face_box = numbered[n - 1], None, None
        if box is not None and not group:      # the box corrects the first selected face's crop
            params = fc.params_from_box(box.x * scale, box.y * scale, box.size * scale)
            face_box = box
            if not _inside(landmarks.mean(axis=0), params):
                log.info("%s: face %d is not in the box %s; no eye/lip retargeting", name, n, box)
                landmarks = np.zeros((0, 2), np.float32)
        if params is None:
            params = fc.crop_params(landmarks, layout, fc.AVATAR_CROP)
        face = _framed_face(image, scale, landmarks, layout, params, kind="human", box=face_box,
                            num_faces=len(found), mask_crop=mask_crop, person_mask=person_mask, number=n)
        if len(numbered) > 1:
            face = replace(face, paste=_regional(face.paste, centres, n - 1))
        group.append(face)
    if len(group) == 1:
        return group[0]
    union = 1.0 - np.prod([1.0 - f.paste.mask for f in group], axis=0, dtype=np.float32)
    return replace(group[0], others=tuple(group[1:]), group_paste=fc.paste_mask_from_array(union))


def _regional(paste: fc.PasteMask, centres: np.ndarray, index: int) -> fc.PasteMask:
    """``paste`` times face ``index``'s region of the split between ``centres`` (in its box only)."""
    x0, y0, x1, y1 = paste.box
    mask = paste.mask.copy()
    if x1 > x0 and y1 > y0:
        region = region_in_box(centres, index, paste.box)
        mask[y0:y1, x0:x1] *= region.reshape(y1 - y0, x1 - x0, *([1] * (mask.ndim - 2)))
    return fc.paste_mask_from_array(mask)


def _framed_face(image: np.ndarray, scale: float, landmarks: np.ndarray, layout: LandmarkLayout,
                 params: fc.CropParams, *, kind: AvatarKind, box: AvatarBox | None, num_faces: int,
                 mask_crop: np.ndarray | None, person_mask: np.ndarray | None, number: int = 1) -> AvatarFace:
    """One face of ``image`` cropped by ``params``: crop, network input, ratios and paste mask."""
    # the official framing keeps its black border (parity); a box is padded with the edge colour
    border: fc.BorderMode = "zeros" if box is None and kind == "human" else "replicate"
    transform = fc.transform_from_params(params, fc.AVATAR_CROP.dsize)
    crop = fc.warp_to_crop(image, transform, precise=True, border=border)
    mask = feathered_square_mask(fc.AVATAR_CROP.dsize) if mask_crop is None else mask_crop
    paste = fc.prepare_paste_mask(mask, transform.M_c2o, (image.shape[1], image.shape[0]))
    if box is None:
        x, y, side = fc.box_from_params(params)
        box = AvatarBox(x / scale, y / scale, side / scale)
    found = landmarks.shape[0] > 0
    return AvatarFace(image=image, landmarks=landmarks, layout=layout, transform=transform, crop=crop,
                      network_input=fc.resize_for_network(crop),
                      eye_ratios=eye_open_ratios(landmarks, layout) if found else None,
                      lip_ratio=lip_open_ratio(landmarks, layout) if found else None,
                      paste=paste, num_faces=num_faces, person_mask=person_mask,
                      kind=kind, box=box, image_scale=scale, number=number)


def avatar_face_from_crop(crop: np.ndarray, eye_ratios: np.ndarray | None, lip_ratio: np.ndarray | None, *,
                          kind: AvatarKind = "human", box: AvatarBox | None = None) -> AvatarFace:
    """An ``AvatarFace`` that is its own 512 crop (identity transform, no landmarks): what a render
    server makes of the crop and ratios a client uploads. Its network input is made exactly as the
    client's is; its paste-back fields are valid but unused (the client pastes back). The ratios
    come both or neither (a face without landmarks); ``box`` is only carried along."""
    side = fc.AVATAR_CROP.dsize
    if crop.shape != (side, side, 3) or crop.dtype != np.uint8:
        raise ValueError(f"avatar crop: expected {side}x{side}x3 uint8, got {crop.shape} {crop.dtype}")
    if (eye_ratios is None) != (lip_ratio is None):
        raise ValueError("avatar ratios: expected both eye and lip ratios, or neither")
    kind = check_avatar_kind(kind)
    identity = np.eye(3, dtype=np.float64)[:2]
    transform = fc.CropTransform(M_o2c=identity, M_c2o=identity.copy(), dsize=side)
    return AvatarFace(image=crop, landmarks=np.zeros((0, 2), np.float32), layout=MEDIAPIPE_478,
                      transform=transform, crop=crop, network_input=fc.resize_for_network(crop),
                      eye_ratios=None if eye_ratios is None else np.asarray(eye_ratios, np.float32).reshape(1, 2),
                      lip_ratio=None if lip_ratio is None else np.asarray(lip_ratio, np.float32).reshape(1, 1),
                      paste=fc.prepare_paste_mask(feathered_square_mask(side), identity, (side, side)), num_faces=1,
                      kind=kind, box=box)


def avatar_group_from_faces(faces: Sequence[AvatarFace]) -> AvatarFace:
    """The faces of one group (e.g. each ``avatar_face_from_crop`` of a client's K crops) as one
    ``AvatarFace``: the first, numbered 1, with the others (numbered 2..K) as its ``others``, as
    ``prepare_avatar_face`` gives a group photo (``prepare_avatar`` then runs F and M on them as one
    batch). No ``group_paste``: a render server's faces are never pasted. One face: itself."""
    if not faces:
        raise ValueError("a group needs at least one face")
    if len(faces) > MAX_GROUP_FACES:
        raise ValueError(f"a group has at most {MAX_GROUP_FACES} faces, got {len(faces)}")
    if len({f.kind for f in faces}) > 1:
        raise ValueError("the faces of a group are of one kind")
    if len(faces) == 1:
        return faces[0]
    numbered = [replace(f, others=(), group_paste=None, number=i + 1) for i, f in enumerate(faces)]
    return replace(numbered[0], others=tuple(numbered[1:]))


def _overlaps(box: AvatarBox, width: int, height: int) -> bool:
    return box.x < width and box.y < height and box.x + box.size > 0 and box.y + box.size > 0


def _inside(point: np.ndarray, params: fc.CropParams) -> bool:
    half = params.side / 2
    return bool(abs(point[0] - params.center_x) <= half and abs(point[1] - params.center_y) <= half)
