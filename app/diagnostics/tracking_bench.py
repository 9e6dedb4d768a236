"""Benchmark: face tracking + driving crop on 1280x720 frames.

    python -m app.diagnostics.tracking_bench [--video PATH] [--repeat N]

The video's frames are scaled to face-cam size and placed on a 1280x720 canvas. Pin it to one core
to compare with the target (median under 8 ms on one core): ``taskset -c 0 python -m app.diagnostics.tracking_bench``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from ..cli.console import native_output_silenced
from ..face.driving import DrivingCropper
from ..face.tracker import MediaPipeFaceMesh
from ..live.capture import read_video_frames

log = logging.getLogger("app.diagnostics.tracking_bench")


def default_video() -> Path:
    kit = Path(os.environ.get("LIVEPORTRAIT_PARITY_DIR", Path(__file__).resolve().parents[3] / "shared" / "parity"))
    return kit / "data" / "examples" / "d0.mp4"


class TimedTracking:
    """Wraps a landmark source and keeps the milliseconds of its last ``track`` call."""

    def __init__(self, inner: MediaPipeFaceMesh) -> None:
        self.inner, self.layout, self.last_ms = inner, inner.layout, 0.0

    def track(self, frame: np.ndarray) -> np.ndarray | None:
        t0 = time.perf_counter()
        out = self.inner.track(frame)
        self.last_ms = (time.perf_counter() - t0) * 1000
        return out

    def detect_faces(self, image: np.ndarray) -> list[np.ndarray]:
        return self.inner.detect_faces(image)

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()


def allowed_cpu_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS reports one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def frames_720p(video: Path, face_height: int = 600) -> list[np.ndarray]:
    frames = []
    for frame in read_video_frames(video):
        s = face_height / frame.shape[0]
        frame = cv2.resize(frame, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
        canvas = np.full((720, 1280, 3), 60, np.uint8)
        h, w = frame.shape[:2]
        y0, x0 = (720 - h) // 2, (1280 - w) // 2
        canvas[y0:y0 + h, x0:x0 + w] = frame
        frames.append(canvas)
    if not frames:
        raise SystemExit(f"no frames read from {video}")
    return frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=default_video())
    ap.add_argument("--repeat", type=int, default=3, help="passes over the video")
    ap.add_argument("--max-faces", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    frames = frames_720p(args.video)
    source = TimedTracking(MediaPipeFaceMesh(max_faces=args.max_faces))
    cropper = DrivingCropper(source)
    track_ms, total_ms, misses = [], [], 0
    for rep in range(args.repeat):
        cropper.reset()
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            face = cropper.process(frame, i / 25)
            total = (time.perf_counter() - t0) * 1000
            if face is None:
                misses += 1
            elif rep > 0 or i >= 10:   # skip warm-up
                track_ms.append(source.last_ms)
                total_ms.append(total)
    affinity = allowed_cpu_cores()
    log.info("tracking + crop, 1280x720, %d frames, %d CPU core(s) allowed, max_faces=%d, python %s",
             len(total_ms), affinity, args.max_faces, sys.version.split()[0])
    log.info("  tracking (MediaPipe)     median %.2f ms  p90 %.2f ms", np.median(track_ms), np.percentile(track_ms, 90))
    log.info("  tracking + crop + ratios median %.2f ms  p90 %.2f ms", np.median(total_ms), np.percentile(total_ms, 90))
    if misses:
        log.info("  frames without a face: %d", misses)
    return 0


if __name__ == "__main__":
    with native_output_silenced():          # MediaPipe's and OpenCV's console chatter
        sys.exit(main())
