"""The window rendering on a render server (a real one: ``RenderService`` on the stub backend behind
uvicorn, see ``render_server``): "Render on" choice and its memory, start-up without weights,
the status while the server is gone (the output holds the avatar, never the camera), switching
while running, and the token kept out of every log line."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6 import QtCore, QtGui
from support.fakes import local_session, run_main
from support.render_server import render_server

from app.animation.animator import Animator
from app.animation.frames import Status
from app.avatar.loading import DEFAULT_AVATAR
from app.avatar.prepared import prepare_avatar
from app.live.capture import read_video_frames
from app.live.pipeline import OutputFrame
from app.remote.client import RemoteAuthError, RemoteServer
from app.run.live_session import LiveSession
from app.run.renderer import LocalRenderer, RemoteRenderer, RenderChoice, RenderTarget
from app.settings import LiveSettings
from app.ui.main_window import MainWindow
from app.ui.settings_store import SettingsStore
from engines.backend import StubBackend

TOKEN = "tok-5f1c9a7e-never-in-logs"


def ini_store(path: Path) -> SettingsStore:
    return SettingsStore(QtCore.QSettings(str(path), QtCore.QSettings.Format.IniFormat))


def remote_window(qtbot, tmp_path: Path, avatar_face, url: str, seen: list[OutputFrame]) -> MainWindow:
    """A window whose session animates on the server at ``url``; every output frame goes to ``seen``."""
    settings = LiveSettings()
    win = MainWindow(settings, ini_store(tmp_path / "settings.ini"))
    qtbot.addWidget(win)
    renderer = RemoteRenderer(RemoteServer.parse(url, TOKEN))
    animator = renderer.animator(settings, renderer.adopt(avatar_face))
    callbacks = win.callbacks()
    push = callbacks.frame
    callbacks.frame = lambda f: (seen.append(f), push(f))
    win.attach(LiveSession(renderer, animator, callbacks), str(DEFAULT_AVATAR))
    win.show()
    return win


def assert_avatar_not_camera(image: np.ndarray, avatar: np.ndarray, camera: list[np.ndarray]) -> None:
    assert image.shape == avatar.shape
    assert np.abs(image.astype(int) - avatar.astype(int)).mean() < 6          # the avatar (stub render, JPEG)
    for cam in camera[::10]:
        face = cv2.resize(cam[128:384, 128:384], (96, 96))                   # the camera's face appears nowhere
        assert cv2.matchTemplate(cv2.resize(image, (256, 256)), face, cv2.TM_CCOEFF_NORMED).max() < 0.8


# --------------------------------------------------------------------------- the choice
def test_render_choice_persists_across_a_store_round_trip(tmp_path: Path) -> None:
    store = ini_store(tmp_path / "s.ini")
    assert store.render_choice() == RenderChoice()                        # this computer, by default
    chosen = RenderChoice(RenderTarget.SERVER, "wss://gpu.example:8443", TOKEN)
    store.save_render_choice(chosen)
    store.sync()
    again = ini_store(tmp_path / "s.ini")
    assert again.render_choice() == chosen and again.render_choice().remote
    again.save_render_choice(RenderChoice(RenderTarget.LOCAL, "wss://gpu.example:8443", TOKEN))
    assert not again.render_choice().remote and again.render_choice().url == "wss://gpu.example:8443"
    again.qsettings.setValue("render/target", "the cloud")                 # unknown: this computer
    assert again.render_choice().target is RenderTarget.LOCAL
    assert TOKEN not in repr(chosen) and TOKEN not in repr(chosen.server())


def test_panel_shows_the_remembered_choice_and_hides_the_token(qtbot, tmp_path: Path) -> None:
    store = ini_store(tmp_path / "s.ini")
    store.save_render_choice(RenderChoice(RenderTarget.SERVER, "ws://10.0.0.2:8000", TOKEN))
    win = MainWindow(LiveSettings(), store)
    qtbot.addWidget(win)
    panel = win.render_panel
    assert panel.target.currentText() == "a server" and panel.address.text() == "ws://10.0.0.2:8000"
    assert panel.token.text() == TOKEN and panel.token.echoMode() == panel.token.EchoMode.Password
    assert panel.choice() == store.render_choice()
    panel.target.setCurrentIndex(panel.target.findData(RenderTarget.LOCAL))
    assert not panel.address.isEnabled() and not panel.token.isEnabled()
    assert TOKEN not in win.windowTitle()


def test_an_unusable_address_is_refused_and_not_remembered(qtbot, tmp_path: Path) -> None:
    store = ini_store(tmp_path / "s.ini")
    win = MainWindow(LiveSettings(), store)
    qtbot.addWidget(win)
    win.render_panel.show_choice(RenderChoice(RenderTarget.SERVER, "http://host:80", TOKEN))
    with qtbot.assertNotEmitted(win.start_requested):
        win.render_panel.apply_button.click()
    assert "expected ws://HOST:PORT or wss://HOST:PORT" in win.last_error
    assert "expected ws://" in win.render_panel.state.text()
    assert store.render_choice() == RenderChoice()


# --------------------------------------------------------------------------- the token
def test_the_token_never_reaches_the_log(caplog, avatar_face) -> None:
    caplog.set_level(logging.DEBUG)
    settings = LiveSettings()
    with render_server(TOKEN) as server:
        renderer = RemoteRenderer(RenderChoice(RenderTarget.SERVER, server.url, TOKEN).server())
        animator = renderer.animator(settings, renderer.adopt(avatar_face))
        try:
            assert animator.process(None, 0.0).status == Status.NO_FACE_YET
        finally:
            animator.close()
        with pytest.raises(RemoteAuthError) as refused:
            RemoteRenderer(RemoteServer.parse(server.url, TOKEN[::-1])).animator(settings, renderer.adopt(avatar_face))
    assert TOKEN[::-1] not in str(refused.value)
    # the handshake's headers are logged at DEBUG, the token's header without its value
    assert any("Authorization" in r.getMessage() for r in caplog.records)
    assert TOKEN not in caplog.text and TOKEN[::-1] not in caplog.text


# --------------------------------------------------------------------------- the window
def test_window_renders_on_the_server_and_holds_the_avatar_when_it_goes(qtbot, tmp_path: Path, d0: Path,
                                                                        avatar_face) -> None:
    seen: list[OutputFrame] = []
    with render_server(TOKEN) as server:
        win = remote_window(qtbot, tmp_path, avatar_face, server.url, seen)
        assert win.render_status.isVisible()
        win.request_camera(str(d0), 640, 480)
        qtbot.waitUntil(lambda: win.frames_tracked >= 3, timeout=30000)
        assert any(f.frame.status in (Status.LIVE, Status.CALIBRATING) and f.frame.rendered for f in seen)
        qtbot.waitUntil(lambda: win.render_status.text().startswith(f"rendering on 127.0.0.1:{server.port}: "),
                        timeout=5000)
        assert server.service.sessions_served == 1
        served = len(seen)
        server.stop()
        qtbot.waitUntil(lambda: win.render_status.text() == str(Status.SERVER_LOST), timeout=20000)
    lost = [f for f in seen[served:] if f.frame.status == Status.SERVER_LOST]
    assert lost and not any(f.frame.rendered for f in lost)
    camera = read_video_frames(d0)
    for f in (lost[0], lost[-1]):
        assert_avatar_not_camera(f.frame.image, avatar_face.image, camera)
    # the preview shows the held avatar too
    shown = win.preview._image
    assert shown is not None and (shown.width(), shown.height()) == avatar_face.image.shape[1::-1]
    win.close()


def test_switching_between_this_computer_and_a_server_while_running(qtbot, tmp_path: Path, d0: Path,
                                                                    avatar_face) -> None:
    backend = StubBackend()
    settings = LiveSettings()
    store = ini_store(tmp_path / "s.ini")
    win = MainWindow(settings, store, renderer_factory=lambda choice: (
        RemoteRenderer(choice.server()) if choice.remote else LocalRenderer(backend)))
    qtbot.addWidget(win)
    local = LocalRenderer(backend)
    win.attach(LiveSession(local, Animator(backend, settings, prepare_avatar(avatar_face, backend)), win.callbacks()),
               str(DEFAULT_AVATAR))
    win.show()
    win.request_camera(str(d0), 640, 480)
    qtbot.waitUntil(lambda: win.frames_tracked >= 2, timeout=30000)
    assert not win.render_status.isVisible()
    with render_server(TOKEN) as server:
        win.render_panel.show_choice(RenderChoice(RenderTarget.SERVER, server.url, TOKEN))
        win.render_panel.apply_button.click()
        qtbot.waitUntil(lambda: win.session.renderer.remote, timeout=20000)
        before = win.frames_tracked
        qtbot.waitUntil(lambda: win.frames_tracked >= before + 3, timeout=30000)
        assert server.service.sessions_served == 1 and server.service.sessions == 1
        assert win.render_status.isVisible() and "rendering on 127.0.0.1" in win.render_status.text()
        assert store.render_choice() == RenderChoice(RenderTarget.SERVER, server.url, TOKEN)
        win.render_panel.target.setCurrentIndex(win.render_panel.target.findData(RenderTarget.LOCAL))
        win.render_panel.apply_button.click()
        qtbot.waitUntil(lambda: not win.session.renderer.remote, timeout=20000)
        qtbot.waitUntil(lambda: server.service.sessions == 0, timeout=10000)   # the server's session ended
    before = win.frames_tracked
    qtbot.waitUntil(lambda: win.frames_tracked >= before + 2, timeout=30000)
    assert not win.render_status.isVisible() and store.render_choice().target is RenderTarget.LOCAL
    win.close()


def test_a_failed_switch_keeps_rendering_where_it_was(qtbot, tmp_path: Path, d0: Path, avatar_face) -> None:
    settings = LiveSettings()
    win = MainWindow(settings, ini_store(tmp_path / "s.ini"),
                     renderer_factory=lambda choice: RemoteRenderer(choice.server(connect_timeout_s=2.0)))
    qtbot.addWidget(win)
    session = local_session(avatar_face, settings, win.callbacks())
    win.attach(session, str(DEFAULT_AVATAR))
    win.show()
    win.request_camera(str(d0), 640, 480)
    qtbot.waitUntil(lambda: win.frames_tracked >= 2, timeout=30000)
    with render_server(TOKEN) as server:
        url = server.url
    win.render_panel.show_choice(RenderChoice(RenderTarget.SERVER, url, TOKEN))     # nobody there any more
    win.render_panel.apply_button.click()
    qtbot.waitUntil(lambda: "cannot reach the render server" in win.last_error, timeout=20000)
    assert session.renderer.where == "this computer" and not win.progress.isVisible()
    assert win.render_panel.state.text().startswith("still animating on this computer: cannot reach")
    before = win.frames_tracked
    qtbot.waitUntil(lambda: win.frames_tracked >= before + 2, timeout=30000)
    win.close()


# --------------------------------------------------------------------------- python main.py --remote
@pytest.mark.integration
def test_main_window_with_remote_needs_no_weights(tmp_path: Path, d0: Path) -> None:
    """python main.py --remote URL --token T ... --screenshot OUT.png, with no weights anywhere."""
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", AVATARCAM_SETTINGS=str(tmp_path / "settings.ini"))
    no_weights = ("--weights", str(tmp_path / "no-weights"), "--no-download")
    with render_server(TOKEN) as server:
        proc = run_main("--remote", server.url, "--token", TOKEN, "--camera", str(d0), *no_weights,
                        "--max-frames", "2", "--screenshot", str(out), "--log-level", "DEBUG", timeout=300, env=env)
        served = server.service.sessions_served
        refused = run_main("--remote", server.url, "--token", "wrong", "--camera", str(d0), *no_weights,
                           "--max-frames", "1", "--screenshot", str(tmp_path / "no.png"), timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert served == 1
    image = QtGui.QImage(str(out))
    assert not image.isNull() and image.width() >= 800
    assert TOKEN not in proc.stdout + proc.stderr                       # not even at --log-level DEBUG
    assert refused.returncode == 2 and not (tmp_path / "no.png").exists()
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "refused the token" in errors[0], refused.stderr[-2000:]
    # a command-line server is for this run: the remembered choice stays "this computer"
    assert ini_store(tmp_path / "settings.ini").render_choice().target is RenderTarget.LOCAL
