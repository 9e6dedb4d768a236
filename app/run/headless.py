"""Headless live loop: avatar + camera (or video file) -> virtual camera and/or a video file."""
from __future__ import annotations

import argparse
import logging

from engines.backend import InferenceBackend

from ..animation.frames import FrameAnimator
from ..cli.console import EXIT_INTERRUPTED, EXIT_OK
from ..cli.options import backend_from_args
from ..cli.output_paths import check_output_file
from ..live.capture import CameraRequest, CameraSource
from ..live.sinks import OutputStage, RecordingError, Sink, VideoRecorder, VirtualCameraSink, VirtualCameraUnavailable
from ..live.wiring import build_pipeline
from ..settings import DEFAULT_FRAME_SIZE, AnimationSettings, LiveSettings
from .avatar_options import avatar_choice_from_args
from .renderer import LocalRenderer, RemoteRenderer, remote_server_from_args

log = logging.getLogger(__name__)


class NoTrackedFaceError(ValueError):
    """A video file given as the camera showed no face that could be tracked."""


def run_headless(args: argparse.Namespace, settings: AnimationSettings) -> int:
    """Exit status ``EXIT_OK`` when done, ``EXIT_INTERRUPTED`` after Ctrl+C. Errors of the user's
    input propagate as exceptions that ``main`` turns into one line and ``EXIT_BAD_INPUT``: found
    before anything is opened (the output path), while opening (weights, avatar, camera) or at the
    end (a recording that failed, a video file without a face)."""
    if args.record:
        check_output_file(args.record, VideoRecorder.SUFFIXES, "--record")
    # the run's own, with the networks of the avatar's kind: closed at its end
    backend = None if args.remote else backend_from_args(args, weight_set=avatar_choice_from_args(args).kind)
    try:
        return _animate(args, make_animator(args, LiveSettings(settings), backend))
    finally:
        if backend is not None:
            backend.close()


def _animate(args: argparse.Namespace, animator: FrameAnimator) -> int:
    """``run_headless`` from the camera on: the loop, then its report."""
    width, height = args.camera_size or DEFAULT_FRAME_SIZE
    args.camera = args.camera or "0"
    # A video file is rendered frame by frame (lossless) unless it loops, which makes it a live stand-in.
    camera = CameraSource(CameraRequest(args.camera, width=width, height=height, loop=args.loop, paced=args.loop))
    sinks = []
    recorder = None
    if args.record:
        recorder = VideoRecorder(args.record, camera.fps, only_tracked=args.max_frames is not None)
        sinks.append(recorder)
    want_vcam = args.virtual_camera if args.virtual_camera is not None else not camera.is_file
    if want_vcam:
        try:
            sinks.append(VirtualCameraSink(*args.vcam_size, args.vcam_fps))
        except VirtualCameraUnavailable as e:
            log.warning("%s", e)
    if not sinks:
        log.warning("no output: neither --record nor a virtual camera; frames are rendered and dropped")

    def on_sink_failed(sink: Sink, error: Exception) -> None:
        if sink is recorder:
            pipeline.stop()           # a recording asked for and lost: the run has no point going on

    pipeline = build_pipeline(camera, animator, OutputStage(sinks, on_sink_failed),
                              lossless=camera.is_file and not args.loop, max_tracked_frames=args.max_frames)
    try:
        pipeline.run()
    finally:
        animator.close()
    s = pipeline.stats.snapshot()
    log.info("done: %d frames out (%d with a tracked face); %s", s.frames_out, s.frames_tracked,
             pipeline.stats.summary())
    if recorder is not None:
        log.info("recorded %d frames to %s", recorder.frames, recorder.path)
        if recorder.error is not None:
            raise RecordingError(f"recording stopped after {recorder.frames} frames: {recorder.error}")
    if pipeline.interrupted:
        return EXIT_INTERRUPTED
    if camera.is_file and not args.loop:
        check_tracked_frames(args.camera, s.frames_out, s.frames_tracked, args.max_frames)
    return EXIT_OK


def make_animator(args: argparse.Namespace, live: LiveSettings, backend: InferenceBackend | None) -> FrameAnimator:
    """The local animator on ``backend`` (which holds the networks of the avatar's kind; the avatar,
    its kind and box from ``args``), or with ``--remote`` (``backend`` None) one that animates on a
    render server, connected (``RemoteError`` when the server cannot be used)."""
    renderer = RemoteRenderer(remote_server_from_args(args)) if backend is None else LocalRenderer(backend)
    return renderer.animator(live, renderer.load_avatar(avatar_choice_from_args(args)))


def check_tracked_frames(video: str, frames: int, tracked: int, wanted: int | None) -> None:
    """At the end of a video file (``frames`` rendered, ``tracked`` of them from a face): when
    ``wanted`` frames with a face were asked for (``--max-frames``), none is an error
    (``NoTrackedFaceError``) and fewer a warning; otherwise none is a warning."""
    if frames == 0:
        raise NoTrackedFaceError(f"no frame could be read from {video}")
    if tracked == 0:
        message = f"no face found in the {frames} frames of {video}"
        if wanted is not None:
            raise NoTrackedFaceError(f"{message}; use a video where a face looks at the camera")
        log.warning("%s: the output shows the avatar only", message)
    elif wanted is not None and tracked < wanted:
        log.warning("only %d of the %d frames asked for (--max-frames) had a tracked face: %s has %d frames",
                    tracked, wanted, video, frames)
