"""Video avatars on the host: the ping-pong index, the per-frame face boxes (held where no face is
found, smoothed both ways), clear errors for clips without frames or faces, and the clip made of a
render server's uploaded crops."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from app.avatar.face import NoFaceError
from app.avatar.framing import AvatarBox
from app.avatar.video import (
    avatar_video_from_crops,
    hold_missing,
    is_video_file,
    load_avatar_video,
    pingpong_index,
    smooth_params,
)
from app.face import crop as fc
from app.face.layout import MEDIAPIPE_478
from app.imaging.image_io import ImageError


class ScriptedFaces:
    """A landmark source that 'tracks' the given faces in turn (None: no face in that frame)."""

    layout = MEDIAPIPE_478

    def __init__(self, faces: list[np.ndarray | None]) -> None:
        self.faces = list(faces)
        self.calls = 0

    def track(self, frame: np.ndarray) -> np.ndarray | None:
        face = self.faces[self.calls]
        self.calls += 1
        return face

    def detect_faces(self, image: np.ndarray) -> list[np.ndarray]:
        raise AssertionError("a clip is tracked, not detected frame by frame")

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def write_clip(path: Path, frames: int, size: tuple[int, int] = (320, 240), fps: float = 20.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 + 10 * i, np.uint8))
    writer.release()
    return path


def test_is_video_file_by_suffix() -> None:
    assert is_video_file("clip.MP4") and is_video_file(Path("a/b.webm")) and is_video_file("x.mov")
    assert not is_video_file("face.png") and not is_video_file("clip")


def test_pingpong_plays_forward_then_backward_without_repeating_the_ends() -> None:
    fps = 10.0
    assert [pingpong_index(k / fps, fps, 4) for k in range(14)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]
    assert [pingpong_index(k / fps, fps, 2) for k in range(5)] == [0, 1, 0, 1, 0]
    assert pingpong_index(123.4, fps, 1) == 0
    assert pingpong_index(-1.0, fps, 5) == 0
    # on the output's clock: half a frame's time still shows the same frame; the clip's rate, not the caller's
    assert pingpong_index(0.149, fps, 4) == 1 and pingpong_index(0.3, 30.0, 20) == 9
    with pytest.raises(ValueError):
        pingpong_index(0.0, fps, 0)


def test_box_smoothing_is_two_way_a_step_is_smoothed_symmetrically_without_lag() -> None:
    n, step = 40, 20
    params = np.zeros((n, 4))
    params[:, 2] = 100.0
    params[step:, 0] = 50.0                     # the centre jumps by 50 px at frame 20
    out = smooth_params(params, 2.5)
    x = out[:, 0]
    assert np.all(np.diff(x) >= -1e-9) and x[step - 1] > 1.0 and x[step] < 49.0     # smoothed, not a jump
    # symmetric around the step: as much before it as after (a one-way filter would lag behind)
    for k in range(8):
        assert x[step - 1 - k] + x[step + k] == pytest.approx(50.0, abs=1e-6)
    assert np.allclose(out[:, 2], 100.0)        # a constant stays as it is
    assert np.array_equal(smooth_params(params, 0.0), params)


def test_hold_missing_keeps_the_last_value_and_the_first_before_it() -> None:
    a, b = np.array([1.0]), np.array([2.0])
    assert hold_missing([None, a, None, None, b, None]).ravel().tolist() == [1, 1, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        hold_missing([None, None])


def test_frames_without_a_face_keep_the_last_box_and_ratios(avatar_face, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.avi", 8)
    base = avatar_face.landmarks * 0.3          # the avatar's face, small enough for the clip
    shifted = [base + [10.0 * i, 0.0] for i in range(8)]
    faces: list[np.ndarray | None] = [None, shifted[1], shifted[2], None, None, shifted[5], shifted[6], None]
    video = load_avatar_video(clip, ScriptedFaces(faces), smooth_seconds=0.0)
    assert video.num_frames == 8 and video.fps == pytest.approx(20.0) and video.faces_found == 4
    own = {i: fc.crop_params(f, MEDIAPIPE_478, fc.AVATAR_CROP).as_array() for i, f in enumerate(faces) if f is not None}
    expected = {0: 1, 1: 1, 2: 2, 3: 2, 4: 2, 5: 5, 6: 6, 7: 6}          # frame -> the face whose box it shows
    for frame, source in expected.items():
        assert np.allclose(video.params[frame], own[source]), frame
        assert np.array_equal(video.eye_ratios[frame], video.eye_ratios[source])
    face = video.face(3)
    assert face.image.shape == (240, 320, 3) and face.crop.shape == (512, 512, 3)
    assert face.has_landmarks and face.num_faces == 0 and face.landmarks.shape == (0, 2)
    assert np.allclose(face.transform.M_o2c, fc.transform_from_params(fc.CropParams(*own[2]), 512).M_o2c)
    # smoothed (the default): the boxes move smoothly, both ways
    smoothed = load_avatar_video(clip, ScriptedFaces(faces))
    assert not np.allclose(smoothed.params, video.params) and np.isfinite(smoothed.params).all()


def test_a_clip_limits_to_max_seconds_and_keeps_frames_compressed(avatar_face, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.avi", 12, size=(640, 480))
    face = avatar_face.landmarks * 0.5
    video = load_avatar_video(clip, ScriptedFaces([face] * 12), max_seconds=0.5)
    assert video.num_frames == 10                   # 0.5 s at 20 fps
    raw = 10 * 640 * 480 * 3
    assert video.memory_bytes < raw / 5             # JPEG frames, not raw ones
    assert abs(int(video.image(4)[100, 100, 0]) - 60) <= 3      # frame 4 decodes to its own content


def test_a_fixed_box_frames_every_frame_untracked(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.avi", 3)
    video = load_avatar_video(clip, ScriptedFaces([]), box=AvatarBox(50, 20, 200))
    assert np.allclose(video.params, [[150, 120, 200, 0]] * 3)
    assert video.eye_ratios is None and not video.face(1).has_landmarks
    assert video.face(1).box == AvatarBox(50, 20, 200)


def test_clear_errors_for_an_unreadable_clip_and_one_without_a_face(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(ImageError, match="broken.mp4"):
        load_avatar_video(broken, ScriptedFaces([]))
    with pytest.raises(ImageError, match="not found"):
        load_avatar_video(tmp_path / "missing.mp4", ScriptedFaces([]))
    clip = write_clip(tmp_path / "faceless.avi", 4)
    with pytest.raises(NoFaceError, match="faceless.avi"):
        load_avatar_video(clip, ScriptedFaces([None] * 4))


def test_a_clip_of_uploaded_crops_keeps_them_exactly() -> None:
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(3)]
    eyes, lips = np.full((3, 2), 0.3, np.float32), np.full((3, 1), 0.1, np.float32)
    video = avatar_video_from_crops(crops, eyes, lips, fps=24.0)
    for i, crop in enumerate(crops):
        face = video.face(i)
        assert np.array_equal(face.crop, crop) and np.array_equal(face.image, crop)
        assert np.allclose(face.transform.M_o2c, np.eye(3)) and face.has_landmarks
    with pytest.raises(ValueError, match="512x512x3"):
        avatar_video_from_crops([crops[0][:256]], None, None, fps=24.0)
