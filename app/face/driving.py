"""The tracking stage: a webcam frame in, the face crop the motion extractor needs out (or None
when there is no face), with the crop framing smoothed over time."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import crop as fc
from .ratios import eye_open_ratios, lip_open_ratio
from .smoothing import CropSmoother, CropSmoothing
from .tracker import LandmarkSource


@dataclass(frozen=True)
class DrivingFace:
    network_input: np.ndarray    # 256 x 256 x 3 BGR
    landmarks: np.ndarray        # N x 2, frame pixels
    transform: fc.CropTransform  # frame <-> 512 crop (smoothed)
    eye_ratios: np.ndarray       # 1 x 2
    lip_ratio: np.ndarray        # 1 x 1

    @property
    def open_ratios(self) -> np.ndarray:
        """[left eye, right eye, lip] open ratios, as one vector (their own dtype)."""
        return np.concatenate([self.eye_ratios.reshape(-1)[:2], self.lip_ratio.reshape(-1)[:1]])


class DrivingCropper:
    """Tracks the face in each frame and crops it in the official driving framing
    (512, scale 2.2, vy -0.1, then area-resized to 256)."""

    def __init__(self, source: LandmarkSource, smoothing: CropSmoothing | None = None,
                 config: fc.CropConfig = fc.DRIVING_CROP) -> None:
        self.source = source
        self.config = config
        self.smoother = CropSmoother(smoothing)

    def process(self, frame_bgr: np.ndarray, timestamp: float) -> DrivingFace | None:
        """``timestamp`` in seconds (capture time) drives the smoothing."""
        landmarks = self.source.track(frame_bgr)
        if landmarks is None:
            self.smoother.reset()   # the next face may be elsewhere: do not glide there
            return None
        layout = self.source.layout
        params = self.smoother.update(fc.crop_params(landmarks, layout, self.config), timestamp)
        transform = fc.transform_from_params(params, self.config.dsize)
        return DrivingFace(network_input=fc.crop_for_network(frame_bgr, params), landmarks=landmarks,
                           transform=transform,
                           eye_ratios=eye_open_ratios(landmarks, layout), lip_ratio=lip_open_ratio(landmarks, layout))

    def reset(self) -> None:
        self.smoother.reset()
        self.source.reset()

    def close(self) -> None:
        """Close the landmark source (the tracking stage owns it)."""
        self.source.close()
