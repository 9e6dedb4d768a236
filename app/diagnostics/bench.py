"""Benchmark of the whole live loop on a video file (frames scaled onto a 1280x720 canvas).

    python -m app.diagnostics.bench --backend torch --device cpu --frames 3      # real networks (kit weights)
    python -m app.diagnostics.bench --backend stub --tracking replay --seconds 10  # threading throughput
    python -m app.diagnostics.bench --backend stub --soak-minutes 20              # resident memory over time
    python -m app.diagnostics.bench --backend auto --device cuda --no-network-timing --seconds 20   # on a GPU
    python -m app.diagnostics.bench --save-landmarks d0.npz      # track once, save (app.live.replay), exit
    python -m app.diagnostics.bench --backend stub --tracking replay --landmarks d0.npz   # replay without MediaPipe

Prints per-stage milliseconds (medians), the networks' share, output frames/s and
capture-to-output latency. ``--tracking replay`` replays landmarks computed beforehand (with
``--landmarks FILE``, from a file, so MediaPipe need not be installed), so the figure shows what the
threads and the non-network stages sustain without MediaPipe's cost.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from engines import motion
from engines.backend import InferenceBackend
from engines.device import synced_ms
from engines.options import add_engine_arguments
from engines.registry import make_backend

from ..animation.animator import Animator
from ..avatar.framing import AvatarChoice
from ..avatar.loading import DEFAULT_AVATAR, load_avatar
from ..avatar.prepared import PreparedAvatar
from ..cli.console import native_output_silenced
from ..face.tracker import LandmarkSource, MediaPipeFaceMesh
from ..live.capture import FramePacer
from ..live.replay import load_landmarks, record_landmarks, save_landmarks
from ..live.sinks import Sink, VirtualCameraSink, letterbox
from ..live.wiring import build_pipeline
from ..settings import LiveSettings
from .tracking_bench import allowed_cpu_cores, default_video, frames_720p

if TYPE_CHECKING:
    from ..remote.client import RemoteAnimator

log = logging.getLogger("app.diagnostics.bench")


class FrameListSource:
    """``FrameSource`` serving decoded frames from memory (so decoding is not measured)."""

    is_file = True

    def __init__(self, frames: list[np.ndarray], fps: float, *, loop: bool, paced: bool,
                 limit: int | None = None) -> None:
        self.frames, self.fps, self.loop, self.paced, self.limit = frames, fps, loop, paced, limit
        self.i = 0
        self._pacer = FramePacer()

    def wait(self) -> None:
        if self.paced:
            self._pacer.wait(self.fps)

    def read(self) -> np.ndarray | None:
        if self.limit is not None and self.i >= self.limit:
            return None
        if not self.loop and self.i >= len(self.frames):
            return None
        frame = self.frames[self.i % len(self.frames)]
        self.i += 1
        return frame

    def release(self) -> None:
        pass

    def reopen(self) -> None:
        pass                  # frames in memory never stop delivering; the pipeline never re-opens a file


class TimedBackend:
    """Wraps a backend and records milliseconds per network call (with device sync)."""

    def __init__(self, inner: InferenceBackend) -> None:
        self.inner, self.name, self.device = inner, inner.name, inner.device
        self.stitching, self.eye, self.lip = inner.stitching, inner.eye, inner.lip
        self.ms: dict[str, list[float]] = {"M motion": [], "W+G render": []}
        self._lock = threading.Lock()

    def _timed(self, key: str, fn, *args):
        out, ms = synced_ms(lambda: fn(*args), self.device)
        with self._lock:
            self.ms.setdefault(key, []).append(ms)
        return out

    def appearance(self, image):
        return self._timed("F appearance", self.inner.appearance, image)

    def motion(self, image) -> motion.KeypointInfo:
        return self._timed("M motion", self.inner.motion, image)

    def render(self, feature, x_s, x_d):
        return self._timed("W+G render", self.inner.render, feature, x_s, x_d)

    def close(self) -> None:
        """Close the timed backend: the benchmark hands it over to this wrapper."""
        self.inner.close()


class NullVirtualCamera:
    """pyvirtualcam backend that accepts frames and drops them (measures our side of the output)."""

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        pass

    def send(self, frame):
        pass

    def close(self):
        pass

    def device(self):
        return "null"

    def native_fourcc(self):
        return None


class LetterboxSink:
    """Does a virtual camera sink's own work (letterbox into its reused buffer) and drops the
    frame: where pyvirtualcam is not installed (the lent GPU machine)."""

    name = "virtual camera (null)"

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._canvas: np.ndarray | None = None

    def send(self, image: np.ndarray, tracked: bool) -> None:
        self._canvas = letterbox(image, self.width, self.height, self._canvas)

    def close(self) -> None:
        pass


def null_camera_sink(width: int = 1280, height: int = 720) -> Sink:
    """A virtual camera sink that sends nowhere: pyvirtualcam's path with a null backend where it
    is installed, else ``LetterboxSink``."""
    try:
        import pyvirtualcam
    except ImportError:
        return LetterboxSink(width, height)
    pyvirtualcam.register_backend("bench-null", NullVirtualCamera)
    return VirtualCameraSink(width, height, 30, backend="bench-null")


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; ru_maxrss peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        # Unix only, and needed only where /proc is missing
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def run_loop(backend: InferenceBackend | None, avatar: PreparedAvatar | None, frames: list[np.ndarray],
             source: LandmarkSource, *, lossless_frames: int | None = None, seconds: float = 10.0, fps: float = 0.0,
             soak_minutes: float | None = None, animator: Animator | RemoteAnimator | None = None) -> dict:
    """The whole live loop on ``frames`` (looping) through a null virtual camera. Lossless: exactly
    ``lossless_frames`` frames, none dropped; else live for ``seconds`` (or ``soak_minutes``, with
    resident memory sampled), the camera paced at ``fps`` (0: as fast as possible). Returns the
    figures: frames/s, capture-to-output latency (median ms), per-stage ms (medians), drops.
    ``animator``: run this one (e.g. a ``RemoteAnimator``; the caller closes it) instead of an
    ``Animator`` of ``backend`` and ``avatar`` (then both None)."""
    lossless = lossless_frames is not None and soak_minutes is None
    camera = FrameListSource(frames, fps or 25.0, loop=not lossless, paced=bool(fps) and not lossless,
                             limit=lossless_frames)
    if animator is None:
        animator = Animator(backend, LiveSettings(), avatar)
    pipe = build_pipeline(camera, animator, [null_camera_sink()], landmarks=source, lossless=lossless)

    memory: list[tuple[float, float]] = []
    t_start = time.perf_counter()
    pipe.start()
    duration = soak_minutes * 60 if soak_minutes else seconds
    try:
        if lossless:
            pipe.finished.wait()
        else:
            next_sample = 0.0
            while time.perf_counter() - t_start < duration and not pipe.finished.is_set():
                elapsed = time.perf_counter() - t_start
                if elapsed >= next_sample:
                    memory.append((elapsed, rss_mb()))
                    if soak_minutes:
                        log.info("  %6.0f s  %.1f MB  %s", elapsed, memory[-1][1], pipe.stats.summary())
                    next_sample += 30.0
                time.sleep(0.2)
    finally:
        pipe.shutdown()
    wall = time.perf_counter() - t_start
    memory.append((wall, rss_mb()))

    stats = pipe.stats.snapshot()
    nets = {k: float(np.median(v)) for k, v in backend.ms.items() if v} if isinstance(backend, TimedBackend) else {}
    network_ms = nets.get("M motion", 0.0) + nets.get("W+G render", 0.0)
    stage_total = sum(stats.stage_ms.values())
    frames_out = stats.frames_out
    report = {
        "device": str(backend.device) if backend is not None else "remote", "lossless": lossless,
        "cpu_cores": allowed_cpu_cores(),
        "torch": torch.__version__, "frames_out": frames_out, "wall_s": wall,
        "fps": frames_out / wall, "fps_last_window": stats.fps, "latency_ms": stats.latency_ms,
        "stage_ms": stats.stage_ms, "network_ms": nets,
        "beyond_networks_ms": (stage_total - network_ms) if nets else None,
        "dropped": pipe.q_captured.dropped + pipe.q_tracked.dropped + pipe.q_output.dropped,
    }
    if len(memory) > 2 and soak_minutes:
        base = next((m for t, m in memory if t >= 60.0), memory[0][1])
        report["rss_mb_after_warmup"] = base
        report["rss_mb_end"] = memory[-1][1]
        report["rss_growth_pct"] = (memory[-1][1] / base - 1) * 100
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_engine_arguments(ap, backend="stub", device="cpu")
    ap.add_argument("--network-timing", action=argparse.BooleanOptionalAction, default=True,
                    help="time M and W+G separately; this waits for the device around each call, so on a GPU "
                         "use --no-network-timing for the loop's true frame rate and latency")
    ap.add_argument("--avatar", default=str(DEFAULT_AVATAR))
    ap.add_argument("--video", type=Path, default=default_video())
    ap.add_argument("--tracking", choices=("mediapipe", "replay"), default="mediapipe")
    ap.add_argument("--landmarks", type=Path, metavar="FILE",
                    help="with --tracking replay: replay this landmark file (--save-landmarks) instead of "
                         "tracking the video first; its avatar landmarks prepare the avatar")
    ap.add_argument("--save-landmarks", type=Path, metavar="FILE",
                    help="track the video and the avatar with MediaPipe, save the landmarks to FILE and exit")
    ap.add_argument("--frames", type=int, help="render exactly this many frames, none dropped (lossless)")
    ap.add_argument("--seconds", type=float, default=10.0, help="live mode: run this long, dropping frames")
    ap.add_argument("--fps", type=float, default=0.0,
                    help="live mode: pace the camera at this rate (0 = as fast as possible)")
    ap.add_argument("--soak-minutes", type=float, help="run live for this long and report resident memory")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    frames = frames_720p(args.video)
    if args.save_landmarks:
        save_landmarks(record_landmarks(frames, Path(args.avatar), video=args.video.name), args.save_landmarks)
        log.info("landmarks of %d frames of %s and of %s saved to %s", len(frames), args.video, args.avatar,
                 args.save_landmarks)
        return 0
    if args.backend == "stub":
        torch.set_num_threads(1)   # only tiny tensor ops: a thread pool costs more than it gives
    inner = make_backend(args.backend, weights=args.weights, device=args.device)
    backend: InferenceBackend = TimedBackend(inner) if args.network_timing else inner
    try:
        report = {"backend": args.backend, "tracking": args.tracking,
                  **_run(args, backend, frames)}
    finally:
        backend.close()
    stats_log(report, args.backend, args.tracking)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _run(args: argparse.Namespace, backend: InferenceBackend, frames: list[np.ndarray]) -> dict:
    """``main``'s benchmark on ``backend``: the avatar, the landmark source, ``run_loop``."""
    source: LandmarkSource
    if args.tracking == "replay" and args.landmarks:
        source = load_landmarks(args.landmarks, expected_frames=len(frames)).source()
        avatar = load_avatar(AvatarChoice(Path(args.avatar)), backend, source)
    elif args.tracking == "replay":
        avatar = load_avatar(AvatarChoice(Path(args.avatar)), backend)
        source = record_landmarks(frames, Path(args.avatar), video=args.video.name).source()
    else:
        avatar = load_avatar(AvatarChoice(Path(args.avatar)), backend)
        source = MediaPipeFaceMesh()
    return run_loop(backend, avatar, frames, source, lossless_frames=args.frames, seconds=args.seconds,
                    fps=args.fps, soak_minutes=args.soak_minutes)


