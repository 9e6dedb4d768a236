"""The desktop window, offscreen (pytest-qt): default avatar and a video file as the camera, live
controls, drag and drop, the virtual camera switch (fake backend), hotkeys, settings, closing."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from PySide6 import QtCore, QtGui
from support.fakes import local_session, run_main  # also registers the fake virtual-camera backends

from app.avatar.loading import DEFAULT_AVATAR
from app.settings import LiveSettings
from app.ui.main_window import MainWindow
from app.ui.settings_store import SettingsStore


@pytest.fixture()
def window(qtbot, tmp_path: Path, d0: Path, avatar_face):
    store = SettingsStore(QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat))
    settings = LiveSettings()
    win = MainWindow(settings, store)
    qtbot.addWidget(win)
    session = local_session(avatar_face, settings, win.callbacks(), vcam_backend="avatarcam-test")
    win.attach(session, str(DEFAULT_AVATAR))
    win.show()
    win.request_camera(str(d0), 1280, 720)
    qtbot.waitUntil(lambda: win.frames_tracked >= 3, timeout=20000)
    yield win
    win.close()


def test_window_opens_with_default_avatar_and_video_camera(window) -> None:
    assert window.avatar_panel.current.text() == "astronaut.png"
    assert window.preview.frames_shown >= 3
    assert "d0.mp4" in window.camera_panel.status.text()
    assert window.session.pipeline is not None and not window.session.pipeline.finished.is_set()


def test_each_control_changes_the_engine_parameters(window, qtbot) -> None:
    panel, live = window.animation_panel, window.settings
    panel.eye_mode.setCurrentIndex(panel.eye_mode.findData("fixed"))
    panel.eye_mode.activated.emit(panel.eye_mode.currentIndex())
    panel.eye_target.set_value(0.6)
    panel.lip_mode.setCurrentIndex(panel.lip_mode.findData("follow"))
    panel.lip_mode.activated.emit(panel.lip_mode.currentIndex())
    panel.lip_target.set_value(0.2)
    panel.expression.set_value(1.5)
    panel.pitch.set_value(0.5)
    panel.yaw.set_value(1.25)
    panel.roll.set_value(0.0)
    panel.rotation_limit.set_value(30)
    panel.smoothing.set_value(1.0)
    panel.translation_lock.setChecked(True)
    panel.stitching.setChecked(False)
    window.output_panel.paste_back.setChecked(False)
    window.output_panel.mirror.setChecked(True)
    s = live.snapshot()
    assert (s.eye_mode, s.eye_target, s.lip_mode) == ("fixed", pytest.approx(0.6), "follow")
    assert s.lip_target == pytest.approx(0.2) and s.expression_multiplier == pytest.approx(1.5)
    assert s.rotation_multiplier == pytest.approx((0.5, 1.25, 0.0))
    assert s.rotation_limit_deg == pytest.approx((30.0, 30.0, 30.0))
    assert s.smooth_rotation == pytest.approx(1.0) and s.smooth_lips == pytest.approx(0.4)
    assert s.translation_lock and not s.stitching and not s.paste_back and s.mirror
    # crop-only output reaches the preview on the next frames
    qtbot.waitUntil(lambda: window.preview._image is not None and window.preview._image.width() == 512, timeout=10000)
    # double-click resets a slider to its default
    qtbot.mouseDClick(panel.expression.slider, QtCore.Qt.MouseButton.LeftButton)
    assert live.snapshot().expression_multiplier == pytest.approx(1.0)
    panel.reset_all()
    assert live.snapshot().eye_mode == "off" and not live.snapshot().paste_back   # output choices kept


def test_dropping_an_image_switches_the_avatar(window, qtbot, examples: Path) -> None:
    s0 = examples / "s0.jpg"
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(s0))])
    pos = QtCore.QPointF(100, 100)
    drop = QtGui.QDropEvent(pos, QtCore.Qt.DropAction.CopyAction, mime, QtCore.Qt.MouseButton.NoButton,
                            QtCore.Qt.KeyboardModifier.NoModifier)
    window.dropEvent(drop)
    qtbot.waitUntil(lambda: window.avatar_panel.current.text() == "s0.jpg", timeout=20000)
    qtbot.waitUntil(lambda: window.preview._image is not None
                    and window.preview._image.size() == QtCore.QSize(600, 704),
                    timeout=20000)
    assert window.avatar_panel.recent[:2] == [str(s0), str(DEFAULT_AVATAR)]
    assert window.store.qsettings.value("avatar") == str(s0)


def test_image_without_face_opens_the_box_editor_and_keeps_the_old_avatar(window, qtbot, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    bad = tmp_path / "wall.png"
    cv2.imwrite(str(bad), np.full((200, 200, 3), 128, np.uint8))
    window.request_avatar(str(bad))
    qtbot.waitUntil(lambda: window.editing_box, timeout=20000)
    assert window.box_editor.path == bad
    box = window.box_editor.canvas.box                # the suggestion: a square on the image
    assert 16 <= box.size <= 200 and 0 <= box.center[0] <= 200 and 0 <= box.center[1] <= 200
    assert window.avatar_panel.current.text() == "astronaut.png"
    assert window.session.animator.avatar.face.num_faces >= 1          # still animating the astronaut


def test_virtual_camera_switch_uses_the_backend_and_shows_state(window, qtbot) -> None:
    from support.fakes import FakeVirtualCamera

    window.output_panel.vcam.setChecked(True)
    assert window.session.vcam_state.value == "on"
    assert window.output_panel.vcam_state.text().startswith("on")
    qtbot.waitUntil(lambda: len(FakeVirtualCamera.frames) >= 2, timeout=10000)
    assert FakeVirtualCamera.frames[-1].shape == (720, 1280, 3)
    QtCore.QCoreApplication.processEvents()
    window.toggle_virtual_camera()                     # the V hotkey's action
    assert window.session.vcam_state.value == "off" and not window.output_panel.vcam.isChecked()


def test_missing_virtual_camera_device_shows_the_fix(window) -> None:
    window.session.vcam_backend = "avatarcam-missing"
    window.set_virtual_camera(True)
    assert window.session.vcam_state.value == "unavailable"
    assert "fix:" in window.output_panel.vcam_state.text() and not window.output_panel.vcam.isChecked()


def test_hotkeys_and_help(window, qtbot, monkeypatch) -> None:
    calibrations = []
    monkeypatch.setattr(window.session.animator, "calibrate", lambda: calibrations.append(1))
    qtbot.keyClick(window, QtCore.Qt.Key.Key_C)
    assert calibrations == [1]
    overlay = window.output_panel.overlay.isChecked()
    qtbot.keyClick(window, QtCore.Qt.Key.Key_O)
    assert window.output_panel.overlay.isChecked() != overlay
    shown = []
    monkeypatch.setattr("PySide6.QtWidgets.QMessageBox.information", lambda *a, **k: shown.append(a[2]))
    qtbot.keyClick(window, QtCore.Qt.Key.Key_F1)
    assert shown and "Calibrate neutral pose" in shown[0]


def test_every_hotkey_runs_its_action(window, qtbot, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(window, "step_avatar", lambda step: calls.append(step))
    monkeypatch.setattr(window, "toggle_virtual_camera", lambda: calls.append("vcam"))
    monkeypatch.setattr(window.avatar_panel, "open_dialog", lambda: calls.append("open"))
    key, mod = QtCore.Qt.Key, QtCore.Qt.KeyboardModifier
    for k, modifier in ((key.Key_PageDown, mod.NoModifier), (key.Key_BracketRight, mod.NoModifier),
                        (key.Key_PageUp, mod.NoModifier), (key.Key_BracketLeft, mod.NoModifier),
                        (key.Key_V, mod.NoModifier), (key.Key_O, mod.ControlModifier)):
        qtbot.keyClick(window, k, modifier)
    assert calls == [1, 1, -1, -1, "vcam", "open"]
    inset = window.output_panel.inset.isChecked()
    qtbot.keyClick(window, key.Key_I)
    assert window.output_panel.inset.isChecked() != inset


def test_settings_are_saved_per_avatar(window, qtbot) -> None:
    window.animation_panel.expression.set_value(1.7)
    QtCore.QCoreApplication.processEvents()
    window.close()
    window.store.sync()
    key = [k for k in window.store.qsettings.allKeys() if k.startswith("avatar_settings/")]
    assert key and '"expression_multiplier": 1.7' in str(window.store.qsettings.value(key[0]))


def test_settings_are_saved_once_a_change_rests(window, qtbot) -> None:
    window.animation_panel.expression.set_value(1.3)

    def saved() -> bool:
        keys = [k for k in window.store.qsettings.allKeys() if k.startswith("avatar_settings/")]
        return bool(keys) and '"expression_multiplier": 1.3' in str(window.store.qsettings.value(keys[0]))
    qtbot.waitUntil(saved, timeout=3000)          # without closing the window


def test_closing_the_window_stops_every_thread(qtbot, tmp_path: Path, d0: Path, avatar_face) -> None:
    before = {t.ident for t in threading.enumerate()}
    store = SettingsStore(QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.Format.IniFormat))
    settings = LiveSettings()
    win = MainWindow(settings, store)
    session = local_session(avatar_face, settings, win.callbacks())
    win.attach(session, str(DEFAULT_AVATAR))
    win.show()
    win.request_camera(str(d0), 640, 480)
    qtbot.waitUntil(lambda: win.frames_tracked >= 2, timeout=20000)
    camera = session.pipeline.camera
    win.close()
    alive = [t for t in threading.enumerate() if t.ident not in before and t.name in
             ("capture", "tracking", "animation", "output")]
    assert not alive and not camera.cap.isOpened()


@pytest.mark.integration
def test_screenshot_contract_with_real_networks(synthetic_weights_dir: Path, examples: Path, tmp_path: Path) -> None:
    """python main.py --avatar IMG --camera SRC --weights DIR --device cpu --max-frames N --screenshot OUT.png"""
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", AVATARCAM_SETTINGS=str(tmp_path / "settings.ini"))
    proc = run_main("--avatar", str(examples / "s1.jpg"), "--camera", str(examples / "d0.mp4"),
                    "--weights", str(synthetic_weights_dir), "--device", "cpu", "--max-frames", "1",
                    "--screenshot", str(out), timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    image = QtGui.QImage(str(out))
    assert not image.isNull() and image.width() >= 800 and image.height() >= 500
