"""Benchmark of group photos: per-frame time of the animator for 1, 2, 3 and 4 faces, and W+G alone
for a batch of 1..4 faces against as many single calls.

    python -m app.diagnostics.group_bench --weights DIR --device cpu --frames 5     # real networks
    python -m app.diagnostics.group_bench --backend stub --frames 20               # everything else

The group photo is the kit's example portraits side by side (s0, s1, s2 and s0 mirrored; found with
MediaPipe once); the K-face avatar animates its K leftmost faces. The driving face is the avatar's
own first crop (its motion and its time are what the networks cost, whatever the face). Prints
medians in milliseconds through logging, like the other benchmarks.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from engines.backend import InferenceBackend
from engines.device import median_ms
from engines.options import add_engine_arguments
from engines.registry import make_backend

from ..animation.animator import Animator
from ..avatar.face import AvatarFace, prepare_avatar_face
from ..avatar.framing import MAX_GROUP_FACES
from ..avatar.prepared import prepare_avatar
from ..face.driving import DrivingFace
from ..face.tracker import MediaPipeFaceMesh
from ..settings import AnimationSettings, LiveSettings
from .tracking_bench import allowed_cpu_cores, default_video

log = logging.getLogger("app.diagnostics.group_bench")


def group_photo(examples: Path, height: int = 512) -> np.ndarray:
    """s0, s1, s2 and s0 mirrored side by side at ``height`` (H x W x 3 BGR)."""
    tiles = []
    for name, mirror in (("s0", False), ("s1", False), ("s2", False), ("s0", True)):
        image = cv2.imread(str(examples / f"{name}.jpg"))
        if image is None:
            raise FileNotFoundError(examples / f"{name}.jpg")
        image = image[:, ::-1] if mirror else image
        tiles.append(cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height),
                                interpolation=cv2.INTER_AREA))
    return np.ascontiguousarray(np.hstack(tiles))


def with_faces(face: AvatarFace, count: int) -> AvatarFace:
    """The group's ``count`` leftmost faces (its union paste is not needed for timing)."""
    return replace(face, others=face.others[:count - 1], group_paste=None)


def driving_face(face: AvatarFace) -> DrivingFace:
    """A driving face made of the avatar's own crop and ratios."""
    identity = face.transform
    eyes = face.eye_ratios if face.eye_ratios is not None else np.full((1, 2), 0.3, np.float32)
    lip = face.lip_ratio if face.lip_ratio is not None else np.zeros((1, 1), np.float32)
    return DrivingFace(network_input=face.network_input, landmarks=face.landmarks, transform=identity,
                       eye_ratios=eyes, lip_ratio=lip)


def frame_ms(backend: InferenceBackend, face: AvatarFace, frames: int, warmup: int) -> float:
    """Median milliseconds of ``Animator.process`` (output pasted on the host, background kept)."""
    # a one-frame neutral reference: the untimed frames before the live ones stay few
    animator = Animator(backend, LiveSettings(AnimationSettings(reference_frames=1)), prepare_avatar(face, backend),
                        paste_on_device=False)
    drive = driving_face(face)
    times = []
    for i in range(warmup + frames):
        t0 = time.perf_counter()
        animator.process(drive, i / 30)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    animator.close()
    return statistics.median(times)


def render_ms(backend: InferenceBackend, count: int, runs: int, warmup: int) -> tuple[float, float]:
    """W+G alone: one call on a batch of ``count`` against ``count`` calls of one (median ms)."""
    g = torch.Generator().manual_seed(0)
    feature = torch.randn(count, 32, 16, 64, 64, generator=g).to(backend.device)
    x_s = (torch.randn(count, 21, 3, generator=g) * 0.3).to(backend.device)
    x_d = x_s + 0.01
    batch = median_ms(lambda: backend.render(feature, x_s, x_d), backend.device, runs, warmup)
    singles = median_ms(lambda: [backend.render(feature[i:i + 1], x_s[i:i + 1], x_d[i:i + 1]) for i in range(count)],
                        backend.device, runs, warmup)
    return batch, singles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_engine_arguments(ap, backend="torch", device="cpu")
    ap.add_argument("--examples", type=Path, default=default_video().parent,
                    help="the kit's example portraits (s0-s2.jpg)")
    ap.add_argument("--frames", type=int, default=5, help="timed frames per face count")
    ap.add_argument("--warmup", type=int, default=2, help="untimed frames first (the neutral reference's among them)")
    ap.add_argument("--render-runs", type=int, default=2, help="timed W+G calls per batch size")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    mesh = MediaPipeFaceMesh()
    try:
        group = prepare_avatar_face(group_photo(args.examples), mesh)
    finally:
        mesh.close()
    if len(group.group) < MAX_GROUP_FACES:
        log.warning("only %d faces found in the group photo", len(group.group))
    backend = make_backend(args.backend, weights=args.weights, device=args.device)
    rows = []
    try:
        with torch.inference_mode():
            for count in range(1, len(group.group) + 1):
                per_frame = frame_ms(backend, with_faces(group, count), args.frames, args.warmup)
                batch, singles = render_ms(backend, count, max(args.render_runs, 1), 1)
                rows.append({"faces": count, "frame_ms": per_frame, "render_batch_ms": batch,
                             "render_singles_ms": singles})
                log.info("%d faces: %.1f ms per frame, W+G %.1f ms batched, %.1f ms in single calls", count,
                         per_frame, batch, singles)         # as it comes: a long CPU run keeps what it measured
    finally:
        backend.close()
    log.info("group photo on %s (%s), %d CPU cores, torch %s, median of %d frames", args.backend,
             backend.device, allowed_cpu_cores(), torch.__version__, args.frames)
    log.info("  faces  frame ms  x one face   W+G batch ms  W+G %s single calls ms", "K")
    for row in rows:
        log.info("  %5d  %8.1f  %10.2f   %12.1f  %24.1f", row["faces"], row["frame_ms"],
                 row["frame_ms"] / rows[0]["frame_ms"], row["render_batch_ms"], row["render_singles_ms"])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