def stats_log(report: dict, backend: str, tracking: str) -> None:
    """The figures of ``run_loop`` to the log, one line each."""
    log.info("backend %s on %s, tracking %s, %s, %d frames in %.1f s (%d CPU cores, torch %s)", backend,
             report["device"], tracking, "lossless" if report["lossless"] else "live", report["frames_out"],
             report["wall_s"], report["cpu_cores"], report["torch"])
    for stage, ms in report["stage_ms"].items():
        log.info("  stage %-10s %9.2f ms", stage, ms)
    for net, ms in report["network_ms"].items():
        log.info("  network %-12s %7.2f ms", net, ms)
    if report["network_ms"]:
        log.info("  per-frame work beyond the networks: %.2f ms", report["beyond_networks_ms"])
    log.info("  output %.1f frames/s over the run (%.1f in the last window), capture-to-output latency "
             "%.1f ms (median), %d frames dropped", report["fps"], report["fps_last_window"], report["latency_ms"],
             report["dropped"])
    if "rss_growth_pct" in report:
        log.info("  resident memory: %.1f MB after warm-up -> %.1f MB at the end (%+.2f%%)",
                 report["rss_mb_after_warmup"], report["rss_mb_end"], report["rss_growth_pct"])


if __name__ == "__main__":
    with native_output_silenced():          # MediaPipe's and OpenCV's console chatter
        sys.exit(main())
