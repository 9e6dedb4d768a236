"""The window's face box flow (pytest-qt, offscreen): an avatar without a detected face opens the
box editor with the suggested box, "Animate" loads it with that box and kind, which are remembered
per avatar; the kind switch and "Adjust face box…"; the animation panel's animal and no-landmark
modes; the box editor in a window screenshot. The session is a recording stand-in (what it is
asked to load is what the window decides); the real chain is in test_app_window.py."""
from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PySide6 import QtCore
from support.avatars import mascot_face

from app.avatar.face import NoFaceError
from app.avatar.framing import AvatarBox, AvatarChoice
from app.avatar.suggest import BoxSuggestion
from app.imaging.image_io import ImageError
from app.settings import LiveSettings
from app.ui.animation_panel import NO_LANDMARKS_NOTE
from app.ui.app import start_avatar
from app.ui.box_editor import BOX_RGB, HANDLE_PX
from app.ui.main_window import MainWindow
from app.ui.settings_store import SettingsStore

FACE_IMAGE = np.full((240, 320, 3), 90, np.uint8)      # the current avatar's (downscaled) image
FACE_BOX = AvatarBox(120, 40, 320)                       # its box, in the file's pixels (640 wide)


def fake_face(kind: str = "human", *, landmarks: bool = True, box: AvatarBox | None = FACE_BOX):
    return SimpleNamespace(image=FACE_IMAGE, kind=kind, has_landmarks=landmarks, box=box)


class FakeSession:
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


def ini_store(path: Path) -> SettingsStore:
    return SettingsStore(QtCore.QSettings(str(path), QtCore.QSettings.Format.IniFormat))


@pytest.fixture()
def cartoon(tmp_path: Path) -> Path:
    path = tmp_path / "toon.png"
    cv2.imwrite(str(path), mascot_face(640, 480)[0])
    return path


@pytest.fixture()
def suggestions() -> list:
    """What the stand-in suggester returns next (a fixed centred box, kind None, unless changed)."""
    return [BoxSuggestion(AvatarBox(160, 40, 320), None, "no face found: place the box on the face")]


@pytest.fixture()
def window(qtbot, tmp_path: Path, suggestions):
    win = MainWindow(LiveSettings(), ini_store(tmp_path / "settings.ini"), suggest_box=lambda image: suggestions[0])
    qtbot.addWidget(win)
    session = FakeSession(fake_face())
    start = tmp_path / "start.png"
    cv2.imwrite(str(start), np.full((480, 640, 3), 90, np.uint8))       # the file FACE_IMAGE was made from
    session.avatar_path = str(start)
    win.attach(session, str(start), AvatarChoice(start))
    win.show()
    yield win
    win.close()


def loaded(window: MainWindow, choice: AvatarChoice, face) -> None:
    """The session's report that ``choice`` is animated now (as its worker thread sends it)."""
    window.session.animator.avatar.face = face
    window.session.avatar_path = str(choice.path)
    window.bridge.avatar_loaded.emit(str(choice.path), SimpleNamespace(face=face))


def test_no_face_opens_the_editor_with_the_suggested_box(window, cartoon: Path) -> None:
    window.request_avatar(str(cartoon))
    asked = window.session.loads[-1]
    assert asked == AvatarChoice(cartoon)            # nothing remembered: detect the face
    window.bridge.avatar_failed.emit(asked, NoFaceError(f"{cartoon}: no face found"))
    assert window.editing_box and window.box_editor.path == cartoon
    assert window.box_editor.canvas.box == AvatarBox(160, 40, 320)
    assert window.box_editor.kind == "human"
    assert "place the box on the face" in window.box_editor.message.text()
    assert window.avatar_panel.current.text() == "start.png"          # the current avatar stays


