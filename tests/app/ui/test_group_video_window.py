"""The window with group photos and video avatars (pytest-qt, offscreen): the avatar panel's per-face
check boxes (shown for a group photo only, one per face, at least one on), switching a face off
reloads the avatar with ``AvatarChoice.faces`` and is remembered per avatar; a video clip is
offered by the picker, gets a thumbnail from its first frame, and is loaded and animated by the
window. The group photo is two of the kit's portraits tiled at test time (real face tracking,
MediaPipe), the clip a few frames of d0.mp4; nothing is copied into the repository."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PySide6 import QtCore, QtGui
from support.fakes import local_session
from support.group_photo import group_photo

from app.avatar.face import NoFaceError
from app.avatar.framing import AvatarBox, AvatarChoice
from app.avatar.loading import DEFAULT_AVATAR
from app.live.capture import read_video_frames
from app.settings import LiveSettings
from app.ui.avatar_panel import AVATAR_FILTER, AvatarPanel, first_video_frame, thumbnail
from app.ui.main_window import MainWindow
from app.ui.settings_store import SettingsStore

CLIP_SIZE = (480, 360)          # width, height of the test clip's frames


def ini_store(path: Path) -> SettingsStore:
    return SettingsStore(QtCore.QSettings(str(path), QtCore.QSettings.Format.IniFormat))


# -- the panel and the window's decisions, with a recording session --------------------------------

def group_face(count: int, animated: tuple[int, ...], kind: str = "human"):
    """A stand-in for a loaded group photo's ``AvatarFace``: ``count`` faces found, ``animated`` on."""
    faces = [SimpleNamespace(number=n) for n in animated]
    first = SimpleNamespace(image=np.full((240, 320, 3), 90, np.uint8), kind=kind, has_landmarks=True,
                            box=AvatarBox(0, 0, 100), num_faces=count, number=animated[0])
    first.group = (first, *faces[1:])
    return first


class RecordingSession:
    """Records what the window asks of its session; nothing runs."""

    def __init__(self, face) -> None:
        self.animator = SimpleNamespace(avatar=SimpleNamespace(face=face), has_reference=True)
        self.renderer = SimpleNamespace(where="cpu", remote=False)
        self.avatar_path: str | None = None
        self.loads: list[AvatarChoice] = []
        self.pipeline = None
        self.stats = None

    def load_avatar_async(self, choice: AvatarChoice) -> None:
        self.loads.append(choice)

    def close(self) -> bool:
        return True


@pytest.fixture()
def recorded(qtbot, tmp_path: Path):
    """A window showing a (stand-in) 3-face group photo at ``group.png``, all faces on."""
    win = MainWindow(LiveSettings(), ini_store(tmp_path / "settings.ini"))
    qtbot.addWidget(win)
    path = tmp_path / "group.png"
    cv2.imwrite(str(path), np.full((240, 320, 3), 90, np.uint8))
    win.attach(RecordingSession(group_face(3, (1, 2, 3))), str(path), AvatarChoice(path))
    yield win, path
    win.close()


def loaded(window: MainWindow, choice: AvatarChoice, face) -> None:
    window.session.animator.avatar.face = face
    window.bridge.avatar_loaded.emit(str(choice.path), SimpleNamespace(face=face))


def shown_boxes(panel: AvatarPanel) -> list[tuple[str, bool]]:
    return [(b.text(), b.isChecked()) for b in panel.face_boxes if not b.isHidden()]


def test_a_group_photo_shows_one_box_per_face(recorded) -> None:
    window, _ = recorded
    panel = window.avatar_panel
    assert not panel.faces_row.isHidden()
    assert shown_boxes(panel) == [("1", True), ("2", True), ("3", True)]
    assert "left to right" in panel.face_boxes[0].toolTip()


@pytest.mark.parametrize("face, path", [
    (group_face(1, (1,)), "one.png"),                           # one face
    (group_face(2, (1,), kind="animal"), "cat.png"),            # an animal
    (group_face(2, (1,)), "clip.mp4"),                          # a video
])
def test_no_boxes_for_one_face_animals_and_videos(recorded, face, path: str) -> None:
    window, group = recorded
    choice = AvatarChoice(group.parent / path, face.kind)
    window.request_avatar_choice(choice)
    loaded(window, choice, face)
    assert window.avatar_panel.faces_row.isHidden()


