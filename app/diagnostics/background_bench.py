"""Benchmark of the output background's extra work per frame on the CPU (host compositing and the
per-frame segmentation), at a chosen output size. Prints the figures.

    taskset -c 0 python -m app.diagnostics.background_bench --size 1280x720 --frames 300
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np

from ..avatar.face import prepare_avatar_face
from ..avatar.loading import DEFAULT_AVATAR
from ..cli.console import native_output_silenced
from ..compositing.background import BackgroundCompositor, cover
from ..face.tracker import MediaPipeFaceMesh
from ..imaging.image_io import load_image
from ..imaging.segmentation import MediaPipeSelfieSegmentation
from ..settings import AnimationSettings, parse_size

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.diagnostics.background_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--avatar", default=str(DEFAULT_AVATAR), help="portrait, scaled to cover --size")
    ap.add_argument("--size", type=parse_size, default=(1280, 720), metavar="WxH", help="output size")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--modes", default="color:#00ff00,blur", help="comma-separated background modes")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    width, height = args.size
    image = cover(load_image(args.avatar), width, height)
    mesh = MediaPipeFaceMesh()
    try:
        face = prepare_avatar_face(image, mesh, max_side=max(width, height))
    finally:
        mesh.close()
    x0, y0, x1, y1 = face.paste.box
    print(f"output {width}x{height}, pasted region {x1 - x0}x{y1 - y0}, {args.frames} frames per mode")
    rng = np.random.default_rng(0)
    for mode in args.modes.split(","):
        s = AnimationSettings(background=mode)
        compositor = BackgroundCompositor(MediaPipeSelfieSegmentation)
        compositor.compose(face.image, face, s)           # segmenter, layout and backdrop made once
        every = compositor.every
        times = []
        for _ in range(args.frames):
            frame = face.image.copy()
            frame[y0:y1, x0:x1] ^= rng.integers(0, 2, (1, 1, 3), dtype=np.uint8)   # a changing frame
            t0 = time.perf_counter()
            compositor.compose(frame, face, s)
            times.append((time.perf_counter() - t0) * 1e3)
        compositor.close()
        # the warm-up call segmented, so frame i segments when i + 1 is a multiple of ``every``
        segmented = times[every - 1::every]
        plain = [t for i, t in enumerate(times) if (i + 1) % every]
        print(f"{mode:>16}: median {statistics.median(times):.2f} ms, mean {statistics.fmean(times):.2f} ms "
              f"per frame (segmenting every {every} frames: with {statistics.median(segmented):.2f} ms, "
              f"without {statistics.median(plain) if plain else float('nan'):.2f} ms)")
    return 0


if __name__ == "__main__":
    with native_output_silenced():          # MediaPipe's and OpenCV's console chatter
        raise SystemExit(main())
