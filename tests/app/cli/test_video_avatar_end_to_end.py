"""A video avatar end to end, on the kit's synthetic weights: ``main.py --headless --avatar clip.mp4``
driven by d0.mp4 (a lossless file run, so on the driving video's timeline). The clip is made at test
time from d0's first frames, each shrunk onto a canvas whose grey level names the frame: outside the
pasted face every output frame must show the canvas of source frame s(i), the clip's ping-pong."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from support.fakes import run_main
from support.outcomes import assert_outcome, recorded_frames

from app.avatar.video import pingpong_index
from app.live.capture import read_video_frames

pytestmark = pytest.mark.integration

CLIP_FRAMES = 3
FRAMES = 5
CANVAS = (720, 480)                 # width, height
FACE_SIDE = 300


def grey(k: int) -> int:
    return 40 + 50 * k


@pytest.fixture(scope="module")
def clip(d0: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    fps = cv2.VideoCapture(str(d0)).get(cv2.CAP_PROP_FPS)
    path = tmp_path_factory.mktemp("video_avatar") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, CANVAS)
    for k, frame in enumerate(read_video_frames(d0, CLIP_FRAMES)):
        canvas = np.full((CANVAS[1], CANVAS[0], 3), grey(k), np.uint8)
        x0, y0 = (CANVAS[0] - FACE_SIDE) // 2, (CANVAS[1] - FACE_SIDE) // 2
        canvas[y0:y0 + FACE_SIDE, x0:x0 + FACE_SIDE] = cv2.resize(frame, (FACE_SIDE, FACE_SIDE),
                                                                  interpolation=cv2.INTER_AREA)
        writer.write(canvas)
    writer.release()
    return path


def test_a_video_avatar_plays_pingpong_pasted_into_its_own_frames(clip: Path, d0: Path,
                                                                  synthetic_weights_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "video_avatar.mp4"
    proc = run_main("--headless", "--no-virtual-camera", "--avatar", str(clip), "--backend", "torch",
                    "--device", "cpu", "--weights", str(synthetic_weights_dir), "--no-download",
                    "--camera", str(d0), "--max-frames", str(FRAMES), "--record", str(out), timeout=600)
    assert_outcome(proc.returncode, proc.stderr, 0)
    assert f"{CLIP_FRAMES} frames at" in proc.stderr
    frames = recorded_frames(out)
    assert len(frames) == FRAMES
    fps = cv2.VideoCapture(str(d0)).get(cv2.CAP_PROP_FPS)
    shown = []
    for i, frame in enumerate(frames):
        assert frame.shape == (CANVAS[1], CANVAS[0], 3)
        corner = frame[:60, :60].astype(float).mean()               # far outside the pasted crop
        shown.append(int(np.argmin([abs(corner - grey(k)) for k in range(CLIP_FRAMES)])))
        assert abs(corner - grey(shown[-1])) < 6, (i, corner)
    # the driving video's timeline: output i at i / fps shows source frame pingpong(i / fps)
    assert shown == [pingpong_index(i / fps, fps, CLIP_FRAMES) for i in range(FRAMES)] == [0, 1, 2, 1, 0]
    # and the face is re-rendered by the networks (not the clip's own pixels)
    centre = (slice(CANVAS[1] // 2 - 60, CANVAS[1] // 2 + 60), slice(CANVAS[0] // 2 - 60, CANVAS[0] // 2 + 60))
    source = read_video_frames(clip, 1)[0]
    assert np.abs(frames[0][centre].astype(int) - source[centre].astype(int)).mean() > 10
