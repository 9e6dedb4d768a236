"""Starting the desktop app: window first, then the networks (or the connection to a render
server) and the avatar in a worker thread (a weights download shows its file, percentage and
megabytes in the status bar while the window stays responsive), then the camera. Where the
animation runs is ``--remote`` when given, else the remembered "Render on" choice; a render server
needs no weights here.

``--screenshot OUT.png --max-frames N`` (the documentation/CI contract): run until N frames were
animated from a tracked face, save a screenshot of the whole window, exit 0. When the avatar has no
face the detector finds (and no ``--avatar-box``), the window starts on our default avatar with the
face box editor open on the asked-for image: the screenshot then shows the editor with its
suggested box, taken as soon as it is shown (no camera is opened)."""
from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from ..avatar.face import NoFaceError
from ..avatar.framing import AvatarBox, AvatarChoice, check_avatar_kind
from ..avatar.loading import DEFAULT_AVATAR
from ..cli.console import EXIT_BAD_INPUT, report_error
from ..cli.output_paths import check_output_file
from ..run.live_session import LiveSession
from ..run.renderer import (
    RenderChoice,
    Renderer,
    RendererFactory,
    RenderTarget,
    remote_server_from_args,
)
from ..settings import DEFAULT_FRAME_SIZE, AnimationSettings, LiveSettings
from .main_window import MainWindow
from .settings_store import SettingsStore

log = logging.getLogger(__name__)


class Starter(QtCore.QObject):
    """Makes the renderer, the first avatar and its animator off the UI thread; a weights download
    on the way reports through ``download_progress`` (``report_download`` is the callback). An
    avatar that cannot be used is replaced by our default one; when it has no face the detector
    finds, ``ready`` carries its choice, for the face box editor."""

    ready = QtCore.Signal(object, object, object, object)   # renderer, animator, AvatarChoice loaded, one wanting a box
    failed = QtCore.Signal(str)
    download_progress = QtCore.Signal(str, object, object)    # repository path, bytes so far, total (any size)

    def report_download(self, path: str, done: int, total: int) -> None:
        """Called on the worker thread; the signal carries it to the window's thread."""
        self.download_progress.emit(path, done, total)

    def start(self, make_renderer: Callable[[], Renderer], settings: LiveSettings, choice: AvatarChoice) -> None:
        def work() -> None:
            wants_box = None
            try:
                renderer = make_renderer()
                try:
                    avatar = renderer.load_avatar(choice)
                    loaded = choice
                except (ValueError, RuntimeError) as e:   # unusable avatar: fall back to ours
                    # a RuntimeError is a weight set that did not load: the animal one falls back
                    # to the human default, a failing human set fails the start
                    if choice.kind == "human" and (isinstance(e, RuntimeError)
                                                   or choice.path.resolve() == DEFAULT_AVATAR.resolve()):
                        raise
                    if isinstance(e, NoFaceError) and choice.box is None:
                        wants_box = choice
                        log.info("%s; the face box editor opens on it", e)
                    else:
                        log.warning("%s; using the default avatar", e)
                    loaded = AvatarChoice(DEFAULT_AVATAR)
                    avatar = renderer.load_avatar(loaded)
                animator = renderer.animator(settings, avatar)
            except Exception as e:  # noqa: BLE001 - shown in the window (or as the exit message)
                self.failed.emit(str(e))
                return
            self.ready.emit(renderer, animator, loaded, wants_box)
        threading.Thread(target=work, name="startup", daemon=True).start()


def start_avatar(args: argparse.Namespace, store: SettingsStore) -> AvatarChoice:
    """The avatar the window starts with: ``--avatar`` (with ``--avatar-kind`` / ``--avatar-box`` /
    ``--faces`` when given, else the kind, box and faces remembered for it), else the last one,
    else ours."""
    path = args.avatar or store.last_avatar() or str(DEFAULT_AVATAR)
    remembered = store.avatar_choice(path)
    box: AvatarBox | None = getattr(args, "avatar_box", None)      # main.py's flags
    kind = getattr(args, "avatar_kind", None) or "human"
    faces: tuple[int, ...] | None = getattr(args, "faces", None)
    if args.avatar and (box is not None or kind != "human" or faces is not None):
        return AvatarChoice(Path(path), check_avatar_kind(kind), box, faces)
    return remembered


def starting_message(choice: RenderChoice) -> str:
    if choice.remote:
        return f"connecting to the render server at {choice.url}…"
    return "loading the networks (the first start downloads about 520 MB of weights)…"