def test_animate_loads_the_box_and_remembers_it(window, cartoon: Path, tmp_path: Path) -> None:
    window.request_avatar(str(cartoon))
    window.bridge.avatar_failed.emit(window.session.loads[-1], NoFaceError("no face"))
    window.box_editor.animate_button.click()
    assert not window.editing_box
    assert window.session.loads[-1] == AvatarChoice(cartoon, "human", AvatarBox(160, 40, 320))
    loaded(window, window.session.loads[-1], fake_face(landmarks=False, box=AvatarBox(160, 40, 320)))
    assert window.avatar_panel.current.text() == "toon.png"
    # picked again (e.g. from the recent row), or at the next start: the box without asking
    window.request_avatar(str(cartoon))
    assert window.session.loads[-1].box == AvatarBox(160, 40, 320)
    window.store.sync()
    again = ini_store(tmp_path / "settings.ini")
    assert again.avatar_choice(str(cartoon)) == AvatarChoice(cartoon, "human", AvatarBox(160, 40, 320))
    args = argparse.Namespace(avatar=None, avatar_box=None, avatar_kind="human")
    assert start_avatar(args, again) == AvatarChoice(cartoon, "human", AvatarBox(160, 40, 320))


def test_a_cat_face_preselects_animal(window, cartoon: Path, suggestions) -> None:
    suggestions[0] = BoxSuggestion(AvatarBox(100, 60, 200), "animal", "cat face found")
    window.request_avatar(str(cartoon))
    window.bridge.avatar_failed.emit(window.session.loads[-1], NoFaceError("no face"))
    assert window.box_editor.kind == "animal"
    assert "cat face found: animal?" in window.box_editor.message.text()
    window.box_editor.animate_button.click()
    assert window.session.loads[-1] == AvatarChoice(cartoon, "animal", AvatarBox(100, 60, 200))


def test_cancel_keeps_the_current_avatar(window, cartoon: Path) -> None:
    window.request_avatar(str(cartoon))
    window.bridge.avatar_failed.emit(window.session.loads[-1], NoFaceError("no face"))
    window.box_editor.cancel_button.click()
    assert not window.editing_box and len(window.session.loads) == 1
    assert "cancelled" in window.statusBar().currentMessage()


def test_other_failures_are_one_line_not_the_editor(window, cartoon: Path) -> None:
    window.request_avatar(str(cartoon))
    window.bridge.avatar_failed.emit(window.session.loads[-1], ImageError(f"{cartoon}: cannot read the image"))
    assert not window.editing_box and window.last_error.endswith("cannot read the image")
    window.bridge.avatar_failed.emit(window.session.loads[-1], RuntimeError("out of memory"))
    assert window.last_error == f"{cartoon}: out of memory"
    # a box that was given and still fails is not asked for again
    window.bridge.avatar_failed.emit(AvatarChoice(cartoon, "human", AvatarBox(0, 0, 100)), NoFaceError("no face"))
    assert not window.editing_box


def test_an_unreadable_image_shows_its_error(window, tmp_path: Path) -> None:
    missing = tmp_path / "gone.png"
    window.bridge.avatar_failed.emit(AvatarChoice(missing), NoFaceError("no face"))
    assert not window.editing_box and "gone.png" in window.last_error


def test_the_kind_switch_reloads_with_the_other_kind(window, cartoon: Path) -> None:
    choice = AvatarChoice(cartoon, "human", AvatarBox(10, 20, 300))
    window.request_avatar_choice(choice)
    loaded(window, choice, fake_face(landmarks=False))
    panel = window.avatar_panel
    panel.kind.setCurrentIndex(panel.kind.findData("animal"))
    panel.kind.activated.emit(panel.kind.currentIndex())
    assert window.session.loads[-1] == AvatarChoice(cartoon, "animal", AvatarBox(10, 20, 300))
    # it failed: the panel shows the kind still in use
    window.bridge.avatar_failed.emit(window.session.loads[-1], RuntimeError("no animal weights"))
    assert panel.kind.currentData() == "human"
    window.switch_kind("animal")
    loaded(window, window.session.loads[-1], fake_face("animal", landmarks=False))
    assert panel.kind.currentData() == "animal"
    assert window.store.avatar_choice(str(cartoon)).kind == "animal"