def test_switching_a_face_off_reloads_with_the_others_and_one_stays_on(recorded) -> None:
    window, path = recorded
    panel, session = window.avatar_panel, window.session
    panel.face_boxes[1].setChecked(False)
    assert session.loads[-1] == AvatarChoice(path, "human", None, (1, 3))
    loaded(window, session.loads[-1], group_face(3, (1, 3)))
    assert shown_boxes(panel) == [("1", True), ("2", False), ("3", True)]
    panel.face_boxes[0].setChecked(False)
    loaded(window, session.loads[-1], group_face(3, (3,)))
    asked = len(session.loads)
    panel.face_boxes[2].setChecked(False)                 # the last one on: refused
    assert len(session.loads) == asked and panel.face_boxes[2].isChecked()
    # remembered for the file: picked again, it loads with face 3 alone
    window.request_avatar(str(path))
    assert session.loads[-1].faces == (3,)


def test_a_corrected_box_stays_only_on_its_face(recorded) -> None:
    window, path = recorded
    session = window.session
    box = AvatarBox(5, 5, 80)
    window.request_avatar_choice(AvatarChoice(path, "human", box, (1, 2, 3)))
    loaded(window, session.loads[-1], group_face(3, (1, 2, 3)))
    window.avatar_panel.face_boxes[2].setChecked(False)           # face 1 still first: the box stays
    assert session.loads[-1] == AvatarChoice(path, "human", box, (1, 2))
    loaded(window, session.loads[-1], group_face(3, (1, 2)))
    window.avatar_panel.face_boxes[0].setChecked(False)           # face 2 first now: detected again
    assert session.loads[-1] == AvatarChoice(path, "human", None, (2,))


def test_remembered_faces_the_photo_lacks_load_all_faces(recorded) -> None:
    window, path = recorded
    asked = AvatarChoice(path, "human", None, (4,))
    window.request_avatar_choice(asked)
    window.bridge.avatar_failed.emit(asked, NoFaceError("face 4 asked for (--faces), but 3 faces found"))
    assert window.session.loads[-1] == AvatarChoice(path, "human", None, None)
    assert not window.editing_box


def test_the_box_editor_keeps_a_group_animated(recorded) -> None:
    window, path = recorded
    window.adjust_box()
    assert window.editing_box
    window.box_editor.animate_button.click()
    assert window.session.loads[-1].faces == (1, 2, 3) and window.session.loads[-1].box is not None


