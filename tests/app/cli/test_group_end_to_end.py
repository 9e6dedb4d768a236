"""Group photos end to end on the kit's synthetic weights (issue 20): ``main.py --headless`` on a
photo of 2 and of 4 real faces (the example portraits side by side, made at test time) driven by
d0: every face is re-rendered in its own region, and ``--faces 2`` leaves face 1 as it was."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from support.fakes import run_main
from support.group_photo import group_photo
from support.outcomes import assert_outcome, recorded_frames

from app.avatar.face import prepare_avatar_face
from app.face.tracker import MediaPipeFaceMesh

pytestmark = pytest.mark.integration

FRAMES = 1       # each frame renders every face on the CPU: one shows them all


def inner_faces(image: np.ndarray) -> list[tuple[slice, slice]]:
    """Each face's inner area (its landmarks' box, shrunk by a fifth), numbered left to right."""
    mesh = MediaPipeFaceMesh()
    try:
        face = prepare_avatar_face(image, mesh)
    finally:
        mesh.close()
    areas = []
    for f in face.group:
        (x0, y0), (x1, y1) = f.landmarks.min(axis=0), f.landmarks.max(axis=0)
        dx, dy = (x1 - x0) / 5, (y1 - y0) / 5
        areas.append((slice(int(y0 + dy), int(y1 - dy)), slice(int(x0 + dx), int(x1 - dx))))
    return areas


def run_group(image_path: Path, out: Path, d0: Path, weights: Path, *flags: str) -> list[np.ndarray]:
    proc = run_main("--headless", "--no-virtual-camera", "--avatar", str(image_path), *flags, "--backend", "torch",
                    "--device", "cpu", "--weights", str(weights), "--no-download", "--camera", str(d0),
                    "--max-frames", str(FRAMES), "--record", str(out), timeout=900)
    assert_outcome(proc.returncode, proc.stderr, 0)
    frames = recorded_frames(out)
    assert len(frames) == FRAMES
    return frames


def changed(frame: np.ndarray, still: np.ndarray, area: tuple[slice, slice]) -> float:
    return float(np.abs(frame[area].astype(np.int16) - still[area].astype(np.int16)).mean())


@pytest.mark.parametrize("count", [2, 4])
def test_every_face_of_a_group_photo_is_animated(count: int, examples: Path, synthetic_weights_dir: Path,
                                                d0: Path, tmp_path: Path) -> None:
    image = group_photo(examples, count)
    path = tmp_path / f"group{count}.png"
    cv2.imwrite(str(path), image)
    areas = inner_faces(image)
    assert len(areas) == count
    for frame in run_group(path, tmp_path / "out.mp4", d0, synthetic_weights_dir):
        assert frame.shape == image.shape
        for area in areas:
            assert changed(frame, image, area) > 10          # the synthetic networks' render, not the photo


def test_faces_2_leaves_face_1_untouched(examples: Path, synthetic_weights_dir: Path, d0: Path,
                                         tmp_path: Path) -> None:
    image = group_photo(examples, 2)
    path = tmp_path / "group2.png"
    cv2.imwrite(str(path), image)
    first, second = inner_faces(image)
    for frame in run_group(path, tmp_path / "out.mp4", d0, synthetic_weights_dir, "--faces", "2"):
        animated, still = changed(frame, image, second), changed(frame, image, first)
        # only the video codec touches face 1 (its colour conversion: a few levels on a small face)
        assert animated > 10 and still < 8 and still < animated / 3
