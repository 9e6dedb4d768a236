"""The threaded live loop: capture -> tracking -> animation -> output.

Each stage runs in its own thread; threads are thin wrappers that move packets between bounded
queues and call the stage's ``process``. In live mode a full queue drops its oldest packet, so a
slow stage never builds up latency; in lossless mode (offline rendering of a video file) queues
block instead and every frame is processed.

Privacy: the camera frame only travels from capture to tracking. The tracking stage passes on the
face crop the motion extractor needs, the animation stage passes on only the rendered avatar.
"""
from __future__ import annotations

import collections
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..animation.frames import TRACKED, AnimatedFrame, FrameAnimator
from ..face.driving import DrivingCropper, DrivingFace
from .capture import FrameSource
from .sinks import OutputStage

log = logging.getLogger(__name__)

_END = object()          # end of stream, passed down the chain


@dataclass
class CapturedFrame:
    index: int
    t_capture: float     # perf_counter seconds: when the frame was read (latency is measured from it)
    image: np.ndarray
    times: dict[str, float] = field(default_factory=dict)
    t_motion: float = 0.0   # seconds on the motion's own timeline (smoothing, face lost): see Pipeline


@dataclass
class TrackedFrame:
    index: int
    t_capture: float
    face: DrivingFace | None
    times: dict[str, float]
    t_motion: float = 0.0


@dataclass
class OutputFrame:
    index: int
    t_capture: float
    frame: AnimatedFrame
    times: dict[str, float]


class FrameQueue:
    """Bounded queue; ``drop_oldest`` makes ``put`` replace the oldest item instead of waiting."""

    def __init__(self, maxsize: int, drop_oldest: bool) -> None:
        self._q: queue.Queue = queue.Queue(maxsize)
        self.drop_oldest = drop_oldest
        self.dropped = 0

    def put(self, item: Any, stop: threading.Event) -> None:
        if self.drop_oldest and item is not _END:
            while True:                      # never wait: make room by dropping the oldest
                try:
                    self._q.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._q.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        while not stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def get(self, stop: threading.Event) -> Any:
        while not stop.is_set():
            try:
                return self._q.get(timeout=0.05)
            except queue.Empty:
                continue
        return _END


@dataclass(frozen=True)
class StatsSnapshot:
    """The pipeline's figures at one moment; rates and medians over the last ``window`` outputs."""

    fps: float                       # output frames per second (0 before two frames are out)
    latency_ms: float                # median capture-to-output latency, milliseconds
    stage_ms: dict[str, float]       # median milliseconds per stage, in the order the stages first reported
    frames_out: int                  # frames through the output stage since the start
    frames_tracked: int              # of those, frames animated from a tracked face


class PipelineStats:
    """Per-stage milliseconds, output frame rate and capture-to-output latency (last ~2 s)."""

    def __init__(self, window: int = 120) -> None:
        self._lock = threading.Lock()
        self.stage_ms: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=window))
        self.latency_ms: collections.deque = collections.deque(maxlen=window)
        self.output_times: collections.deque = collections.deque(maxlen=window)
        self.frames_out = 0
        self.frames_tracked = 0

    def record(self, packet: OutputFrame, t_out: float) -> None:
        with self._lock:
            for stage, ms in packet.times.items():
                self.stage_ms[stage].append(ms)
            self.latency_ms.append((t_out - packet.t_capture) * 1000)
            self.output_times.append(t_out)
            self.frames_out += 1
            self.frames_tracked += packet.frame.status in TRACKED

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            times = list(self.output_times)
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
            return StatsSnapshot(
                fps=fps,
                latency_ms=float(np.median(self.latency_ms)) if self.latency_ms else 0.0,
                stage_ms={k: float(np.median(v)) for k, v in self.stage_ms.items() if v},
                frames_out=self.frames_out,
                frames_tracked=self.frames_tracked,
            )

    def summary(self) -> str:
        s = self.snapshot()
        stages = ", ".join(f"{k} {v:.1f} ms" for k, v in s.stage_ms.items())
        return f"{s.fps:.1f} fps, latency {s.latency_ms:.0f} ms; {stages}"


