"""Group photos and video avatars through ``main.py serve`` (issue 20, protocol 4), on the kit's
synthetic weights (torch engine): ``main.py --headless --remote`` on a 2-face photo (two example
portraits side by side, made at test time) animates both faces in their own regions, and on a
short clip (d0's first frames on canvases whose grey names the frame, made at test time) pastes
each output into the clip's frame s(i) of the client's clock, its face re-rendered."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.fakes import run_main
from support.group_photo import group_photo
from support.outcomes import assert_outcome, recorded_frames

from app.avatar.face import prepare_avatar_face
from app.avatar.video import pingpong_index
from app.face.tracker import MediaPipeFaceMesh
from app.live.capture import read_video_frames
from app.remote.server.local_server import LocalServer, free_port, serve_command

pytestmark = pytest.mark.integration

TOKEN = "group-and-video-end-to-end-token"
CLIP_FRAMES = 3
CANVAS = (640, 420)                 # width, height
FACE_SIDE = 280


def grey(k: int) -> int:
    return 50 + 60 * k


@pytest.fixture(scope="module")
def server_url(synthetic_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    command = serve_command(port, "--backend", "torch", "--device", "cpu", "--weights", str(synthetic_weights_dir),
                            "--no-download", "--token", TOKEN)
    log_path = tmp_path_factory.mktemp("serve") / "console.log"
    with LocalServer(command, f"http://127.0.0.1:{port}", log_path, env={"RAY_USAGE_STATS_ENABLED": "0"}) as server:
        deadline = time.monotonic() + 120
        while "render server ready" not in server.log_tail(100_000):
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        yield f"ws://127.0.0.1:{port}"


def run_remote(avatar: Path, url: str, d0: Path, out: Path, frames: int) -> list[np.ndarray]:
    proc = run_main("--headless", "--no-virtual-camera", "--avatar", str(avatar), "--remote", url, "--token", TOKEN,
                    "--remote-format", "raw", "--camera", str(d0), "--max-frames", str(frames), "--record", str(out),
                    timeout=900)
    assert_outcome(proc.returncode, proc.stderr, 0)
    recorded = recorded_frames(out)
    assert len(recorded) == frames
    return recorded


def test_every_face_of_a_group_photo_is_animated_through_the_server(server_url: str, examples: Path, d0: Path,
                                                                     tmp_path: Path) -> None:
    image = group_photo(examples, 2)
    path = tmp_path / "group2.png"
    cv2.imwrite(str(path), image)
    mesh = MediaPipeFaceMesh()
    try:
        faces = prepare_avatar_face(image, mesh).group
    finally:
        mesh.close()
    assert len(faces) == 2
    for frame in run_remote(path, server_url, d0, tmp_path / "group.mp4", 1):
        assert frame.shape == image.shape
        for f in faces:
            (x0, y0), (x1, y1) = f.landmarks.min(axis=0), f.landmarks.max(axis=0)
            dx, dy = (x1 - x0) / 5, (y1 - y0) / 5
            area = (slice(int(y0 + dy), int(y1 - dy)), slice(int(x0 + dx), int(x1 - dx)))
            # the synthetic networks' render, not the photo: every face, not only the selected one
            assert np.abs(frame[area].astype(np.int16) - image[area].astype(np.int16)).mean() > 10, f.number


def test_a_video_avatar_through_the_server_is_pasted_into_its_own_frames(server_url: str, d0: Path,
                                                                          tmp_path: Path) -> None:
    fps = cv2.VideoCapture(str(d0)).get(cv2.CAP_PROP_FPS)
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), fps, CANVAS)
    for k, frame in enumerate(read_video_frames(d0, CLIP_FRAMES)):
        canvas = np.full((CANVAS[1], CANVAS[0], 3), grey(k), np.uint8)
        x0, y0 = (CANVAS[0] - FACE_SIDE) // 2, (CANVAS[1] - FACE_SIDE) // 2
        canvas[y0:y0 + FACE_SIDE, x0:x0 + FACE_SIDE] = cv2.resize(frame, (FACE_SIDE, FACE_SIDE),
                                                                  interpolation=cv2.INTER_AREA)
        writer.write(canvas)
    writer.release()
    count = 4
    frames = run_remote(clip, server_url, d0, tmp_path / "video.mp4", count)
    shown = []
    for i, frame in enumerate(frames):
        assert frame.shape == (CANVAS[1], CANVAS[0], 3)
        corner = frame[:60, :60].astype(float).mean()               # far outside the pasted crop
        shown.append(int(np.argmin([abs(corner - grey(k)) for k in range(CLIP_FRAMES)])))
        assert abs(corner - grey(shown[-1])) < 15, (i, corner)       # the greys are 60 apart: codecs move a few
    # a lossless file run: the client's clock is the driving video's, output i showing s(i / fps)
    assert shown == [pingpong_index(i / fps, fps, CLIP_FRAMES) for i in range(count)] == [0, 1, 2, 1]
    centre = (slice(CANVAS[1] // 2 - 50, CANVAS[1] // 2 + 50), slice(CANVAS[0] // 2 - 50, CANVAS[0] // 2 + 50))
    sources = read_video_frames(clip, CLIP_FRAMES)
    for i, frame in enumerate(frames):       # re-rendered by the server's networks, not the clip's pixels
        assert np.abs(frame[centre].astype(int) - sources[shown[i]][centre].astype(int)).mean() > 10, i
