"""Benchmark of the whole live loop on a video file (frames scaled onto a 1280x720 canvas).

    python -m app.bench --backend torch --device cpu --frames 3      # real networks (kit weights)
    python -m app.bench --backend stub --tracking replay --seconds 10  # threading throughput
    python -m app.bench --backend stub --soak-minutes 20              # resident memory over time
    python -m app.bench --backend auto --device cuda --no-network-timing --seconds 20   # on a GPU

Prints per-stage milliseconds (medians), the networks' share, output frames/s and
capture-to-output latency. ``--tracking replay`` replays landmarks computed beforehand, so the
figure shows what the threads and the non-network stages sustain without MediaPipe's cost.
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

import numpy as np
import pyvirtualcam
import torch

from engines import motion
from engines.backend import InferenceBackend
from engines.device import synced_ms
from engines.select import BACKEND_KINDS

from .animator import Animator
from .face.bench import allowed_cpu_cores, default_video, frames_720p
from .face.layout import MEDIAPIPE_478
from .face.tracker import MediaPipeFaceMesh
from .session import DEFAULT_AVATAR, load_avatar, make_backend
from .settings import LiveSettings
from .stages.capture import FramePacer
from .stages.output import VirtualCameraSink
from .wiring import build_pipeline

log = logging.getLogger("app.bench")


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


class ReplayLandmarks:
    """``LandmarkSource`` that replays landmarks computed beforehand, frame by frame."""

    layout = MEDIAPIPE_478

    def __init__(self, landmarks: list[np.ndarray | None]) -> None:
        self.landmarks, self.i = landmarks, 0

    def track(self, frame):
        lmk = self.landmarks[self.i % len(self.landmarks)]
        self.i += 1
        return lmk

    def detect_faces(self, image):
        return []

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


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


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; ru_maxrss peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        # Unix only, and needed only where /proc is missing
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=BACKEND_KINDS, default="stub", help="as main.py's --backend")
    ap.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    ap.add_argument("--network-timing", action=argparse.BooleanOptionalAction, default=True,
                    help="time M and W+G separately; this waits for the device around each call, so on a GPU "
                         "use --no-network-timing for the loop's true frame rate and latency")
    ap.add_argument("--weights", help="weights directory (backends with networks)")
    ap.add_argument("--avatar", default=str(DEFAULT_AVATAR))
    ap.add_argument("--video", type=Path, default=default_video())
    ap.add_argument("--tracking", choices=("mediapipe", "replay"), default="mediapipe")
    ap.add_argument("--frames", type=int, help="render exactly this many frames, none dropped (lossless)")
    ap.add_argument("--seconds", type=float, default=10.0, help="live mode: run this long, dropping frames")
    ap.add_argument("--fps", type=float, default=0.0,
                    help="live mode: pace the camera at this rate (0 = as fast as possible)")
    ap.add_argument("--soak-minutes", type=float, help="run live for this long and report resident memory")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.backend == "stub":
        torch.set_num_threads(1)   # only tiny tensor ops: a thread pool costs more than it gives
    frames = frames_720p(args.video)
    inner = make_backend(args.backend, weights=args.weights, device=args.device)
    backend: InferenceBackend = TimedBackend(inner) if args.network_timing else inner
    avatar = load_avatar(args.avatar, backend)
    if args.tracking == "replay":
        mesh = MediaPipeFaceMesh()
        source = ReplayLandmarks([mesh.track(f) for f in frames])
        mesh.close()
    else:
        source = MediaPipeFaceMesh()
    pyvirtualcam.register_backend("bench-null", NullVirtualCamera)
    sinks = [VirtualCameraSink(1280, 720, 30, backend="bench-null")]
    lossless = args.frames is not None and args.soak_minutes is None
    camera = FrameListSource(frames, args.fps or 25.0, loop=not lossless, paced=bool(args.fps) and not lossless,
                             limit=args.frames)
    pipe = build_pipeline(camera, Animator(backend, LiveSettings(), avatar), sinks, landmarks=source, lossless=lossless)

    memory: list[tuple[float, float]] = []
    t_start = time.perf_counter()
    pipe.start()
    duration = args.soak_minutes * 60 if args.soak_minutes else args.seconds
    try:
        if lossless:
            pipe.finished.wait()
        else:
            next_sample = 0.0
            while time.perf_counter() - t_start < duration and not pipe.finished.is_set():
                elapsed = time.perf_counter() - t_start
                if elapsed >= next_sample:
                    memory.append((elapsed, rss_mb()))
                    if args.soak_minutes:
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
        "backend": args.backend, "device": str(backend.device), "tracking": args.tracking, "lossless": lossless,
        "cpu_cores": allowed_cpu_cores(),
        "torch": torch.__version__, "frames_out": frames_out, "wall_s": wall,
        "fps": frames_out / wall, "fps_last_window": stats.fps, "latency_ms": stats.latency_ms,
        "stage_ms": stats.stage_ms, "network_ms": nets,
        "beyond_networks_ms": (stage_total - network_ms) if nets else None,
        "dropped": pipe.q_captured.dropped + pipe.q_tracked.dropped + pipe.q_output.dropped,
    }
    if len(memory) > 2 and args.soak_minutes:
        base = next((m for t, m in memory if t >= 60.0), memory[0][1])
        report["rss_mb_after_warmup"] = base
        report["rss_mb_end"] = memory[-1][1]
        report["rss_growth_pct"] = (memory[-1][1] / base - 1) * 100
    log.info("backend %s on %s, tracking %s, %s, %d frames in %.1f s (%d CPU cores, torch %s)", args.backend,
             backend.device, args.tracking, "lossless" if lossless else "live", frames_out, wall,
             report["cpu_cores"], torch.__version__)
    for stage, ms in stats.stage_ms.items():
        log.info("  stage %-10s %9.2f ms", stage, ms)
    for net, ms in nets.items():
        log.info("  network %-12s %7.2f ms", net, ms)
    if nets:
        log.info("  per-frame work beyond the networks: %.2f ms", report["beyond_networks_ms"])
    log.info("  output %.1f frames/s over the run (%.1f in the last window), capture-to-output latency "
             "%.1f ms (median), %d frames dropped", report["fps"], report["fps_last_window"], report["latency_ms"],
             report["dropped"])
    if "rss_growth_pct" in report:
        log.info("  resident memory: %.1f MB after warm-up -> %.1f MB at the end (%+.2f%%)",
                 report["rss_mb_after_warmup"], report["rss_mb_end"], report["rss_growth_pct"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