def test_adjust_face_box_starts_from_the_current_box(window, tmp_path: Path) -> None:
    window.avatar_panel.adjust_button.click()
    assert window.editing_box and window.box_editor.path == tmp_path / "start.png"
    # the face's box is in the file's pixels (640 wide), as the editor's, not its image's (320 wide)
    assert window.box_editor.canvas.box == AvatarBox(120, 40, 320)
    window.box_editor.canvas.box = AvatarBox(100, 30, 300)
    window.box_editor.animate_button.click()
    assert window.session.loads[-1] == AvatarChoice(tmp_path / "start.png", "human", AvatarBox(100, 30, 300))


def test_command_line_box_and_kind_win_over_the_remembered_ones(tmp_path: Path, cartoon: Path) -> None:
    store = ini_store(tmp_path / "s.ini")
    store.save_avatar_choice(AvatarChoice(cartoon, "human", AvatarBox(1, 2, 300)))
    given = argparse.Namespace(avatar=str(cartoon), avatar_box=AvatarBox(5, 6, 100), avatar_kind="animal")
    assert start_avatar(given, store) == AvatarChoice(cartoon, "animal", AvatarBox(5, 6, 100))
    plain = argparse.Namespace(avatar=str(cartoon), avatar_box=None, avatar_kind="human")
    assert start_avatar(plain, store) == AvatarChoice(cartoon, "human", AvatarBox(1, 2, 300))


# -- the animation panel follows the avatar ------------------------------------------------------
def test_animal_avatars_show_their_controls(window, cartoon: Path) -> None:
    panel = window.animation_panel
    assert not panel.retargeting.isHidden() and panel.animal_controls.isHidden()
    choice = AvatarChoice(cartoon, "animal", AvatarBox(0, 0, 200))
    window.request_avatar_choice(choice)
    loaded(window, choice, fake_face("animal", landmarks=False))
    assert panel.retargeting.isHidden() and panel.stitching.isHidden() and panel.no_landmarks.isHidden()
    assert not panel.animal_controls.isHidden() and not panel.animal_stitching.isHidden()
    # the animal formula has no pose or expression controls; smoothing still acts
    for control in (panel.expression, panel.pitch, panel.yaw, panel.roll, panel.rotation_limit,
                    panel.translation_lock):
        assert control.isHidden()
    assert not panel.smoothing.isHidden()
    # the output's paste-back switch is the animal's own (off: the crop, the official output)
    output = window.output_panel
    assert output.paste_back.isHidden() and not output.animal_paste_back.isHidden()
    assert not output.animal_paste_back.isChecked()
    output.animal_paste_back.setChecked(True)
    assert window.settings.snapshot().animal_paste_back and window.settings.snapshot().paste_back
    panel.motion_strength.set_value(2.5)
    panel.animal_stitching.setChecked(True)
    s = window.settings.snapshot()
    assert s.motion_strength == pytest.approx(2.5) and s.animal_stitching and s.stitching
    panel.reset_all()
    assert window.settings.snapshot().motion_strength == pytest.approx(1.75)
    assert not window.settings.snapshot().animal_stitching
    human = AvatarChoice(cartoon, "human", AvatarBox(0, 0, 200))
    window.request_avatar_choice(human)
    loaded(window, human, fake_face())
    assert not panel.expression.isHidden() and not panel.translation_lock.isHidden()
    assert not output.paste_back.isHidden() and output.animal_paste_back.isHidden()
    assert panel.animal_controls.isHidden()


