"""Benchmark of video avatars: load time and memory of a 10 s 720p clip (made here by upscaling and
looping a driving video; never kept), and the per-frame cost of a video avatar next to a still one
(F, W+G and the frame's decoding on their own too). Prints the figures.

    python -m app.diagnostics.video_bench --weights DIR --device cpu --frames 6
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from engines.backend import InferenceBackend
from engines.options import add_engine_arguments
from engines.registry import make_backend

from ..animation.animator import Animator
from ..avatar.prepared import PreparedAvatar, prepare_avatar
from ..avatar.prepared_video import prepare_video
from ..avatar.video import load_avatar_video
from ..face.driving import DrivingCropper, DrivingFace
from ..face.tracker import MediaPipeFaceMesh
from ..imaging.device_io import image_to_tensor
from ..imaging.segmentation import EllipseSegmenter
from ..live.capture import read_video_frames
from ..settings import AnimationSettings, LiveSettings
from .tracking_bench import default_video

log = logging.getLogger(__name__)


def make_clip(driver: Path, out: Path, *, seconds: float = 10.0, size: tuple[int, int] = (1280, 720)) -> Path:
    """``seconds`` of ``driver``'s frames, each scaled to cover ``size`` (centre cut) and looped, as
    an mp4 at the driver's frame rate."""
    fps = cv2.VideoCapture(str(driver)).get(cv2.CAP_PROP_FPS) or 25.0
    frames = read_video_frames(driver)
    if not frames:
        raise ValueError(f"{driver}: no frames")
    width, height = size
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(int(round(seconds * fps))):
        frame = frames[i % len(frames)]
        s = max(width / frame.shape[1], height / frame.shape[0])
        big = cv2.resize(frame, (round(frame.shape[1] * s), round(frame.shape[0] * s)), interpolation=cv2.INTER_CUBIC)
        y0, x0 = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
        writer.write(np.ascontiguousarray(big[y0:y0 + height, x0:x0 + width]))
    writer.release()
    return out


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def per_frame_ms(backend: InferenceBackend, avatars: list[PreparedAvatar], face: DrivingFace, frames: int,
                 fps: float) -> list[float]:
    """Median milliseconds of ``Animator.process`` (paste-back, background kept) per avatar over
    ``frames`` live frames on the output clock ``fps`` (a video avatar shows a new source frame
    each), the avatars' frames interleaved so that other load on the machine hits them alike."""
    settings = LiveSettings(AnimationSettings(reference_frames=1))
    animators = [Animator(backend, settings, a, segmenter=EllipseSegmenter) for a in avatars]
    times: list[list[float]] = [[] for _ in avatars]
    for anim in animators:
        anim.process(face, 0.0)                 # the neutral reference
    for i in range(1, frames + 1):
        for anim, own in zip(animators, times, strict=True):
            t0 = time.perf_counter()
            anim.process(face, i / fps)
            own.append((time.perf_counter() - t0) * 1e3)
    for anim in animators:
        anim.close()
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.diagnostics.video_bench", description=__doc__.split("\n")[0])
    add_engine_arguments(ap, backend="torch", device="cpu", download=True)
    ap.add_argument("--video", type=Path, default=default_video(), help="driving video, looped into the clip")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length")
    ap.add_argument("--size", default="1280x720", help="clip size WxH")
    ap.add_argument("--frames", type=int, default=6, help="frames timed per avatar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    size = tuple(int(v) for v in args.size.lower().split("x"))
    assert len(size) == 2
    backend = make_backend(args.backend, weights=args.weights, device=args.device, download=not args.no_download)
    mesh = MediaPipeFaceMesh()
    try:
        with tempfile.TemporaryDirectory(prefix="video_bench_") as tmp:
            clip = make_clip(args.video, Path(tmp) / "clip.mp4", seconds=args.seconds, size=(size[0], size[1]))
            t0 = time.perf_counter()
            video = load_avatar_video(clip, mesh)
            t1 = time.perf_counter()
            with torch.inference_mode():
                avatar = prepare_video(video, backend)
            t2 = time.perf_counter()
        raw = video.num_frames * size[0] * size[1] * 3
        print(f"clip: {video.num_frames} frames {size[0]}x{size[1]} at {video.fps:g} fps ({video.duration_s:.1f} s), "
              f"backend {backend.name} on {backend.device}")
        print(f"load: decode + track + compress {t1 - t0:.1f} s, M on every frame + F of frame 0 {t2 - t1:.1f} s, "
              f"total {t2 - t0:.1f} s")
        print(f"memory: {video.memory_bytes / 2**20:.0f} MiB held on the host (raw frames would be "
              f"{raw / 2**20:.0f} MiB), M outputs {sum(t.numel() * t.element_size() for t in (avatar.video.x_s, avatar.video.info.kp, avatar.video.info.exp)) / 2**20:.1f} MiB")  # noqa: E501
        n = video.num_frames
        index = iter(range(10**9))
        decode = median_ms(lambda: video.face(next(index) % n), 20)
        image = image_to_tensor(video.face(0).network_input, backend.device)
        with torch.inference_mode():
            f_ms = median_ms(lambda: backend.appearance(image), 3)
            wg_ms = median_ms(lambda: backend.render(avatar.feature, avatar.x_s, avatar.x_s), 3)
            f_ms = min(f_ms, median_ms(lambda: backend.appearance(image), 3))     # other load: the quieter
        print(f"per source frame: decode + crop + paste mask {decode:.1f} ms, F {f_ms:.0f} ms, "
              f"W+G {wg_ms:.0f} ms (F = {100 * f_ms / wg_ms:.0f}% of W+G)")
        cropper = DrivingCropper(mesh)
        faces = [f for f in (cropper.process(frame, i / 25) for i, frame in
                             enumerate(read_video_frames(args.video, 10))) if f is not None]
        if not faces:
            raise ValueError(f"{args.video}: no face to drive with")
        still = prepare_avatar(video.face(0), backend)
        still_ms, video_ms = per_frame_ms(backend, [still, avatar], faces[0], args.frames, video.fps)
        print(f"per output frame (animator, paste-back, background kept): still {still_ms:.0f} ms, "
              f"video {video_ms:.0f} ms (+{video_ms - still_ms:.0f} ms: a new source frame every frame)")
    finally:
        mesh.close()
        backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
