"""Starting the desktop app: window first, then the networks and the avatar in a worker thread
(with the weights download shown in the status bar), then the camera.

``--screenshot OUT.png --max-frames N`` (the documentation/CI contract): run until N frames were
animated from a tracked face, save a screenshot of the whole window, exit 0."""
from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from ..live_session import LiveSession
from ..session import DEFAULT_AVATAR, load_avatar, make_backend_from_args
from ..settings import DEFAULT_FRAME_SIZE, AnimationSettings, LiveSettings
from .main_window import MainWindow
from .settings_store import SettingsStore

log = logging.getLogger(__name__)


class Starter(QtCore.QObject):
    """Loads the backend and the first avatar off the UI thread."""

    ready = QtCore.Signal(object, object, str)     # backend, prepared avatar, avatar path
    failed = QtCore.Signal(str)

    def start(self, args: argparse.Namespace, avatar_path: str) -> None:
        def work() -> None:
            try:
                backend = make_backend_from_args(args)
                try:
                    avatar = load_avatar(avatar_path, backend)
                    path = avatar_path
                except ValueError as e:          # unusable remembered avatar: fall back to ours
                    if Path(avatar_path).resolve() == DEFAULT_AVATAR.resolve():
                        raise
                    log.warning("%s; using the default avatar", e)
                    avatar, path = load_avatar(DEFAULT_AVATAR, backend), str(DEFAULT_AVATAR)
            except Exception as e:  # noqa: BLE001 - shown in the window (or as the exit message)
                self.failed.emit(str(e))
                return
            self.ready.emit(backend, avatar, path)
        threading.Thread(target=work, name="startup", daemon=True).start()


def run_app(args: argparse.Namespace, base: AnimationSettings) -> int:
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    store = SettingsStore.open()
    settings = LiveSettings(store.output_choices(base))
    window = MainWindow(settings, store)
    avatar_path = args.avatar or store.last_avatar() or str(DEFAULT_AVATAR)
    camera = args.camera or store.last_camera() or "0"
    width, height = args.camera_size or store.last_camera_size() or DEFAULT_FRAME_SIZE
    window.camera_panel.select(camera)
    window.camera_panel.set_resolution(width, height)
    exit_code = {"value": 0}

    def finish_screenshot() -> None:
        path = Path(args.screenshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = window.grab().save(str(path))
        if not ok:
            print(f"error: cannot write screenshot {path}", file=sys.stderr)
            exit_code["value"] = 2
        else:
            log.info("screenshot saved to %s", path)
        window.close()

    def on_ready(backend, avatar, path: str) -> None:
        window.busy(None)
        session = LiveSession(backend, settings, avatar, window.callbacks(), vcam_size=tuple(args.vcam_size),
                              vcam_fps=args.vcam_fps, max_tracked_frames=args.max_frames, avatar_path=path)
        window.attach(session, path)
        window.request_camera(camera, width, height)
        if args.virtual_camera:
            window.set_virtual_camera(True)
        if args.screenshot:
            def check() -> None:
                opening = session.camera_opening          # read first: an opening ends after its pipeline is set
                pipeline = session.pipeline
                tracked = pipeline.stats.snapshot().frames_tracked if pipeline is not None else 0
                done = tracked >= (args.max_frames or 1)
                stopped = not opening and (pipeline is None or pipeline.finished.is_set())
                if done or stopped:
                    timer.stop()
                    if not done:
                        print(f"error: {window.last_error or 'the camera ended before a face was tracked'}",
                              file=sys.stderr)
                        exit_code["value"] = 2
                        window.close()
                        return
                    QtCore.QTimer.singleShot(300, finish_screenshot)    # let the last frame paint
            timer = QtCore.QTimer(window)
            timer.timeout.connect(check)
            timer.start(100)

    def on_failed(message: str) -> None:
        window.busy(None)
        window.show_error(message)
        if args.screenshot:
            print(f"error: {message}", file=sys.stderr)
            exit_code["value"] = 2
            window.close()

    starter = Starter()
    starter.ready.connect(on_ready)
    starter.failed.connect(on_failed)
    window.show()
    window.busy("loading the networks (the first start downloads about 520 MB of weights)…")
    starter.start(args, avatar_path)
    app.exec()
    return exit_code["value"]