def test_a_human_without_landmarks_keeps_its_retargeting_controls_off(window, cartoon: Path) -> None:
    panel = window.animation_panel
    choice = AvatarChoice(cartoon, "human", AvatarBox(0, 0, 200))
    window.request_avatar_choice(choice)
    loaded(window, choice, fake_face(landmarks=False))
    assert not panel.retargeting.isHidden() and not panel.retargeting.isEnabled()
    assert not panel.eye_mode.isEnabled()
    assert not panel.no_landmarks.isHidden() and panel.no_landmarks.text() == NO_LANDMARKS_NOTE
    assert panel.expression.isEnabled() and panel.stitching.isEnabled() and panel.animal_controls.isHidden()
    panel.expression.set_value(1.4)                      # the other controls keep working
    assert window.settings.snapshot().expression_multiplier == pytest.approx(1.4)
    loaded(window, AvatarChoice(cartoon), fake_face())   # a face with landmarks again
    assert panel.retargeting.isEnabled() and panel.no_landmarks.isHidden()


# -- the screenshot --------------------------------------------------------------------------------
def test_window_screenshot_shows_the_box_where_it_is(window, cartoon: Path, qtbot) -> None:
    window.resize(1280, 800)
    assert window.open_box_editor(cartoon)
    qtbot.waitExposed(window.box_editor.canvas)
    shot = window.grab().toImage()
    rect = window.box_editor.canvas.box_rect()
    origin = window.box_editor.canvas.mapTo(window, QtCore.QPoint(0, 0))
    # the middle of each side of the box outline has the outline colour, the box's inside does not
    x0, y0 = origin.x() + rect.left(), origin.y() + rect.top()
    x1, y1 = origin.x() + rect.right(), origin.y() + rect.bottom()
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2

    def rgb(x: float, y: float) -> tuple[int, int, int]:
        c = shot.pixelColor(round(x), round(y))
        return c.red(), c.green(), c.blue()
    for x, y in ((xm, y0), (xm, y1), (x0, ym), (x1, ym)):
        assert max(abs(a - b) for a, b in zip(rgb(x, y), BOX_RGB, strict=True)) < 40, (x, y, rgb(x, y))
    assert max(abs(a - b) for a, b in zip(rgb(xm, ym), BOX_RGB, strict=True)) > 100


@pytest.mark.integration
def test_screenshot_contract_shows_the_box_editor(tmp_path: Path, cartoon: Path) -> None:
    """python main.py --avatar CARTOON --backend stub --screenshot OUT.png: the window with the face
    box editor open on the cartoon, its suggested box outlined (no camera needed)."""
    import os

    from PySide6 import QtGui
    from support.fakes import run_main

    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", AVATARCAM_SETTINGS=str(tmp_path / "settings.ini"))
    proc = run_main("--avatar", str(cartoon), "--backend", "stub", "--camera", str(tmp_path / "no-camera.mp4"),
                    "--max-frames", "1", "--screenshot", str(out), timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    image = QtGui.QImage(str(out)).convertToFormat(QtGui.QImage.Format.Format_RGB888)
    assert image.width() >= 800 and image.height() >= 500
    rgb = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    rgb = rgb[:, : 3 * image.width()].reshape(image.height(), image.width(), 3).astype(int)
    outline = np.abs(rgb - np.array(BOX_RGB)).max(axis=2) < 40
    ys, xs = np.nonzero(outline)
    assert len(xs) > 400, "no box outline in the screenshot"
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    assert abs((x1 - x0) - (y1 - y0)) <= 4                       # a square
    assert x1 < 0.75 * image.width() and (x1 - x0) > 100         # in the preview's place, not a speck
    # an outline: its sides are the colour (inside the corner handles' reach), its middle is the image
    reach = HANDLE_PX + 2
    assert outline[(y0 + y1) // 2, x0: x0 + reach].any() and outline[y0: y0 + reach, (x0 + x1) // 2].any()
    assert outline[(y0 + y1) // 2, x1 - reach: x1 + 1].any() and outline[y1 - reach: y1 + 1, (x0 + x1) // 2].any()
    assert not outline[(y0 + y1) // 2, (x0 + x1) // 2]