class Pipeline:
    """Runs the four stages in threads. ``max_tracked_frames`` stops after that many frames
    animated from a tracked face; ``on_frame`` sees every output (after the sinks). A live camera
    that stops delivering is re-opened every second until it is back (``camera_lost`` meanwhile);
    a video file ends the stream.

    The times the tracking and animation stages see (smoothing, face lost) are the capture times,
    except in lossless mode, where they are the video's own (frame index / frame rate): an offline
    render then comes out the same however long each frame takes."""

    def __init__(self, camera: FrameSource, tracking: DrivingCropper, animator: FrameAnimator,
                 output: OutputStage, *, lossless: bool = False, max_tracked_frames: int | None = None,
                 on_frame: Callable[[OutputFrame], None] | None = None,
                 on_tracked: Callable[[DrivingFace | None], None] | None = None,
                 keep_outputs_open: bool = False) -> None:
        self.camera, self.tracking, self.animator, self.output = camera, tracking, animator, output
        self.lossless = lossless
        self.max_tracked_frames = max_tracked_frames
        self.on_frame = on_frame
        self.on_tracked = on_tracked      # local monitor only (the app's webcam inset), never an output
        self.keep_outputs_open = keep_outputs_open
        self.camera_lost = False
        self.interrupted = False          # ``run`` was ended by Ctrl+C
        self.stats = PipelineStats()
        self.stop_event = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        drop = not lossless
        self.q_captured = FrameQueue(1 if drop else 4, drop)
        self.q_tracked = FrameQueue(1 if drop else 4, drop)
        self.q_output = FrameQueue(2 if drop else 4, drop)
        self.threads = [
            threading.Thread(target=self._guard(self._capture_loop), name="capture", daemon=True),
            threading.Thread(target=self._guard(self._tracking_loop), name="tracking", daemon=True),
            threading.Thread(target=self._guard(self._animation_loop), name="animation", daemon=True),
            threading.Thread(target=self._guard(self._output_loop), name="output", daemon=True),
        ]

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Pipeline:
        # Python hands the GIL over every 5 ms by default: with four threads that quantum, not the
        # work, would set the frame rate and the latency. A shorter one lets stages interleave.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for all threads; True when they all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self.threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def run(self) -> None:
        """Start, wait until the stream ends or ``stop`` (Ctrl+C stops too), and shut down."""
        self.start()
        try:
            while not self.finished.wait(0.1):
                if self.stop_event.is_set():
                    break
        except KeyboardInterrupt:
            log.info("interrupted")
            self.interrupted = True
        finally:
            self.shutdown()
        if self.error is not None:
            raise self.error

    def shutdown(self, timeout: float = 1.0) -> bool:
        """Stop and join all threads. A network call cannot be interrupted: if one is in flight
        after ``timeout`` (seconds-long frames on a CPU), wait for it rather than abandon a thread
        inside the runtime."""
        self.stop()
        ok = self.join(timeout)
        if not ok:
            busy = ", ".join(t.name for t in self.threads if t.is_alive())
            log.info("waiting for the frame in flight (%s) to finish", busy)
            ok = self.join(None)
        return ok

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except BaseException as e:  # noqa: BLE001 - reported once, then everything stops
                log.exception("%s stage failed", threading.current_thread().name)
                self.error = e
                self.stop_event.set()
        return run

    # -- stage loops ---------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        index = 0
        try:
            while not self.stop_event.is_set():
                self.camera.wait()
                t0 = time.perf_counter()
                image = self.camera.read()
                if image is None:
                    if self.camera.is_file or not self._reconnect():
                        break
                    continue
                t1 = time.perf_counter()
                t_motion = index / self.camera.fps if self.lossless else t1
                self.q_captured.put(CapturedFrame(index, t1, image, {"capture": (t1 - t0) * 1000}, t_motion),
                                    self.stop_event)
                index += 1
        finally:
            self.camera.release()
            self.q_captured.put(_END, self.stop_event)

    def _reconnect(self) -> bool:
        """Live camera lost: retry once a second until it delivers again or we are stopped."""
        self.camera_lost = True
        log.warning("camera stopped delivering frames; retrying every second")
        while not self.stop_event.wait(1.0):
            try:
                self.camera.reopen()
            except Exception as e:  # noqa: BLE001 - unplugged, busy, ...: keep trying
                log.debug("camera re-open failed: %s", e)
                continue
            log.info("camera is back")
            self.camera_lost = False
            return True
        return False

    def _packets(self, q: FrameQueue) -> Iterator[Any]:
        """The packets of ``q`` until the end of the stream (or until stopped)."""
        while (item := q.get(self.stop_event)) is not _END:
            yield item

    def _tracking_loop(self) -> None:
        try:
            for item in self._packets(self.q_captured):
                face = _timed(item.times, "tracking", self.tracking.process, item.image, item.t_motion)
                if self.on_tracked is not None:
                    self.on_tracked(face)
                self.q_tracked.put(TrackedFrame(item.index, item.t_capture, face, item.times, item.t_motion),
                                   self.stop_event)
        finally:
            self.tracking.close()
            self.q_tracked.put(_END, self.stop_event)

    def _animation_loop(self) -> None:
        tracked = 0
        try:
            for item in self._packets(self.q_tracked):
                frame = _timed(item.times, "animation", self.animator.process, item.face, item.t_motion)
                self.q_output.put(OutputFrame(item.index, item.t_capture, frame, item.times), self.stop_event)
                tracked += frame.status in TRACKED
                if self.max_tracked_frames is not None and tracked >= self.max_tracked_frames:
                    break     # render nothing more: the output stage ends after writing these
        finally:
            self.q_output.put(_END, self.stop_event)

    def _output_loop(self) -> None:
        try:
            # the stream also ends after max_tracked_frames: the animation stage ends it
            for item in self._packets(self.q_output):
                _timed(item.times, "output", self.output.process, item.frame.image, item.frame.status in TRACKED)
                self.stats.record(item, time.perf_counter())
                if self.on_frame is not None:
                    self.on_frame(item)
        finally:
            if not self.keep_outputs_open:
                self.output.close()
            self.stop_event.set()     # the last stage is done: nothing upstream needs to run on
            self.finished.set()


def _timed(times: dict[str, float], stage: str, process: Callable[..., Any], *args: Any) -> Any:
    """``process(*args)``, with its milliseconds recorded in ``times[stage]``."""
    t0 = time.perf_counter()
    result = process(*args)
    times[stage] = (time.perf_counter() - t0) * 1000
    return result
