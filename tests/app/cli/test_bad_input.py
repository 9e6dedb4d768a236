"""Bad input and failures, as a new user meets them on the command line.

Every case checks its exit status, that no traceback is shown, that standard error holds nothing but
our own log lines and at most the one ``error:`` line, and that nothing is left behind (no partial
output file, no camera image in any output frame). Cases where the process matters (native
libraries loading and speaking, signals, a file moved under a running recorder) run ``main.py`` in a
subprocess; the others call ``main.main`` in this process. The stub backend stands in for the
networks except where the weights are the bad input."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.fakes import REPO_ROOT, run_main
from support.outcomes import assert_outcome, recorded_frames

import main
from app.avatar.loading import DEFAULT_AVATAR
from app.cli.console import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, native_output_silenced
from app.live.sinks import OutputStage, RecordingError, VideoRecorder
from engines.weights import CHECKPOINT_FILES

STUB = ("--headless", "--backend", "stub", "--no-virtual-camera")
PIPELINE_THREADS = ("capture", "tracking", "animation", "output")


# --------------------------------------------------------------------------- helpers
def assert_only_avatar(frames: list[np.ndarray], camera: list[np.ndarray]) -> None:
    """Privacy: every frame is the default avatar and the camera's picture appears in none."""
    avatar = cv2.imread(str(DEFAULT_AVATAR)).astype(int)
    for frame in frames:
        assert frame.shape == avatar.shape
        assert np.abs(frame.astype(int) - avatar).mean() < 6         # the avatar (after video compression)
        for cam in camera[:3]:
            patch = cv2.resize(cam, (96, 72))
            assert cv2.matchTemplate(frame, patch, cv2.TM_CCOEFF_NORMED).max() < 0.8


def logged_frame_count(stderr: str) -> int:
    found = re.search(r"recorded (\d+) frames", stderr)
    assert found, stderr[-2000:]
    return int(found.group(1))


