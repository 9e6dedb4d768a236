"""The host-side finishing of animated crops into output frames: paste-back into the avatar image,
the output background, the mirror, and the images shown without a new crop (the still avatar and
the last output, held).

``OutputFinisher`` is the one implementation of that step: the local animator's CPU path and the
render server's client (``RemoteAnimator``) finish every crop with it, so a remote render with raw
frames equals the local one bit for bit. The local animator's GPU path pastes and composites on
the device (``paste_device``, ``BackgroundCompositor.compose_on_device``) and hands the fetched
result to ``finish_pasted``, so it shares the held image and its bookkeeping. A ``crop_only``
finisher (the render server's animator) outputs the crop as rendered, whatever the settings say.

Contract: a crop is the animated 512 x 512 x 3 uint8 BGR crop of the avatar's ``AvatarFace.crop``
framing, or for a group photo K such crops (K x 512 x 512 x 3, one per face of ``face.group``, in
its order); an output is H x W x 3 uint8 BGR, contiguous: the avatar image's size (paste-back) or the
crop's. Outputs may be the avatar's own arrays or shared with later calls (a held frame is the same
array): read them, never write into them. All methods are called from one thread (the animation
stage's), ``close`` after the last frame.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..avatar.face import AvatarFace
from ..face import crop as fc
from ..imaging.segmentation import MediaPipeSelfieSegmentation, PersonSegmenter
from ..settings import OutputSettings
from .background import BackgroundCompositor

# what an output is made of: the output settings' values; images kept for one are made anew for another
OutputKey = tuple[object, ...]
_OUTPUT_FIELDS = OutputSettings.field_names()


class OutputFinisher:
    """Finishes the crops of one animator for the settings' output fields (``paste_back``,
    ``mirror``, ``background``; the settings are read per call, from the frame's snapshot), and
    keeps the last output and its crop for the frames that show no new crop.

    ``segmenter``: makes the background's person segmenter, on first need (default: MediaPipe).
    ``crop_only``: the output is the bare crop, unmirrored, with the avatar's own background,
    whatever the settings' output fields say (the render server's animator, whose client finishes
    the crop for the user's output); the still output is the avatar's crop, and no segmenter is
    made; for a group photo its output is the K crops (K x 512 x 512 x 3). ``begin`` once per
    frame, before the frame's device work; ``reset`` when the avatar changes."""

    def __init__(self, face: AvatarFace,
                 segmenter: Callable[[], PersonSegmenter] = MediaPipeSelfieSegmentation, *,
                 crop_only: bool = False) -> None:
        self.face = face
        self.crop_only = crop_only
        self.background = BackgroundCompositor(segmenter)
        self._key: OutputKey | None = None
        self._last_image: np.ndarray | None = None
        self._last_crop: np.ndarray | None = None

    # -- per frame ------------------------------------------------------------------------------
    def begin(self, s: OutputSettings, device: torch.device | None = None) -> bool:
        """Start a frame of ``s``: when its output differs from the last frame's (background,
        paste-back or mirror), the held output is dropped and True returned (drop other images
        kept for the old output too). Then what the frame's compositing needs that changes only
        with the avatar, the layout or the mode is made (with ``device``: its constants there);
        call it before the frame's device work is queued (``BackgroundCompositor.prepare``)."""
        if self.crop_only:
            return False                    # one output, whatever the settings
        key = tuple(getattr(s, name) for name in _OUTPUT_FIELDS)
        changed = key != self._key
        if changed:
            self._key, self._last_image = key, None
        self.background.prepare(self.face, s, device)
        return changed

    def finish(self, crop: np.ndarray, s: OutputSettings) -> np.ndarray:
        """The output of an animated crop (or a group's K crops): pasted into the avatar image,
        each with its own face's transform and region-weighted paste mask, in turn (unless ``s``
        asks for the crop only: then the first face's crop, the selected face), with ``s``'s
        background, mirrored if asked; kept as the held output. A crop-only finisher keeps and
        returns the crop itself, a group's K crops as they came (K x 512 x 512 x 3: a render
        server sends each face's back to its client)."""
        crops = crop if crop.ndim == 4 else crop[None]
        group = self.face.group
        if crops.shape[0] != len(group):
            raise ValueError(f"crops: expected {len(group)} for the avatar's faces, got {crops.shape[0]}")
        if self.crop_only:
            self._last_crop = self._last_image = crops[0] if len(group) == 1 else crops
            return self._last_image
        face = self.face
        if s.paste_back:
            image = face.image
            for one, f in zip(crops, group, strict=True):
                image = fc.paste_back(one, f.transform.M_c2o, image, f.paste)
        else:
            image = crops[0]
        self._last_crop = crop
        return self._keep(self.background.compose(image, face, s), s)

    def finish_pasted(self, image: np.ndarray, s: OutputSettings) -> np.ndarray:
        """The output of a frame pasted and composited elsewhere (the device path; ``image`` is
        unmirrored): mirrored if asked and kept as the held output. No crop is kept for it. Not for
        a crop-only finisher (nothing is pasted for it)."""
        self._last_crop = None
        return self._keep(image, s)

    def still(self, s: OutputSettings) -> np.ndarray:
        """The output with no animation: the avatar image (or its crop) with the background."""
        if self.crop_only:
            return self.face.crop
        image = self.background.still(self.face, s)
        return mirrored(image) if s.mirror else image

    @property
    def last(self) -> np.ndarray | None:
        """The last output, if it was made for the current output (None after a change)."""
        return self._last_image

    def held(self, s: OutputSettings) -> np.ndarray:
        """What a frame without a new crop shows: the last output; after an output change, the
        last crop finished again for the new one; the still output before any crop."""
        if self._last_image is None and self._last_crop is not None:
            self.finish(self._last_crop, s)
        return self._last_image if self._last_image is not None else self.still(s)

    # -- per avatar -----------------------------------------------------------------------------
    def reset(self, face: AvatarFace) -> None:
        """Finish for ``face`` from now on: everything made for the previous avatar is dropped."""
        self.face = face
        self._last_image = self._last_crop = None
        self.background.reset()

    def set_face(self, face: AvatarFace) -> None:
        """Finish into ``face`` from the next frame on, keeping the held output: a video avatar's
        next source frame. Cheap with the ``keep`` background; another background is made anew for
        the new frame's image (re-segmented)."""
        if face is not self.face:
            self.face = face
            self.background.reset()

    def close(self) -> None:
        """Release the person segmenter (a later frame with a background would make a new one)."""
        self.background.close()

    def _keep(self, image: np.ndarray, s: OutputSettings) -> np.ndarray:
        self._last_image = mirrored(image) if s.mirror else image
        return self._last_image


def mirrored(image: np.ndarray) -> np.ndarray:
    """``image`` flipped left-right, contiguous (what the outputs expect)."""
    return np.ascontiguousarray(image[:, ::-1])
