"""The live loop: animator behaviour, settings, threaded pipeline, outputs and privacy.

Threading tests use the stub backend (no networks) and the kit's driving video as the camera."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support.fakes import FakeVirtualCamera, ScriptedBackend, fake_face, make_animator

from app.animation.animator import Animator
from app.animation.frames import Status
from app.avatar.face import prepare_avatar_face
from app.avatar.prepared import prepare_avatar
from app.face.tracker import MediaPipeFaceMesh
from app.live.capture import CameraError, CameraRequest, CameraSource, read_video_frames
from app.live.pipeline import FrameQueue, Pipeline
from app.live.sinks import (
    OutputStage,
    VideoRecorder,
    VirtualCameraSink,
    VirtualCameraUnavailable,
    letterbox,
    virtual_camera_fix,
)
from app.live.wiring import build_pipeline
from app.settings import LiveSettings
from engines.backend import StubBackend


# --------------------------------------------------------------------------- helpers
# --------------------------------------------------------------------------- settings
def test_settings_validate_and_update_atomically() -> None:
    live = LiveSettings()
    seen = []
    live.subscribe(seen.append)
    s = live.update(eye_mode="fixed", eye_target=0.5, rotation_multiplier=[1, 0.5, 1])
    assert live.snapshot() is s and s.rotation_multiplier == (1.0, 0.5, 1.0) and seen == [s]
    with pytest.raises(ValueError, match="eye_target: expected 0..0.8"):
        live.update(eye_target=0.9)
    with pytest.raises(ValueError, match="unknown setting"):
        live.update(eye_targett=0.1)
    assert live.snapshot() is s   # a rejected update changes nothing


# --------------------------------------------------------------------------- animator
def test_neutral_reference_averages_steady_frames_and_recalibrates(avatar_face) -> None:
    backend = ScriptedBackend()
    anim, live = make_animator(avatar_face, backend, reference_frames=5, smooth_rotation=0.0)
    statuses = []
    for i in range(6):
        backend.pose = (0.0, 1.0 if i % 2 else -1.0, 0.0)    # +-1 degree jitter: still steady
        statuses.append(anim.process(fake_face(), i / 30).status)
    assert statuses[:4] == [Status.CALIBRATING] * 4 and statuses[4] == Status.LIVE
    assert anim.has_reference
    assert anim.reference.vector[1].item() == pytest.approx(-0.2)   # mean of 5 frames, not the first one
    anim.calibrate()
    backend.pose = (0.0, 20.0, 0.0)
    assert anim.process(fake_face(), 1.0).status == Status.CALIBRATING
    assert anim.reference.vector[1].item() == pytest.approx(20.0)


def test_relative_motion_multipliers_limits_and_translation_lock(avatar_face) -> None:
    backend = ScriptedBackend()
    anim, live = make_animator(avatar_face, backend, reference_frames=1, smooth_rotation=0, smooth_translation=0,
                               smooth_expression=0, stitching=False, normalize_lip=False)
    src = anim.avatar
    anim.process(fake_face(), 0.0)                       # reference = this frame: no motion
    neutral = anim.last_keypoints.clone()
    assert torch.allclose(neutral, src.x_s, atol=1e-5)
    backend.pose = (0.0, 30.0, 0.0)
    anim.process(fake_face(), 0.1)
    turned = anim.last_keypoints.clone()
    live.update(rotation_multiplier=(1.0, 0.0, 1.0))      # effective on the next frame
    anim.process(fake_face(), 0.2)
    assert torch.allclose(anim.last_keypoints, neutral, atol=1e-5)
    live.update(rotation_multiplier=(1.0, 1.0, 1.0), rotation_limit_deg=(45.0, 10.0, 45.0))
    anim.process(fake_face(), 0.3)
    limited = anim.last_keypoints.clone()
    assert (limited - neutral).abs().max() < (turned - neutral).abs().max() * 0.5
    backend.pose, backend.t = (0.0, 0.0, 0.0), (0.3, 0.0)
    anim.process(fake_face(), 0.4)
    moved = anim.last_keypoints.clone()
    assert torch.allclose(moved[..., 0] - neutral[..., 0], torch.full_like(moved[..., 0], 0.3), atol=1e-5)
    live.update(translation_lock=True)
    anim.process(fake_face(), 0.5)
    assert torch.allclose(anim.last_keypoints, neutral, atol=1e-5)
    backend.t, backend.exp_offset = (0.0, 0.0), 0.1
    live.update(expression_multiplier=0.0)
    anim.process(fake_face(), 0.6)
    assert torch.allclose(anim.last_keypoints, neutral, atol=1e-5)


def test_eye_retargeting_fixed_and_follow(avatar_face) -> None:
    backend = ScriptedBackend()
    anim, live = make_animator(avatar_face, backend, reference_frames=1, eye_mode="fixed", eye_target=0.6,
                               smooth_eyes=0)
    anim.process(fake_face(eye=0.3), 0.0)
    assert backend.eye_inputs[-1][0, -1].item() == pytest.approx(0.6)
    live.update(eye_mode="follow")
    anim.process(fake_face(eye=0.15), 0.1)           # user closes to half their neutral openness
    expected = 0.15 * anim.avatar.eye_ratios.mean().item() / 0.3
    assert backend.eye_inputs[-1][0, -1].item() == pytest.approx(expected, rel=1e-4)
    assert backend.eye_inputs[-1][0, 63:65].numpy() == pytest.approx(anim.avatar.eye_ratios[0].numpy())


def test_face_lost_holds_then_eases_to_neutral_and_resumes_smoothly(avatar_face) -> None:
    backend = ScriptedBackend()
    anim, live = make_animator(avatar_face, backend, reference_frames=1, hold_seconds=0.15, ease_seconds=0.5,
                               smooth_rotation=0.5)
    anim.process(fake_face(), 0.0)
    neutral = anim.last_keypoints.clone()
    backend.pose = (0.0, 25.0, 0.0)
    t = 0.0
    for _ in range(30):                                      # turn the head and hold it there
        t += 1 / 30
        anim.process(fake_face(), t)
    turned = anim.last_keypoints.clone()
    lost_at = t
    statuses, distances = [], []
    while t < lost_at + 1.0:
        t += 1 / 30
        f = anim.process(None, t)
        statuses.append((round(t - lost_at, 3), f.status))
        distances.append(float((anim.last_keypoints - neutral).abs().max()))
    kinds = [s for _, s in statuses]
    assert kinds[0] == Status.HOLDING and Status.EASING in kinds and kinds[-1] == Status.NEUTRAL
    first_neutral = next(dt for dt, s in statuses if s == Status.NEUTRAL)
    assert first_neutral <= 0.15 + 0.5 + 0.05                  # back to neutral within about half a second
    assert distances[-1] < 1e-5
    eased = [d for (_, s), d in zip(statuses, distances, strict=False) if s == Status.EASING]
    assert all(a >= b - 1e-6 for a, b in zip(eased, eased[1:], strict=False))   # monotone glide, no jump
    # the face comes back turned: the first live frame starts near neutral, then moves on
    t += 1 / 30
    anim.process(fake_face(), t)
    first_back = float((anim.last_keypoints - neutral).abs().max())
    full = float((turned - neutral).abs().max())
    assert first_back < 0.2 * full
    for _ in range(15):                                       # 0.5 s later it follows the face fully
        t += 1 / 30
        anim.process(fake_face(), t)
    assert float((anim.last_keypoints - turned).abs().max()) < 0.05 * full


def test_nan_motion_is_skipped_not_rendered(avatar_face) -> None:
    backend = ScriptedBackend()
    anim, _ = make_animator(avatar_face, backend, reference_frames=1)
    good = anim.process(fake_face(), 0.0)
    backend.pose = (float("nan"), 0.0, 0.0)
    out = anim.process(fake_face(), 0.1)
    assert out.image is good.image and not out.rendered


def test_crop_only_and_mirror_outputs(avatar_face) -> None:
    anim, live = make_animator(avatar_face, reference_frames=1)
    full = anim.process(fake_face(), 0.0).image
    assert full.shape == avatar_face.image.shape
    live.update(paste_back=False)
    crop = anim.process(fake_face(), 0.1).image
    assert crop.shape == (512, 512, 3)
    live.update(mirror=True)
    mirrored = anim.process(fake_face(), 0.2).image
    assert np.array_equal(mirrored, crop[:, ::-1])


def test_output_toggles_while_the_face_is_lost_take_effect_at_once(avatar_face) -> None:
    """Held and neutral images are kept for one output (full picture or crop, mirrored or not):
    toggling either while the face is lost shows the new output on the next frame."""
    anim, live = make_animator(avatar_face, reference_frames=1, hold_seconds=0.5, ease_seconds=0.1)
    full = anim.process(fake_face(), 0.0).image
    held = anim.process(None, 0.1)
    assert held.status == Status.HOLDING and held.image is full
    live.update(paste_back=False)                                  # "Full picture" off while holding
    crop = anim.process(None, 0.2)
    assert crop.rendered and crop.image.shape == (512, 512, 3)
    assert anim.process(None, 0.25).image is crop.image            # and held from then on
    live.update(paste_back=True)
    assert anim.process(None, 0.3).image.shape == avatar_face.image.shape
    neutral = anim.process(None, 1.0)                              # the finished ease, kept
    assert neutral.status == Status.NEUTRAL and anim.process(None, 1.1).image is neutral.image
    live.update(paste_back=False)
    crop_neutral = anim.process(None, 1.2)
    assert crop_neutral.status == Status.NEUTRAL and crop_neutral.image.shape == (512, 512, 3)
    live.update(mirror=True)
    mirrored = anim.process(None, 1.3)
    assert mirrored.status == Status.NEUTRAL and np.array_equal(mirrored.image, crop_neutral.image[:, ::-1])


def test_avatar_switch_takes_effect_between_frames(avatar_face, examples: Path) -> None:
    anim, _ = make_animator(avatar_face, reference_frames=1)
    assert anim.process(fake_face(), 0.0).image.shape == (512, 512, 3)
    mesh = MediaPipeFaceMesh()
    other = prepare_avatar(prepare_avatar_face(examples / "s0.jpg", mesh), anim.backend)
    mesh.close()
    anim.set_avatar(other)
    assert anim.process(fake_face(), 0.1).image.shape == (704, 600, 3)


# --------------------------------------------------------------------------- outputs
def test_virtual_camera_letterboxes_to_even_width() -> None:
    sink = VirtualCameraSink(1281, 720, 30, backend="avatarcam-test")
    assert (sink.width, sink.height) == (1280, 720)
    sink.send(np.full((704, 600, 3), 200, np.uint8), True)
    frame = FakeVirtualCamera.frames[-1]
    assert frame.shape == (720, 1280, 3)
    assert (frame[:, :100] == 0).all() and (frame[360, 640] == 200).all()    # bars left/right, picture centred
    sink.close()


def test_missing_virtual_camera_names_the_fix() -> None:
    with pytest.raises(VirtualCameraUnavailable) as err:
        VirtualCameraSink(backend="avatarcam-missing")
    msg = str(err.value)
    assert "\n" not in msg and "fix:" in msg and virtual_camera_fix() in msg
    if __import__("sys").platform.startswith("linux"):
        assert "modprobe v4l2loopback" in msg and "exclusive_caps=1" in msg


def test_a_failing_sink_is_dropped_and_the_others_go_on() -> None:
    got = []

    class Broken:
        name = "broken"

        def send(self, image, tracked):
            raise OSError("disk full")

        def close(self):
            pass

    class Collecting:
        name = "collecting"

        def send(self, image, tracked):
            got.append(image)

        def close(self):
            pass

    stage = OutputStage([Broken(), Collecting()])
    stage.process(np.zeros((4, 4, 3), np.uint8), True)
    stage.process(np.zeros((4, 4, 3), np.uint8), True)
    assert len(got) == 2 and [s.name for s in stage.sinks] == ["collecting"]


def test_letterbox_keeps_aspect() -> None:
    out = letterbox(np.full((100, 400, 3), 255, np.uint8), 200, 200)
    assert out.shape == (200, 200, 3) and (out[:75] == 0).all() and (out[75:125] == 255).all()


def test_drop_oldest_queue() -> None:
    stop = threading.Event()
    q = FrameQueue(1, drop_oldest=True)
    for i in range(5):
        q.put(i, stop)
    assert q.get(stop) == 4 and q.dropped == 4


# --------------------------------------------------------------------------- pipeline
def run_stub_pipeline(camera_path: Path, avatar, *, lossless: bool, sinks=(), max_tracked=None, on_frame=None,
                      loop=False) -> Pipeline:
    backend = StubBackend()
    camera = CameraSource(CameraRequest(str(camera_path), loop=loop, paced=not lossless))
    animator = Animator(backend, LiveSettings(), prepare_avatar(avatar, backend))
    return build_pipeline(camera, animator, sinks, lossless=lossless, max_tracked_frames=max_tracked,
                          on_frame=on_frame)


def test_lossless_pipeline_renders_every_frame_and_reports_stats(d0: Path, avatar_face) -> None:
    outputs = []
    pipe = run_stub_pipeline(d0, avatar_face, lossless=True, on_frame=outputs.append)
    pipe.run()
    assert [o.index for o in outputs] == list(range(78))
    s = pipe.stats.snapshot()
    assert s.frames_out == 78 and s.frames_tracked == 78 and s.fps > 0 and s.latency_ms > 0
    assert {"capture", "tracking", "animation", "output"} <= set(s.stage_ms)
    assert not any(t.is_alive() for t in pipe.threads)


def test_no_output_frame_shows_the_camera_image(d0: Path, avatar_face) -> None:
    """Privacy: every output is the avatar (stub render = the avatar crop), never the camera frame."""
    outputs = []
    pipe = run_stub_pipeline(d0, avatar_face, lossless=True, on_frame=outputs.append)
    pipe.run()
    camera = read_video_frames(d0)
    avatar = avatar_face.image.astype(int)
    for o in outputs:
        img = o.frame.image
        assert np.abs(img.astype(int) - avatar).mean() < 3        # it is the avatar
        cam = camera[o.index]
        if img.shape == cam.shape:
            assert np.abs(img.astype(int) - cam.astype(int)).mean() > 30
        # the camera's face (centre of the frame, downscaled) appears nowhere in the output
        face = cv2.resize(cam[128:384, 128:384], (96, 96))
        score = cv2.matchTemplate(cv2.resize(img, (256, 256)), face, cv2.TM_CCOEFF_NORMED).max()
        assert score < 0.8


def test_frames_without_face_never_pass_the_camera_through(avatar_face, tmp_path: Path) -> None:
    path = tmp_path / "noface.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(10)]
    for f in frames:
        writer.write(f)
    writer.release()
    outputs = []
    run_stub_pipeline(path, avatar_face, lossless=True, on_frame=outputs.append).run()
    assert len(outputs) == 10
    assert all(o.frame.status == Status.NO_FACE_YET for o in outputs)
    assert all(np.array_equal(o.frame.image, avatar_face.image) for o in outputs)


def test_live_mode_clean_stop_within_a_second(d0: Path, avatar_face) -> None:
    frames = []
    pipe = run_stub_pipeline(d0, avatar_face, lossless=False, loop=True, on_frame=frames.append)
    pipe.start()
    time.sleep(1.5)
    assert frames, "no frame came out"
    t0 = time.perf_counter()
    assert pipe.shutdown(timeout=1.0)
    assert time.perf_counter() - t0 < 1.0
    assert not pipe.camera.cap.isOpened()                    # camera released


def test_end_of_file_shuts_down_and_records(d0: Path, avatar_face, tmp_path: Path) -> None:
    rec = VideoRecorder(tmp_path / "out.mp4", 25, only_tracked=True)
    pipe = run_stub_pipeline(d0, avatar_face, lossless=True, sinks=[rec], max_tracked=12)
    t0 = time.perf_counter()
    pipe.run()
    assert time.perf_counter() - t0 < 30
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (512, 512)


def test_unopenable_camera_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="video file not found"):
        CameraSource(CameraRequest(str(tmp_path / "missing.mp4")))
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(CameraError, match="cannot open video file"):
        CameraSource(CameraRequest(str(tmp_path / "bad.mp4")))
    with pytest.raises(CameraError, match="cannot open camera '97'"):
        CameraSource(CameraRequest("97"))


class StallingCamera:
    """A live ``FrameSource`` (not a file) that stops delivering after ``first`` frames; re-opening
    fails ``failed_reopens`` times, then brings it back."""

    is_file = False
    fps = 30.0

    def __init__(self, frame: np.ndarray, first: int, failed_reopens: int) -> None:
        self.frame, self.first, self.failed_reopens = frame, first, failed_reopens
        self.delivered = 0
        self.reopen_calls = 0
        self.back = False
        self.released = False

    def wait(self) -> None:
        time.sleep(0.01)

    def read(self) -> np.ndarray | None:
        if not self.back and self.delivered >= self.first:
            return None
        self.delivered += 1
        return self.frame

    def release(self) -> None:
        self.released = True

    def reopen(self) -> None:
        self.reopen_calls += 1
        if self.reopen_calls <= self.failed_reopens:
            raise CameraError("cannot open camera '0'")
        self.back = True


def test_a_live_source_that_stops_is_reopened_until_it_delivers(d0: Path, avatar_face) -> None:
    camera = StallingCamera(read_video_frames(d0, limit=1)[0], first=3, failed_reopens=1)
    backend = StubBackend()
    outputs = []
    pipe = build_pipeline(camera, Animator(backend, LiveSettings(), prepare_avatar(avatar_face, backend)),
                          on_frame=outputs.append).start()
    try:
        deadline = time.monotonic() + 10
        lost_seen = False
        while time.monotonic() < deadline and len(outputs) < 6:
            lost_seen |= pipe.camera_lost
            time.sleep(0.01)
        assert lost_seen, "the pipeline never reported the camera as lost"
        assert len(outputs) >= 6 and camera.reopen_calls == 2      # one failed re-open, then back
        assert not pipe.camera_lost and not pipe.finished.is_set()  # a live source does not end the stream
    finally:
        assert pipe.shutdown()
    assert camera.released