def wait_for_file(path: Path, min_bytes: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.stat().st_size >= min_bytes:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not reach {min_bytes} bytes (process status {proc.poll()})")


def start_main(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "main.py", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# --------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, examples: Path) -> dict[str, Path]:
    """The bad (and odd) inputs, written once: avatars, videos, weights folders."""
    d = tmp_path_factory.mktemp("bad_inputs")
    files = {"d0": examples / "d0.mp4", "dir": d}
    (d / "empty.png").write_bytes(b"")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    cv2.imwrite(str(d / "noface.png"), np.full((300, 300, 3), 127, np.uint8))
    (d / "corrupt.mp4").write_bytes(b"not a video at all")
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(d / "noface.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    noise = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(10)]
    for frame in noise:
        writer.write(frame)
    writer.release()
    avatar = cv2.imread(str(DEFAULT_AVATAR))
    cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(avatar, cv2.COLOR_BGR2GRAY))
    rgba = cv2.cvtColor(avatar, cv2.COLOR_BGR2BGRA)
    rgba[:40, :, 3] = 0                                          # a transparent band: flattened on white
    cv2.imwrite(str(d / "rgba.png"), rgba)
    cv2.imwrite(str(d / "16bit.png"), avatar.astype(np.uint16) * 257)
    cv2.imwrite(str(d / "huge.jpg"), cv2.resize(avatar, (4096, 4096), interpolation=cv2.INTER_CUBIC))
    empty_weights = d / "weights_empty_files"
    for rel in CHECKPOINT_FILES.values():
        (empty_weights / rel).parent.mkdir(parents=True, exist_ok=True)
        (empty_weights / rel).write_bytes(b"")
    files.update({name: d / name for name in ("empty.png", "broken.png", "noface.png", "corrupt.mp4",
                                              "noface.mp4", "gray.png", "rgba.png", "16bit.png", "huge.jpg")})
    files["weights_empty_files"] = empty_weights
    return files


@pytest.fixture()
def in_process(capfd):
    """``main.main(argv)`` in this process: (exit status, standard error). Logging is put back as
    it was afterwards; the pipeline threads must all have ended."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(*argv: str) -> tuple[int, str]:
        capfd.readouterr()
        status = main.main(list(argv))
        alive = [t.name for t in threading.enumerate() if t.name in PIPELINE_THREADS]
        assert not alive, f"threads left running: {alive}"
        return status, capfd.readouterr().err

    yield run
    root.handlers[:], root.level = handlers, level


# --------------------------------------------------------------------------- the console itself
def test_native_output_is_dropped_and_ours_kept_then_restored(capfd) -> None:
    capfd.readouterr()
    with native_output_silenced():
        os.write(2, b"W0000 native noise\n")
        print("INFO ours: kept", file=sys.stderr)
    os.write(2, b"after the block\n")
    with native_output_silenced(enabled=False):
        os.write(2, b"let through\n")
    err = capfd.readouterr().err
    assert "native noise" not in err
    assert "INFO ours: kept" in err and "after the block" in err and "let through" in err


# --------------------------------------------------------------------------- fails before anything opens
IN_PROCESS_ERRORS = [
    # id, arguments ({dir}, {d0}, {out}: the inputs folder, the driving video, an empty output folder), message
    ("avatar-missing", ["--avatar", "{dir}/missing.png", "--camera", "{d0}"], "missing.png: file not found"),
    ("avatar-empty", ["--avatar", "{dir}/empty.png", "--camera", "{d0}"], "empty.png: file is empty"),
    ("avatar-broken", ["--avatar", "{dir}/broken.png", "--camera", "{d0}"], "broken.png: not an image"),
    ("record-folder-missing", ["--camera", "{d0}", "--record", "{out}/no/such/run.mp4"], "does not exist"),
    ("record-is-a-folder", ["--camera", "{d0}", "--record", "{out}"], "is a folder"),
    ("record-extension", ["--camera", "{d0}", "--record", "{out}/run.webm"], "cannot write '.webm' files"),
    ("record-no-extension", ["--camera", "{d0}", "--record", "{out}/run"], "a file without an extension"),
    ("setting-nan", ["--camera", "{d0}", "--expression-multiplier", "nan"], "expression_multiplier"),
    ("weights-missing", ["--camera", "{d0}", "--backend", "torch", "--weights", "{out}/none"],
     "5 LivePortrait checkpoint(s) missing"),
    ("weights-empty-files", ["--camera", "{d0}", "--backend", "torch", "--weights", "{dir}/weights_empty_files"],
     "appearance_feature_extractor.pth: not a readable PyTorch checkpoint"),
]
if Path("/proc/self").is_dir():
    IN_PROCESS_ERRORS.append(("record-unwritable", ["--camera", "{d0}", "--record", "/proc/avatarcam.mp4"],
                              "cannot write there"))


@pytest.mark.parametrize("args, message", [c[1:] for c in IN_PROCESS_ERRORS], ids=[c[0] for c in IN_PROCESS_ERRORS])
def test_bad_input_before_the_loop_is_one_line_exit_2(args: list[str], message: str, bad, in_process,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(dir=bad["dir"], d0=bad["d0"], out=out) for a in args]
    if "--record" not in argv:
        argv += ["--record", str(out / "run.mp4")]
    if "--backend" in argv:
        argv = ["--headless", "--no-virtual-camera", "--device", "cpu", "--no-download", *argv]
    else:
        argv = [*STUB, *argv]
    status, err = in_process(*argv, "--max-frames", "1")
    assert_outcome(status, err, EXIT_BAD_INPUT, message)
    assert list(out.iterdir()) == []                  # no recording started, no probe file left


# --------------------------------------------------------------------------- odd avatars that work
@pytest.mark.parametrize("name, size", [("gray.png", 512), ("rgba.png", 512), ("16bit.png", 512),
                                        ("huge.jpg", 1920)])
def test_odd_avatar_formats_are_animated(name: str, size: int, bad, in_process, tmp_path: Path) -> None:
    out = tmp_path / "run.mp4"
    status, err = in_process(*STUB, "--avatar", str(bad[name]), "--camera", str(bad["d0"]),
                             "--max-frames", "2", "--record", str(out))
    assert_outcome(status, err, EXIT_OK)
    frames = recorded_frames(out)
    assert len(frames) == 2 and frames[0].shape == (size, size, 3)     # a huge one is downscaled once


# --------------------------------------------------------------------------- subprocess: native libraries speak
SUBPROCESS_ERRORS = [
    ("avatar-without-face", ["--avatar", "{dir}/noface.png", "--camera", "{d0}"], "no face found"),
    ("video-missing", ["--camera", "{dir}/missing.mp4"], "video file not found"),
    ("video-corrupt", ["--camera", "{dir}/corrupt.mp4"], "cannot open video file"),
    ("camera-absent", ["--camera", "97"], "cannot open camera '97'"),
    ("video-without-face", ["--camera", "{dir}/noface.mp4", "--max-frames", "3"], "no face found in the 10 frames of"),
]


@pytest.mark.parametrize("args, message", [c[1:] for c in SUBPROCESS_ERRORS], ids=[c[0] for c in SUBPROCESS_ERRORS])
@pytest.mark.integration
def test_bad_input_shows_no_native_noise(args: list[str], message: str, bad, tmp_path: Path) -> None:
    argv = [a.format(dir=bad["dir"], d0=bad["d0"]) for a in args]
    if "--max-frames" not in argv:
        argv += ["--max-frames", "1"]
    proc = run_main(*STUB, *argv, "--record", str(tmp_path / "run.mp4"))
    assert_outcome(proc.returncode, proc.stderr, EXIT_BAD_INPUT, message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_debug_log_level_lets_native_messages_through(bad) -> None:
    proc = run_main(*STUB, "--camera", str(bad["corrupt.mp4"]), "--log-level", "DEBUG")
    assert proc.returncode == EXIT_BAD_INPUT
    assert "moov atom not found" in proc.stderr                         # FFmpeg, via OpenCV
    assert "error: cannot open video file" in proc.stderr


@pytest.mark.integration
def test_screenshot_to_an_unknown_format_fails_before_the_window_starts(bad, tmp_path: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", AVATARCAM_SETTINGS=str(tmp_path / "settings.ini"))
    proc = run_main("--backend", "stub", "--camera", str(bad["d0"]), "--screenshot", str(tmp_path / "shot.txt"),
                    env=env)
    assert_outcome(proc.returncode, proc.stderr, EXIT_BAD_INPUT, "--screenshot")
    assert "backend:" not in proc.stderr                                 # nothing was loaded
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- end of a video file
@pytest.mark.integration
def test_video_with_fewer_faces_than_asked_says_how_many_and_exits_0(bad, tmp_path: Path) -> None:
    """Also the first screen of a normal start: only our own log lines."""
    out = tmp_path / "run.mp4"
    proc = run_main(*STUB, "--camera", str(bad["d0"]), "--max-frames", "100", "--record", str(out))
    assert_outcome(proc.returncode, proc.stderr, EXIT_OK)
    assert "only 78 of the 100 frames" in proc.stderr
    assert len(recorded_frames(out)) == 78


@pytest.mark.integration
def test_video_without_face_outputs_only_the_avatar(bad, tmp_path: Path) -> None:
    out = tmp_path / "run.mp4"
    proc = run_main(*STUB, "--camera", str(bad["noface.mp4"]), "--record", str(out))
    assert_outcome(proc.returncode, proc.stderr, EXIT_OK)
    assert "no face found in the 10 frames" in proc.stderr
    frames = recorded_frames(out)
    assert len(frames) == 10
    assert_only_avatar(frames, recorded_frames(bad["noface.mp4"]))


# --------------------------------------------------------------------------- interrupted and failing live runs
@pytest.mark.integration
def test_ctrl_c_on_a_live_camera_without_face_keeps_a_playable_recording(bad, tmp_path: Path) -> None:
    """A live camera never ends for want of a face (the avatar holds); Ctrl+C does, with status 130,
    and the recording holds every frame so far, none of them showing the camera."""
    out = tmp_path / "live.mp4"
    proc = start_main(*STUB, "--camera", str(bad["noface.mp4"]), "--loop", "--record", str(out))
    try:
        wait_for_file(out, 20_000, proc)
        time.sleep(0.5)
        assert proc.poll() is None, "a live camera without a face ended the run"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_outcome(proc.returncode, stderr, EXIT_INTERRUPTED)
    assert "interrupted" in stderr
    frames = recorded_frames(out)
    assert len(frames) == logged_frame_count(stderr) > 0
    assert_only_avatar(frames, recorded_frames(bad["noface.mp4"]))


@pytest.mark.integration
def test_recording_moved_mid_run_ends_the_run_and_stays_playable(bad, tmp_path: Path) -> None:
    out, moved = tmp_path / "live.mp4", tmp_path / "moved.mp4"
    proc = start_main(*STUB, "--camera", str(bad["d0"]), "--loop", "--record", str(out))
    try:
        wait_for_file(out, 20_000, proc)
        out.rename(moved)
        _, stderr = proc.communicate(timeout=20)                    # ends by itself
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_outcome(proc.returncode, stderr, EXIT_BAD_INPUT, "was removed or replaced while recording")
    kept = int(re.search(r"recording stopped after (\d+) frames", stderr).group(1))
    assert kept == logged_frame_count(stderr) > 0
    assert len(recorded_frames(moved)) == kept


def test_recorder_stops_before_the_disk_is_full_and_keeps_what_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "rec.mp4"
    rec = VideoRecorder(path, 25)
    failed: list[tuple[str, Exception]] = []
    stage = OutputStage([rec], on_sink_failed=lambda sink, error: failed.append((sink.name, error)))
    frame = np.full((64, 80, 3), 128, np.uint8)
    for _ in range(3):
        stage.process(frame, True)
    rec.min_free_bytes = 2**62                                       # as if the disk had filled up
    stage.process(frame, True)
    stage.process(frame, True)                                       # the recorder is gone by now
    assert [name for name, _ in failed] == ["recorder"] and isinstance(failed[0][1], RecordingError)
    assert "is full" in rec.error and stage.sinks == []
    assert rec.frames == 4 and len(recorded_frames(path)) == 4       # closed by the stage: playable
    with pytest.raises(RecordingError):
        rec.send(frame, True)                                        # never writes after a failure


@pytest.mark.parametrize("suffix", VideoRecorder.SUFFIXES)
def test_every_accepted_recording_extension_is_written_and_plays(suffix: str, tmp_path: Path) -> None:
    rec = VideoRecorder(tmp_path / f"rec{suffix}", 25)
    for value in (0, 100, 200):
        rec.send(np.full((48, 64, 3), value, np.uint8), True)
    rec.close()
    assert len(recorded_frames(rec.path)) == 3


# --------------------------------------------------------------------------- weights (the kit's fake checkpoints)
@pytest.mark.integration
def test_truncated_checkpoint_is_named_before_the_camera_opens(synthetic_weights_dir: Path, bad,
                                                               tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    for rel in CHECKPOINT_FILES.values():
        (weights / rel).parent.mkdir(parents=True, exist_ok=True)
        (weights / rel).symlink_to(synthetic_weights_dir / rel)
    first = weights / CHECKPOINT_FILES["appearance_feature_extractor"]
    data = first.read_bytes()
    first.unlink()
    first.write_bytes(data[: len(data) // 2])
    proc = run_main("--headless", "--no-virtual-camera", "--backend", "torch", "--device", "cpu", "--no-download",
                    "--weights", str(weights), "--camera", str(bad["d0"]), "--max-frames", "1")
    assert_outcome(proc.returncode, proc.stderr, EXIT_BAD_INPUT,
                   "appearance_feature_extractor.pth: not a readable PyTorch checkpoint")
    assert "opened" not in proc.stderr                                   # the camera never was
