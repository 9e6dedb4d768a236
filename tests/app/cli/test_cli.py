"""main.py end to end: the start-up check on the kit's synthetic checkpoints, and clean errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.fakes import REPO_ROOT, run_main

from app.avatar.loading import DEFAULT_AVATAR

pytestmark = pytest.mark.integration


def test_start_up_check_runs_all_networks_on_official_layout(synthetic_weights_dir: Path) -> None:
    proc = run_main("--check", "--weights", str(synthetic_weights_dir), "--device", "cpu", "--no-download")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("F appearance", "M motion", "S stitching", "W warping", "G decoder"):
        assert stage in proc.stderr
    assert "all seven LivePortrait networks are ready" in proc.stderr


def test_missing_weights_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = run_main("--check", "--weights", str(tmp_path / "nothing"), "--no-download")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 5 LivePortrait checkpoint(s) missing")
    assert "Traceback" not in proc.stderr


def test_corrupt_checkpoint_is_one_line_exit_2(synthetic_weights_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "w"
    shutil.copytree(synthetic_weights_dir, broken)
    target = broken / "liveportrait" / "base_models" / "warping_module.pth"
    target.write_bytes(target.read_bytes()[:1000])
    proc = run_main("--check", "--weights", str(broken), "--no-download", "--device", "cpu")
    assert proc.returncode == 2
    assert "warping_module.pth: not a readable PyTorch checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_headless_animates_first_frames_with_real_networks(synthetic_weights_dir: Path, examples: Path,
                                                            tmp_path: Path) -> None:
    """The end-to-end contract: real networks (kit's synthetic weights), avatar s0 (600x704), d0 as
    the camera, the first 2 tracked frames written at the avatar's resolution."""
    import cv2

    out = tmp_path / "out.mp4"
    proc = run_main("--headless", "--avatar", str(examples / "s0.jpg"), "--camera", str(examples / "d0.mp4"),
                    "--weights", str(synthetic_weights_dir), "--device", "cpu", "--record", str(out),
                    "--max-frames", "2", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (600, 704)
    ok, frame = cap.read()
    avatar = cv2.imread(str(examples / "s0.jpg"))
    diff = np.abs(frame.astype(int) - avatar.astype(int)).mean(axis=2)
    # the face region is re-rendered, the rest of the portrait is the avatar itself
    assert diff[300:].mean() < 8 and diff[:, :150].mean() < 8
    assert diff[80:260, 200:420].mean() > 20


@pytest.mark.parametrize("avatar, camera, message", [
    ("missing.png", "d0", "missing.png: file not found"),
    ("noface", "d0", "no face found; for a cartoon give the face's square with --avatar-box"),
    ("default", "missing.mp4", "video file not found"),
])
def test_headless_bad_input_is_one_line_exit_2(avatar: str, camera: str, message: str, d0: Path,
                                               tmp_path: Path) -> None:
    import cv2

    if avatar == "noface":
        avatar = str(tmp_path / "noface.png")
        cv2.imwrite(avatar, np.full((300, 300, 3), 127, np.uint8))
    elif avatar == "default":
        avatar = str(DEFAULT_AVATAR)
    else:
        avatar = str(tmp_path / avatar)
    camera = str(d0) if camera == "d0" else str(tmp_path / camera)
    proc = run_main("--headless", "--backend", "stub", "--avatar", avatar, "--camera", camera, "--max-frames", "1")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in proc.stderr


def test_headless_ctrl_c_stops_cleanly(d0: Path, tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "live.mp4"
    proc = subprocess.Popen([sys.executable, "main.py", "--headless", "--backend", "stub", "--camera", str(d0),
                             "--loop", "--record", str(out), "--no-virtual-camera"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size > 10_000):
            time.sleep(0.2)
        assert out.exists(), "no frames were recorded"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]      # interrupted (128 + SIGINT)
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert elapsed < 3.0     # includes interpreter exit; the threads themselves stop within 1 s
