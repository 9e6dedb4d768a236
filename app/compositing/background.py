"""Output backgrounds: the avatar output composited over a blurred, plain-colour or picture
background along a person mask (``OutputSettings.background``).

Only the avatar output is segmented, never the camera. An output kind (the full picture or the
face crop) has a fixed ``OutputLayout``: the still picture, the region that the animated crop
changes (the paste-back box, or the whole crop) and the animated share of each region pixel. The
still picture is segmented once per avatar; so everything outside the region, with the background
composited in, is made once per avatar and mode. Per frame only the region is composited:

    probability = weight * segmented region + (1 - weight) * still probability
    alpha       = smoothstep of the probability between ``EDGE_LOW`` and ``EDGE_HIGH`` (the
                  feathered edge: exactly 0 well outside the person, exactly 1 well inside)
    region      = alpha * frame + (1 - alpha) * background

The region is segmented at a reduced size (``SEGMENT_SIDE``) at a lower rate and smoothed over
time (``PersonMaskTracker``); a frame is composited with the mask as it stood before that frame
(one frame behind), so the GPU path can upload the small mask with the frame's inputs and fetch
the small unkeyed region with the frame (on the frames that segment it): the device chain keeps
its one transfer each way. What is made from the mask is kept until the mask changes.
Host images are H x W x 3 uint8 BGR; device planes are 3 x H x W uint8 RGB (``device_io``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..avatar.face import AvatarFace
from ..face.mask import feathered_square_mask
from ..imaging.easing import smoothstep
from ..imaging.image_io import ImageError, load_image
from ..imaging.segmentation import SEGMENT_EVERY, PersonMaskTracker, PersonSegmenter, segmentation_size
from ..settings import BackgroundMode, OutputSettings

log = logging.getLogger(__name__)

EDGE_LOW, EDGE_HIGH = 0.2, 0.55     # person-probability ramp of the feathered edge
BLUR_SIGMA = 0.02                   # "blur": Gaussian sigma as a fraction of the picture's longer side


def edge_alpha(probability: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Person probability in [0, 1] -> alpha: the smoothstep between ``EDGE_LOW`` and
    ``EDGE_HIGH`` (exactly 0 and 1 beyond them); numpy arrays or torch tensors."""
    return smoothstep((probability - EDGE_LOW) / (EDGE_HIGH - EDGE_LOW))


# uint8 probability -> alpha (float32, exactly 0 and 1 at the ends)
ALPHA_TABLE = edge_alpha(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)


def alpha_from_probability(probability: np.ndarray) -> np.ndarray:
    """uint8 person probability (0..255) -> float32 alpha in [0, 1] (the feathered edge)."""
    return cv2.LUT(probability, ALPHA_TABLE)


def backdrop(mode: BackgroundMode, still: np.ndarray) -> np.ndarray:
    """The background picture of ``mode`` at ``still``'s size (H x W x 3 uint8 BGR); ``keep``:
    ``still`` itself. ``ImageError`` when the image of an ``image`` mode cannot be read."""
    h, w = still.shape[:2]
    if mode.kind == "color":
        return np.full_like(still, mode.color[::-1])
    if mode.kind == "blur":
        # blurred at an eighth of the size: the same look for a fraction of the work
        small = cv2.resize(still, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), max(w, h) * BLUR_SIGMA / 8)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if mode.kind == "image":
        return cover(load_image(mode.path), w, h)
    return still


def cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` scaled to cover ``width`` x ``height`` and centre-cropped to it."""
    ih, iw = image.shape[:2]
    scale = max(width / iw, height / ih)
    sw, sh = max(width, round(iw * scale)), max(height, round(ih * scale))
    scaled = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x0, y0 = (sw - width) // 2, (sh - height) // 2
    return np.ascontiguousarray(scaled[y0:y0 + height, x0:x0 + width])


@dataclass(frozen=True)
class OutputLayout:
    """The fixed geometry of one output kind.

    ``still``: the picture shown without animation (H x W x 3 uint8 BGR); ``box``: (x0, y0, x1, y1),
    the region a frame changes; ``weight``: h x w float32 in [0, 1], the animated share of each
    region pixel, and ``complement``: 1 - ``weight``; ``probability``: H x W uint8, the still
    picture's person probability (0..255)."""

    still: np.ndarray
    box: tuple[int, int, int, int]
    weight: np.ndarray
    complement: np.ndarray
    probability: np.ndarray

    @property
    def whole(self) -> bool:
        """True when the region is the whole picture (the crop-only output)."""
        return self.box == (0, 0, self.still.shape[1], self.still.shape[0])

    def region(self, image: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        return image[y0:y1, x0:x1]


def output_layout(face: AvatarFace, paste_back: bool, probability: np.ndarray) -> OutputLayout:
    """The layout of the full picture (``paste_back``) or of the face crop, given the avatar image's
    person probability (H x W float32 in [0, 1])."""
    prob_u8 = (np.clip(probability, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if paste_back:
        paste = face.output_paste           # a group photo: the union of its faces' paste masks
        if paste.box_weights is not None and paste.box_complement is not None:   # the paste-back's own
            return OutputLayout(face.image, paste.box, paste.box_weights, paste.box_complement, prob_u8)
        x0, y0, x1, y1 = paste.box
        weight = np.ascontiguousarray(paste.mask[y0:y1, x0:x1].reshape(y1 - y0, x1 - x0, -1)[..., 0], np.float32)
        return OutputLayout(face.image, paste.box, weight, 1.0 - weight, prob_u8)
    side = face.crop.shape[0]
    prob_crop = cv2.warpAffine(prob_u8, face.transform.M_o2c[:2], (side, side), flags=cv2.INTER_LINEAR)
    weight = feathered_square_mask(side, channels=1).astype(np.float32) / 255.0
    return OutputLayout(face.crop, (0, 0, side, side), weight, 1.0 - weight, prob_crop)


@dataclass
class _Composite:
    """One layout in one mode: the still picture with the background, and the background's region."""

    mode: BackgroundMode
    still: np.ndarray
    region_backdrop: np.ndarray
    device: dict[torch.device, tuple[torch.Tensor, ...]]


class _LayoutState:
    def __init__(self, layout: OutputLayout, tracker: PersonMaskTracker) -> None:
        self.layout = layout
        self.tracker = tracker
        x0, y0, x1, y1 = layout.box
        self.region_probability = np.ascontiguousarray(layout.probability[y0:y1, x0:x1])
        self.composite: _Composite | None = None
        # the region's alpha (and 1 - alpha) from the tracker's map, kept until the map changes:
        # (tracker version, alpha, complement) on the host; (version, device, alpha) on a device
        self.host_alpha: tuple[int, np.ndarray, np.ndarray] | None = None
        self.device_alpha: tuple[int, torch.device, torch.Tensor] | None = None


class BackgroundCompositor:
    """Composites one animator's output frames for the settings' background mode.

    ``segmenter``: made on first need (a background mode other than ``keep``) and reused; the still
    avatar is segmented once (or its ``AvatarFace.person_mask`` used), the region every
    ``every``-th frame. ``reset`` forgets the avatar (call it when the avatar changes)."""

    def __init__(self, segmenter: Callable[[], PersonSegmenter], *, every: int = SEGMENT_EVERY,
                 rate: float = 0.5) -> None:
        self._make_segmenter = segmenter
        self._segmenter: PersonSegmenter | None = None
        self.every, self.rate = every, rate
        self._probability: np.ndarray | None = None
        self._states: dict[bool, _LayoutState] = {}

    def reset(self) -> None:
        self._probability = None
        self._states.clear()

    def close(self) -> None:
        if self._segmenter is not None:
            self._segmenter.close()
            self._segmenter = None

    # -- host -----------------------------------------------------------------------------------
    def still(self, face: AvatarFace, s: OutputSettings) -> np.ndarray:
        """The still output (avatar image, or crop when not pasting back) with the background."""
        if s.background.keeps:
            return face.image if s.paste_back else face.crop
        return self._composite(face, s).still

    def compose(self, frame: np.ndarray, face: AvatarFace, s: OutputSettings) -> np.ndarray:
        """``frame`` (the output as pasted, or the crop; unmirrored) with the background; then the
        frame's region is shown to the mask tracker for the next frames."""
        if s.background.keeps:
            return frame
        state = self._state(face, s.paste_back)
        composite = self._composite(face, s)
        region = state.layout.region(frame)
        alpha, complement = self._host_alpha(state)
        blended = cv2.blendLinear(region, composite.region_backdrop, alpha, complement)
        tracker = state.tracker
        tracker.observe(cv2.resize(region, tracker.size, interpolation=cv2.INTER_AREA) if tracker.due else None)
        return self._place(blended, state, composite)

    @staticmethod
    def _host_alpha(state: _LayoutState) -> tuple[np.ndarray, np.ndarray]:
        if state.host_alpha is None or state.host_alpha[0] != state.tracker.version:
            h, w = state.region_probability.shape
            segmented = cv2.resize(state.tracker.as_uint8(), (w, h), interpolation=cv2.INTER_LINEAR)
            probability = cv2.blendLinear(segmented, state.region_probability, state.layout.weight,
                                          state.layout.complement)
            alpha = alpha_from_probability(probability)
            state.host_alpha = (state.tracker.version, alpha, 1.0 - alpha)
        return state.host_alpha[1], state.host_alpha[2]

    @staticmethod
    def _place(region: np.ndarray, state: _LayoutState, composite: _Composite) -> np.ndarray:
        if state.layout.whole:
            return region
        out = composite.still.copy()
        x0, y0, x1, y1 = state.layout.box
        out[y0:y1, x0:x1] = region
        return out

    # -- device ---------------------------------------------------------------------------------
    def prepare(self, face: AvatarFace, s: OutputSettings, device: torch.device | None = None) -> None:
        """Make what a frame of ``s`` needs that changes only with the avatar, the layout or the
        mode: the layout, the still composite and (with ``device``) the constants of
        ``compose_on_device`` on that device. Call it before a frame's device work is queued: the
        constants go up from pageable memory, which waits for whatever is queued. Nothing is made
        for ``keep``."""
        if s.background.keeps:
            return
        composite = self._composite(face, s)
        if device is not None:
            self._device_constants(composite, self._state(face, s.paste_back), torch.device(device))

    def compose_on_device(self, planes: torch.Tensor, face: AvatarFace, s: OutputSettings,
                          upload: Callable[[str, np.ndarray], torch.Tensor],
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The region's planes (3 x h x w, 0..255, RGB: the paste-back box or the whole crop) with
        the background, and, when the mask tracker is ``due``, the unkeyed region at segmentation
        size (3 x h' x w' uint8 RGB; otherwise None), on the planes' device, queued without
        waiting. The small mask goes up through ``upload`` when it has changed; the constants are
        ``prepare``'s (made here if it was not called, which may wait for the device). Hand both,
        fetched, to ``finish``."""
        state = self._state(face, s.paste_back)
        backdrop_t, probability_t, weight_t = self._device_constants(self._composite(face, s), state, planes.device)
        tracker = state.tracker
        cached = state.device_alpha
        if cached is None or cached[0] != tracker.version or cached[1] != planes.device:
            segmented = upload("background_mask", tracker.as_uint8())
            segmented = F.interpolate(segmented[None, None].float(), size=tuple(planes.shape[1:]), mode="bilinear",
                                      align_corners=False)
            probability = torch.lerp(probability_t, segmented, weight_t) / 255.0
            cached = state.device_alpha = (tracker.version, planes.device, edge_alpha(probability))
        frame = planes[None].float()
        region = torch.lerp(backdrop_t, frame, cached[2])[0].round_().clamp_(0, 255).to(torch.uint8)
        if not tracker.due:
            return region, None
        w_small, h_small = tracker.size
        small = F.interpolate(frame, size=(h_small, w_small), mode="area")[0].round_().clamp_(0, 255).to(torch.uint8)
        return region, small

    def finish(self, region: np.ndarray, small: np.ndarray | None, face: AvatarFace,
               s: OutputSettings) -> np.ndarray:
        """The output from the fetched results of ``compose_on_device`` (BGR on the host)."""
        state = self._state(face, s.paste_back)
        state.tracker.observe(small)
        return self._place(region, state, self._composite(face, s))

    def _device_constants(self, composite: _Composite, state: _LayoutState,
                          device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in composite.device:
            def plane(a: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None].to(device)

            rgb = np.ascontiguousarray(composite.region_backdrop[..., ::-1], np.float32)
            composite.device[device] = (torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device),
                                        plane(state.region_probability), plane(state.layout.weight))
        return composite.device[device]

    # -- per avatar, layout and mode ------------------------------------------------------------
    def _state(self, face: AvatarFace, paste_back: bool) -> _LayoutState:
        state = self._states.get(paste_back)
        if state is None:
            layout = output_layout(face, paste_back, self._still_probability(face))
            x0, y0, x1, y1 = layout.box
            size = segmentation_size(x1 - x0, y1 - y0)
            initial = cv2.resize(layout.probability[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
            tracker = PersonMaskTracker(self.segmenter, initial.astype(np.float32) / 255.0,
                                        every=self.every, rate=self.rate)
            state = self._states[paste_back] = _LayoutState(layout, tracker)
        return state

    def _composite(self, face: AvatarFace, s: OutputSettings) -> _Composite:
        state = self._state(face, s.paste_back)
        if state.composite is None or state.composite.mode != s.background:
            layout = state.layout
            try:
                behind = backdrop(s.background, layout.still)
            except ImageError as e:
                log.warning("background image unusable, showing the avatar's own: %s", e)
                behind = layout.still
            alpha = alpha_from_probability(layout.probability)
            still = cv2.blendLinear(layout.still, behind, alpha, 1.0 - alpha)
            state.composite = _Composite(s.background, still, np.ascontiguousarray(layout.region(behind)), {})
        return state.composite

    def _still_probability(self, face: AvatarFace) -> np.ndarray:
        if self._probability is None:
            self._probability = face.person_mask if face.person_mask is not None else self.segmenter.segment(face.image)
        return self._probability

    @property
    def segmenter(self) -> PersonSegmenter:
        if self._segmenter is None:
            self._segmenter = self._make_segmenter()
        return self._segmenter