# -- videos in the panel -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip(d0: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six frames of d0.mp4 at CLIP_SIZE as a clip (a video avatar)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, CLIP_SIZE)
    for frame in read_video_frames(d0, 6):
        writer.write(cv2.resize(frame, CLIP_SIZE, interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def test_the_picker_offers_videos_and_shows_their_first_frame(qtbot, clip: Path, monkeypatch) -> None:
    assert "*.mp4" in AVATAR_FILTER and "*.png" in AVATAR_FILTER and "*.mov" in AVATAR_FILTER
    frame = first_video_frame(clip)
    assert frame is not None and frame.shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)
    pixmap = thumbnail(str(clip))
    assert pixmap is not None and min(pixmap.width(), pixmap.height()) == 48
    assert first_video_frame(clip.with_name("missing.mp4")) is None
    panel = AvatarPanel()
    qtbot.addWidget(panel)
    panel.set_current(str(clip))
    button = panel.recent_row.itemAt(0).widget()
    assert button.toolTip() == str(clip) and not button.icon().isNull()
    # the row is rebuilt at every switch: a video is decoded once, not each time
    decoded: list[str] = []
    monkeypatch.setattr("app.ui.avatar_panel.thumbnail", lambda path: decoded.append(path))
    panel.set_current(str(DEFAULT_AVATAR))
    panel.set_current(str(clip))
    assert decoded == [str(DEFAULT_AVATAR)]


# -- real loading: a 2-face photo and a clip through the window's session ------------------------------

@pytest.fixture()
def live(qtbot, tmp_path: Path, avatar_face):
    """A window on a local session (stub backend, the real avatar loading with MediaPipe)."""
    settings = LiveSettings()
    win = MainWindow(settings, ini_store(tmp_path / "settings.ini"))
    qtbot.addWidget(win)
    win.attach(local_session(avatar_face, settings, win.callbacks()), str(DEFAULT_AVATAR))
    win.show()
    yield win
    win.close()


def loaded_avatars(window: MainWindow) -> list:
    """The avatars the session reports loaded from now on (the animator takes them at its next frame)."""
    avatars: list = []
    window.bridge.avatar_loaded.connect(lambda path, avatar: avatars.append(avatar))
    return avatars


@pytest.mark.integration
def test_a_real_two_face_photo_gets_its_boxes_and_a_face_switched_off_stays_off(live, qtbot, examples: Path,
                                                                                tmp_path: Path) -> None:
    path = tmp_path / "pair.png"
    cv2.imwrite(str(path), group_photo(examples, 2))
    avatars = loaded_avatars(live)
    live.request_avatar(str(path))
    qtbot.waitUntil(lambda: len(avatars) == 1, timeout=60000)
    assert avatars[-1].batch == 2 and live.avatar_panel.current.text() == "pair.png"
    assert shown_boxes(live.avatar_panel) == [("1", True), ("2", True)]
    live.avatar_panel.face_boxes[0].setChecked(False)
    qtbot.waitUntil(lambda: len(avatars) == 2, timeout=60000)
    face = avatars[-1].face
    assert avatars[-1].batch == 1 and face.number == 2 and face.others == ()
    assert shown_boxes(live.avatar_panel) == [("1", False), ("2", True)]
    assert live.store.avatar_choice(str(path)).faces == (2,)
    # back to the astronaut and to the pair again: face 1 stays off
    live.request_avatar(str(DEFAULT_AVATAR))
    qtbot.waitUntil(lambda: len(avatars) == 3, timeout=60000)
    assert live.avatar_panel.faces_row.isHidden()
    live.request_avatar(str(path))
    qtbot.waitUntil(lambda: len(avatars) == 4, timeout=60000)
    assert avatars[-1].face.number == 2 and avatars[-1].batch == 1
    assert shown_boxes(live.avatar_panel) == [("1", False), ("2", True)]


@pytest.mark.integration
def test_a_dropped_video_becomes_the_avatar_and_plays(live, qtbot, clip: Path, d0: Path) -> None:
    live.request_camera(str(d0), 640, 360)
    qtbot.waitUntil(lambda: live.frames_tracked >= 2, timeout=30000)
    avatars = loaded_avatars(live)
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(clip))])
    live.dropEvent(QtGui.QDropEvent(QtCore.QPointF(50, 50), QtCore.Qt.DropAction.CopyAction, mime,
                                    QtCore.Qt.MouseButton.NoButton, QtCore.Qt.KeyboardModifier.NoModifier))
    qtbot.waitUntil(lambda: len(avatars) == 1, timeout=60000)
    avatar = avatars[-1]
    assert live.avatar_panel.current.text() == "clip.mp4"
    assert avatar.video is not None and avatar.video.num_frames == 6
    assert live.avatar_panel.faces_row.isHidden() and live.avatar_panel.recent[0] == str(clip)
    tracked = live.frames_tracked
    # the clip's own frames reach the preview, animated
    qtbot.waitUntil(lambda: live.frames_tracked >= tracked + 3 and live.preview._image is not None
                    and live.preview._image.size() == QtCore.QSize(*CLIP_SIZE), timeout=30000)


# -- the screenshot contract: a group photo and a video avatar end to end ------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("avatar", ["pair", "clip"])
def test_screenshot_contract_runs_a_group_photo_and_a_video(avatar: str, tmp_path: Path, examples: Path,
                                                            clip: Path, d0: Path) -> None:
    """python main.py --avatar GROUP.png|CLIP.mp4 --camera d0.mp4 --backend stub --screenshot OUT.png"""
    import os

    from support.fakes import run_main

    if avatar == "pair":
        path = tmp_path / "pair.png"
        cv2.imwrite(str(path), group_photo(examples, 2))
    else:
        path = clip
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", AVATARCAM_SETTINGS=str(tmp_path / "settings.ini"))
    proc = run_main("--avatar", str(path), "--camera", str(d0), "--backend", "stub", "--max-frames", "3",
                    "--screenshot", str(out), timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("2 faces found, animating 1, 2" if avatar == "pair" else "video avatar") in proc.stderr
    image = QtGui.QImage(str(out))
    assert image.width() >= 800 and image.height() >= 500
    assert ini_store(tmp_path / "settings.ini").last_avatar() == str(path)
