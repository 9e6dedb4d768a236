"""Inputs and finishing for the README's group-photo and video-avatar pictures, all made from our own
default avatar (assets/avatars/astronaut.png, public domain); the kit's example portraits are never
used, so nothing here needs to stay out of the repository.

    python tools/make_readme_avatars.py inputs OUT_DIR
        OUT_DIR/group.png    the astronaut four times in a row with variations (mirrored, scaled,
                             shifted), four faces MediaPipe finds (checked here unless --no-check)
        OUT_DIR/clip.mp4     a video avatar: a slow pan and zoom over the astronaut (4 s, 25 fps)
        OUT_DIR/driving.mp4  a driving video: the astronaut turning and nodding a little (3 s, 25 fps)
    python tools/make_readme_avatars.py jpeg SHOT.png OUT.jpg [--width 1100] [--quality 85]
        a window screenshot (``main.py --screenshot``) shrunk and written as the README's JPEG

The pictures themselves come from the window's screenshot contract on the stub backend, as the
README's other pictures (the exact commands are in the README)."""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO_ROOT / "assets" / "avatars" / "astronaut.png"
FPS = 25.0
TILE_WIDTH = 384                # one face's tile in the group photo: 384 x 512 px
CLIP_SIZE = (960, 540)          # the video avatar's frames: width, height
CLIP_SECONDS = 4.0
DRIVING_SIZE = (640, 480)
DRIVING_SECONDS = 3.0

log = logging.getLogger("make_readme_avatars")


def _read_astronaut() -> np.ndarray:
    image = cv2.imread(str(ASTRONAUT))
    if image is None:
        raise FileNotFoundError(ASTRONAUT)
    return image


def _zoomed(image: np.ndarray, scale: float, dx: float = 0.0, dy: float = 0.0, angle: float = 0.0) -> np.ndarray:
    """``image`` scaled by ``scale`` about its centre, rotated by ``angle`` degrees and shifted by
    (``dx``, ``dy``) pixels, at its own size (the edge colour fills what comes in)."""
    h, w = image.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    M[:, 2] += (dx, dy)
    return cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def group_photo() -> np.ndarray:
    """The astronaut four times in a row (512 x 1536 x 3 BGR), each a 384-wide portrait cut around
    her face: as is, mirrored, smaller and mirrored larger, so the faces differ a little in size and
    place. In a row, not 2 x 2: MediaPipe's detector sees the whole image at 128 px, where a 2 x 2
    grid's faces are too small, while a wide photo is also searched in square windows."""
    a = _read_astronaut()
    # her face's centre is at x ~224 of 512: a 384-wide cut around it
    x0 = 224 - TILE_WIDTH // 2
    tiles = [a, _zoomed(a, 0.9, 0, 20), a, _zoomed(a, 1.1, 0, -6)]
    tiles = [t[:, x0:x0 + TILE_WIDTH] for t in tiles]
    tiles[1], tiles[3] = tiles[1][:, ::-1], tiles[3][:, ::-1]
    return np.ascontiguousarray(np.hstack(tiles))


def _ease(t: float) -> float:
    """0 -> 1 -> 0 over t in [0, 1], smooth at both ends (a cosine)."""
    return 0.5 - 0.5 * math.cos(2 * math.pi * t)


def clip_frames(size: tuple[int, int] = CLIP_SIZE, seconds: float = CLIP_SECONDS, fps: float = FPS) -> list[np.ndarray]:
    """A slow pan and zoom over the astronaut on a wide frame: she sits left of centre on the
    image's own edge colours (a blurred, widened copy behind her), and the camera drifts right and
    in, then back."""
    w, h = size
    a = cv2.resize(_read_astronaut(), (h, h), interpolation=cv2.INTER_AREA)
    backdrop = cv2.GaussianBlur(cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), 25)
    base = backdrop.copy()
    x0 = (w - h) // 2 - w // 10
    base[:, x0:x0 + h] = a
    frames = []
    for k in range(round(seconds * fps)):
        e = _ease(k / (seconds * fps))
        frames.append(_zoomed(base, 1.0 + 0.12 * e, dx=w * 0.05 * e, dy=-h * 0.02 * e))
    return frames


def driving_frames(size: tuple[int, int] = DRIVING_SIZE, seconds: float = DRIVING_SECONDS,
                   fps: float = FPS) -> list[np.ndarray]:
    """The astronaut as a webcam would see her, turning a little: a small roll and sideways and
    vertical sway (enough for the tracker to follow and the motion to change)."""
    w, h = size
    a = cv2.resize(_read_astronaut(), (h, h), interpolation=cv2.INTER_AREA)
    canvas = cv2.copyMakeBorder(a, 0, 0, (w - h) // 2, w - h - (w - h) // 2, cv2.BORDER_REPLICATE)
    n = round(seconds * fps)
    return [_zoomed(canvas, 1.0, dx=14 * math.sin(2 * math.pi * k / n), dy=6 * math.sin(4 * math.pi * k / n),
                    angle=6 * math.sin(2 * math.pi * k / n)) for k in range(n)]


def write_video(path: Path, frames: list[np.ndarray], fps: float = FPS) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot write {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()


def count_faces(image: np.ndarray) -> int:
    """Faces MediaPipe finds in ``image`` as the avatar loading looks for them (windowed detection)."""
    sys.path.insert(0, str(REPO_ROOT))
    from app.face.tracker import MediaPipeFaceMesh, detect_faces_windowed

    mesh = MediaPipeFaceMesh()
    try:
        return len(detect_faces_windowed(mesh, image))
    finally:
        mesh.close()


def make_inputs(out: Path, check: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    group = group_photo()
    if check:
        found = count_faces(group)
        if found != 4:
            raise RuntimeError(f"group photo: MediaPipe finds {found} faces, expected 4")
        log.info("group photo: 4 faces found")
    cv2.imwrite(str(out / "group.png"), group)
    write_video(out / "clip.mp4", clip_frames())
    write_video(out / "driving.mp4", driving_frames())
    log.info("wrote %s, %s and %s", out / "group.png", out / "clip.mp4", out / "driving.mp4")


def to_jpeg(shot: Path, out: Path, width: int = 1100, quality: int = 85) -> None:
    """The screenshot ``shot`` shrunk to ``width`` pixels wide (never enlarged) as a JPEG."""
    image = cv2.imread(str(shot))
    if image is None:
        raise FileNotFoundError(shot)
    if image.shape[1] > width:
        height = round(image.shape[0] * width / image.shape[1])
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(str(out), image, [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"cannot write {out}")
    log.info("wrote %s (%dx%d, %.0f kB)", out, image.shape[1], image.shape[0], out.stat().st_size / 1e3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    inputs = sub.add_parser("inputs", help="write group.png, clip.mp4 and driving.mp4 to OUT_DIR")
    inputs.add_argument("out", type=Path)
    inputs.add_argument("--no-check", action="store_true", help="skip counting the group photo's faces")
    jpeg = sub.add_parser("jpeg", help="a screenshot as the README's JPEG")
    jpeg.add_argument("shot", type=Path)
    jpeg.add_argument("out", type=Path)
    jpeg.add_argument("--width", type=int, default=1100)
    jpeg.add_argument("--quality", type=int, default=85)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "inputs":
        make_inputs(args.out, check=not args.no_check)
    else:
        to_jpeg(args.shot, args.out, args.width, args.quality)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