_QT_LOG_LEVELS = {
    QtCore.QtMsgType.QtDebugMsg: logging.DEBUG,
    QtCore.QtMsgType.QtInfoMsg: logging.DEBUG,
    QtCore.QtMsgType.QtWarningMsg: logging.DEBUG,       # layout and font chatter, not the user's business
    QtCore.QtMsgType.QtCriticalMsg: logging.ERROR,
    QtCore.QtMsgType.QtFatalMsg: logging.CRITICAL,     # e.g. no usable platform plugin: Qt aborts after it
}


def qt_message_to_log(kind: QtCore.QtMsgType, context: QtCore.QMessageLogContext, message: str) -> None:
    """Qt's own messages as our log lines (its default handler writes to the silenced descriptor)."""
    logging.getLogger("qt").log(_QT_LOG_LEVELS.get(kind, logging.DEBUG), "%s", message)


def screenshot_suffixes() -> tuple[str, ...]:
    """Image file extensions Qt can write here (with the dot, lower case)."""
    return tuple(sorted("." + bytes(f).decode().lower() for f in QtGui.QImageWriter.supportedImageFormats()))


def run_app(args: argparse.Namespace, base: AnimationSettings) -> int:
    QtCore.qInstallMessageHandler(qt_message_to_log)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    if args.screenshot:
        check_output_file(args.screenshot, screenshot_suffixes(), "--screenshot")
    store = SettingsStore.open()
    if args.remote:        # for this run; the remembered choice changes only through the window
        server = remote_server_from_args(args)
        choice = RenderChoice(RenderTarget.SERVER, args.remote, server.token or "")
    else:
        choice = store.render_choice()
    settings = LiveSettings(store.output_choices(base))
    starter = Starter()
    factory = RendererFactory(args, download_progress=starter.report_download)
    window = MainWindow(settings, store, renderer_factory=factory)
    starter.download_progress.connect(window.show_download)
    window.render_panel.show_choice(choice)
    avatar = start_avatar(args, store)
    camera = args.camera or store.last_camera() or "0"
    width, height = args.camera_size or store.last_camera_size() or DEFAULT_FRAME_SIZE
    window.camera_panel.select(camera)
    window.camera_panel.set_resolution(width, height)
    exit_code = {"value": 0}
    starting = {"now": False}            # a start is running: a second one waits for its end

    def finish_screenshot() -> None:
        path = Path(args.screenshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = window.grab().save(str(path))
        if not ok:
            report_error(f"cannot write screenshot {path}")
            exit_code["value"] = EXIT_BAD_INPUT
        else:
            log.info("screenshot saved to %s", path)
        window.close()

    def on_ready(renderer: Renderer, animator, loaded: AvatarChoice, wants_box: AvatarChoice | None) -> None:
        starting["now"] = False
        window.busy(None)
        path = str(loaded.path)
        session = LiveSession(renderer, animator, window.callbacks(), vcam_size=tuple(args.vcam_size),
                              vcam_fps=args.vcam_fps, max_tracked_frames=args.max_frames, avatar_path=path)
        window.attach(session, path, loaded)
        editing = wants_box is not None and window.open_box_editor(wants_box.path, wants_box.kind)
        if args.screenshot and editing:
            QtCore.QTimer.singleShot(300, finish_screenshot)      # let the editor paint
            return
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
                        report_error(window.last_error or "the camera ended before a face was tracked")
                        exit_code["value"] = EXIT_BAD_INPUT
                        window.close()
                        return
                    QtCore.QTimer.singleShot(300, finish_screenshot)    # let the last frame paint
            timer = QtCore.QTimer(window)
            timer.timeout.connect(check)
            timer.start(100)

    def on_failed(message: str) -> None:
        starting["now"] = False
        window.busy(None)
        window.show_error(message)
        window.render_panel.show_state(f"not started: {message}")
        if args.screenshot:
            report_error(message)
            exit_code["value"] = EXIT_BAD_INPUT
            window.close()

    def start(choice: RenderChoice) -> None:
        if starting["now"]:
            window.render_panel.show_state("still starting: apply again once this start has ended")
            return
        starting["now"] = True
        window.busy(starting_message(choice))
        starter.start(lambda: factory(choice), settings, avatar)

    starter.ready.connect(on_ready)
    starter.failed.connect(on_failed)
    window.start_requested.connect(start)       # a new choice after a failed start
    window.show()
    start(choice)
    try:
        app.exec()
    finally:
        factory.close()          # the window closed its session (and so its animator) first
    return exit_code["value"]
