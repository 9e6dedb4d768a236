"""Tracking stage: camera frame -> driving face crop (or None). The camera frame stops here:
later stages only receive the crop the motion extractor needs."""
from __future__ import annotations

from ..face.driving import DrivingCropper, DrivingFace
from ..face.smoothing import CropSmoothing
from ..face.tracker import LandmarkSource


class TrackingStage:
    def __init__(self, source: LandmarkSource, smoothing: CropSmoothing | None = None) -> None:
        self.cropper = DrivingCropper(source, smoothing)

    def process(self, frame, timestamp: float) -> DrivingFace | None:
        return self.cropper.process(frame, timestamp)

    def reset(self) -> None:
        self.cropper.reset()

    def close(self) -> None:
        self.cropper.source.close()
