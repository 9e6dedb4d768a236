"""Putting the live loop together: the one place that wraps a frame source, a landmark source, an
animator and the sinks into the four stages and a ``Pipeline``. The headless runner, the desktop
session, the benchmark and the tests all build their loop here."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from ..animation.frames import FrameAnimator
from ..face.driving import DrivingCropper, DrivingFace
from ..face.tracker import LandmarkSource, MediaPipeFaceMesh
from .capture import FrameSource
from .pipeline import OutputFrame, Pipeline
from .sinks import OutputStage, Sink


def build_pipeline(camera: FrameSource, animator: FrameAnimator, output: OutputStage | Sequence[Sink] = (), *,
                   landmarks: LandmarkSource | None = None, lossless: bool = False,
                   max_tracked_frames: int | None = None,
                   on_frame: Callable[[OutputFrame], None] | None = None,
                   on_tracked: Callable[[DrivingFace | None], None] | None = None,
                   keep_outputs_open: bool = False) -> Pipeline:
    """A pipeline (not started) from ``camera`` through tracking and ``animator`` to ``output``.

    ``output``: an ``OutputStage`` the caller keeps (to add or remove sinks while it runs), or the
    sinks of a new one. ``landmarks``: the tracking stage's source, closed when the stage ends;
    default a new MediaPipe face mesh. The keyword options are ``Pipeline``'s."""
    stage = output if isinstance(output, OutputStage) else OutputStage(list(output))
    tracking = DrivingCropper(landmarks if landmarks is not None else MediaPipeFaceMesh())
    return Pipeline(camera, tracking, animator, stage, lossless=lossless,
                    max_tracked_frames=max_tracked_frames, on_frame=on_frame, on_tracked=on_tracked,
                    keep_outputs_open=keep_outputs_open)
