"""The main window: preview on the left (or the face box editor in its place), the stage panels on
the right, status bar below.

Frames arrive from the pipeline's threads through a ``FrameBridge`` (queued Qt signals); only the
newest frame is kept, so the preview drops what it cannot show and the UI thread never waits for
inference.

An avatar without a face the detector finds is not refused: the face box editor opens on it with
a first guess (``suggest_avatar_box``), and "Animate" loads it with that box. The kind, box and
animated faces (a group photo's check boxes) an avatar was loaded with are remembered for it
(``SettingsStore.avatar_choice``). A video clip is an avatar like an image (``is_video_file``)."""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from ..animation.frames import TRACKED, AnimatedAvatar, Status
from ..avatar.face import NoFaceError
from ..avatar.framing import MAX_GROUP_FACES, AvatarBox, AvatarChoice, AvatarKind, check_avatar_kind
from ..avatar.suggest import BoxSuggestion, suggest_avatar_box
from ..avatar.video import is_video_file
from ..face.crop import transform_points
from ..face.driving import DrivingFace
from ..imaging.image_io import load_image
from ..live.capture import CameraRequest, parse_source
from ..live.pipeline import OutputFrame
from ..run.live_session import LiveSession, SessionCallbacks, VirtualCameraState
from ..run.renderer import RenderChoice, Renderer
from ..settings import LiveSettings
from .animation_panel import AnimationPanel
from .avatar_panel import AvatarPanel, first_video_frame
from .box_editor import BoxEditor
from .camera_panel import CameraPanel
from .output_panel import OutputPanel
from .render_panel import RenderPanel
from .settings_store import SettingsStore
from .widgets import Preview

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hotkey:
    """A keyboard shortcut of the window: its keys, the action as the help names it, and what it runs."""

    keys: tuple[str, ...]                     # QKeySequence texts; each one runs the action
    action: str
    run: Callable[[MainWindow], None]

    @property
    def label(self) -> str:
        return " / ".join(self.keys)


# The window's keys: installed from this table and listed in the help (F1) from it.
HOTKEYS = (
    Hotkey(("C",), "Calibrate neutral pose", lambda w: w.calibrate()),
    Hotkey(("PgDown", "]"), "Next avatar", lambda w: w.step_avatar(1)),
    Hotkey(("PgUp", "["), "Previous avatar", lambda w: w.step_avatar(-1)),
    Hotkey(("V",), "Virtual camera on / off", lambda w: w.toggle_virtual_camera()),
    Hotkey(("O",), "Stats overlay on / off", lambda w: w.output_panel.overlay.toggle()),
    Hotkey(("I",), "Webcam inset on / off", lambda w: w.output_panel.inset.toggle()),
    Hotkey(("Ctrl+O",), "Open an avatar image or video", lambda w: w.avatar_panel.open_dialog()),
    Hotkey(("F1",), "This help", lambda w: w.show_help()),
)


class LatestSlot:
    """Holds the newest value from a worker thread; ``put`` returns True only when no earlier value
    is still waiting, so one signal is in flight at a time and the UI takes only the latest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = None
        self._pending = False

    def put(self, value) -> bool:
        with self._lock:
            self._value = value
            first, self._pending = not self._pending, True
            return first

    def take(self):
        with self._lock:
            self._pending = False
            return self._value


class FrameBridge(QtCore.QObject):
    """Worker threads -> UI thread. Frames and tracked faces are coalesced (``LatestSlot``)."""

    frame_ready = QtCore.Signal()
    tracked_ready = QtCore.Signal()
    avatar_loaded = QtCore.Signal(str, object)      # path, the AnimatedAvatar
    avatar_failed = QtCore.Signal(object, object)   # the AvatarChoice, the exception
    error = QtCore.Signal(str)
    camera_status = QtCore.Signal(str)
    renderer_changed = QtCore.Signal(object)
    renderer_failed = QtCore.Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self._frame = LatestSlot()
        self._face = LatestSlot()

    def push_frame(self, frame: OutputFrame) -> None:
        if self._frame.put(frame):
            self.frame_ready.emit()

    def take_frame(self) -> OutputFrame | None:
        return self._frame.take()

    def push_face(self, face: DrivingFace | None) -> None:
        if self._face.put(face):
            self.tracked_ready.emit()

    def take_face(self) -> DrivingFace | None:
        return self._face.take()


def group_faces(face: object, path: str | Path) -> tuple[int, tuple[int, ...]]:
    """A loaded avatar's group photo as its check boxes show it: (faces numbered, at most
    ``MAX_GROUP_FACES``; those animated, ascending). (0, ()) for what has no per-face switch: one
    face, an animal, a video, a face given by its box alone."""
    if getattr(face, "kind", "human") != "human" or is_video_file(path):
        return 0, ()
    count = min(int(getattr(face, "num_faces", 1)), MAX_GROUP_FACES)
    group = getattr(face, "group", (face,))
    animated = tuple(sorted(int(getattr(f, "number", 1)) for f in group))
    if count < 2 or any(n > count for n in animated):
        return 0, ()
    return count, animated


def inset_image(face: DrivingFace | None) -> np.ndarray:
    """The webcam crop with its tracked landmarks, for the local inset only."""
    if face is None:
        img = np.zeros((256, 256, 3), np.uint8)
        cv2.putText(img, "no face", (70, 135), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (200, 200, 200), 2)
        return img
    img = face.network_input.copy()
    M = face.transform.M_o2c.astype(np.float64) * np.array([[0.5], [0.5], [1.0]])   # 512 crop -> 256
    pts = transform_points(face.landmarks, M)
    for x, y in pts[::2]:
        if 0 <= x < 256 and 0 <= y < 256:
            cv2.circle(img, (int(x), int(y)), 1, (80, 255, 80), -1, lineType=cv2.LINE_AA)
    return img


class MainWindow(QtWidgets.QMainWindow):
    """``renderer_factory``: makes the renderer of a "Render on" choice (it may load networks or
    take seconds); without one, a new choice is remembered for the next start. ``start_requested``:
    a choice applied while no session runs (its start failed), for the starter to try again.
    ``suggest_box``: the face box editor's first guess on an image (tests pass their own)."""

    start_requested = QtCore.Signal(object)         # a RenderChoice

    def __init__(self, settings: LiveSettings, store: SettingsStore, *,
                 renderer_factory: Callable[[RenderChoice], Renderer] | None = None,
                 suggest_box: Callable[[np.ndarray], BoxSuggestion] = suggest_avatar_box) -> None:
        super().__init__()
        self.setWindowTitle("AvatarCam")
        self.setAcceptDrops(True)
        self.settings = settings
        self.store = store
        self.session: LiveSession | None = None
        self.bridge = FrameBridge()
        self.preview = Preview()
        self.box_editor = BoxEditor()
        self.suggest_box = suggest_box
        self.view_stack = QtWidgets.QStackedWidget()      # the preview, or the face box editor in its place
        self.view_stack.addWidget(self.preview)
        self.view_stack.addWidget(self.box_editor)
        self.current_choice: AvatarChoice | None = None   # what the current avatar was loaded with
        self._requested: dict[str, AvatarChoice] = {}     # avatar loads asked for, by path
        self._group_count = 0                              # the current group photo's faces (0: no group)
        self._group_faces: tuple[int, ...] = ()           # and those animated, as loaded
        self.avatar_panel = AvatarPanel()
        self.camera_panel = CameraPanel()
        self.animation_panel = AnimationPanel(settings)
        self.output_panel = OutputPanel(settings)
        self.render_panel = RenderPanel(store.render_choice())
        self.renderer_factory = renderer_factory
        self.render_status = QtWidgets.QLabel("")       # the render server's state, when rendering on one
        self.render_status.hide()
        self.progress = QtWidgets.QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setRange(0, 0)
        self.progress.hide()
        self.frames_tracked = 0
        self.last_error = ""

        side = QtWidgets.QWidget()
        side_layout = QtWidgets.QVBoxLayout(side)
        for panel in (self.avatar_panel, self.camera_panel, self.render_panel, self.animation_panel,
                      self.output_panel):
            side_layout.addWidget(panel)
        side_layout.addStretch(1)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(380)
        splitter = QtWidgets.QSplitter()
        splitter.addWidget(self.view_stack)
        splitter.addWidget(scroll)
        splitter.setStretchFactor(0, 3)
        self.setCentralWidget(splitter)
        self.statusBar().addPermanentWidget(self.render_status)
        self.statusBar().addPermanentWidget(self.progress)
        self.resize(1280, 800)

        self.bridge.frame_ready.connect(self._show_frame, QtCore.Qt.ConnectionType.QueuedConnection)
        self.bridge.tracked_ready.connect(self._show_face, QtCore.Qt.ConnectionType.QueuedConnection)
        self.bridge.avatar_loaded.connect(self._on_avatar_loaded)
        self.bridge.error.connect(self.show_error)
        self.bridge.camera_status.connect(lambda text: self.camera_panel.status.setText(text))
        self.bridge.renderer_changed.connect(self._on_renderer_changed)
        self.bridge.renderer_failed.connect(self._on_renderer_failed)
        self.render_panel.render_requested.connect(self.request_render)
        self.avatar_panel.avatar_requested.connect(self.request_avatar)
        self.avatar_panel.kind_requested.connect(self.switch_kind)
        self.avatar_panel.box_edit_requested.connect(self.adjust_box)
        self.avatar_panel.faces_requested.connect(self.switch_faces)
        self.box_editor.accepted.connect(self._on_box_accepted)
        self.box_editor.cancelled.connect(self._on_box_cancelled)
        self.bridge.avatar_failed.connect(self._on_avatar_failed)
        self.camera_panel.camera_requested.connect(self.request_camera)
        self.animation_panel.calibrate_button.clicked.connect(self.calibrate)
        self.output_panel.virtual_camera_toggled.connect(self.set_virtual_camera)
        self.output_panel.overlay.toggled.connect(self._set_overlay)
        self.output_panel.inset.toggled.connect(self._set_inset)
        # a slider drag changes the settings on every tick: save once it rests (and on close)
        self._save_timer = QtCore.QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(500)
        self._save_timer.timeout.connect(self._save_avatar_settings)
        self._settings_avatar: str | None = None      # the avatar the shown settings belong to
        self.settings.subscribe(lambda s: QtCore.QMetaObject.invokeMethod(self._save_timer, "start",
                                                                           QtCore.Qt.ConnectionType.QueuedConnection))
        self._install_hotkeys()
        self.stats_timer = QtCore.QTimer(self)
        self.stats_timer.timeout.connect(self._update_stats)
        self.stats_timer.start(500)
        self.avatar_panel.set_recent(store.recent_avatars())

    # -- session wiring ------------------------------------------------------------------------
    def callbacks(self) -> SessionCallbacks:
        return SessionCallbacks(frame=self.bridge.push_frame, tracked=self.bridge.push_face,
                                avatar_loaded=self.bridge.avatar_loaded.emit,
                                avatar_failed=self.bridge.avatar_failed.emit,
                                error=self.bridge.error.emit, camera_changed=self.bridge.camera_status.emit,
                                renderer_changed=self.bridge.renderer_changed.emit,
                                renderer_failed=self.bridge.renderer_failed.emit)

    def attach(self, session: LiveSession, avatar_path: str, choice: AvatarChoice | None = None) -> None:
        """Show ``session``, animating the avatar at ``avatar_path`` (loaded as ``choice``, if given:
        then its kind and box are remembered for it)."""
        self.session = session
        if choice is not None:
            self._requested[avatar_path] = choice
        self._on_avatar_loaded(avatar_path, session.animator.avatar)
        self.preview.set_frame(session.animator.avatar.face.image)
        self._show_renderer(session.renderer)

    def busy(self, message: str | None) -> None:
        """Show (or clear) a long-running task in the status bar (its bar: busy, without a measure)."""
        self.progress.setRange(0, 0)
        self.progress.setVisible(message is not None)
        if message:
            self.statusBar().showMessage(message)

    def show_download(self, path: str, done: int, total: int) -> None:
        """A weights download's progress (file, bytes so far, total) in the status bar and its bar."""
        name = path.rsplit("/", 1)[-1]

        def mb(n: int) -> str:
            return f"{n / 1e6:.1f}" if n < 10e6 else f"{n / 1e6:.0f}"

        if total <= 0:
            self.progress.setRange(0, 0)
            self.statusBar().showMessage(f"downloading {name} ({mb(done)} MB)…")
        elif done >= total:
            self.progress.setRange(0, 0)              # the next file, or loading the networks
            self.statusBar().showMessage(f"downloaded {name} ({mb(total)} MB); loading…")
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(done * 1000 // total)
            self.statusBar().showMessage(f"downloading {name}: {100 * done // total}% ({mb(done)} of {mb(total)} MB)…")
        self.progress.show()

    # -- actions -------------------------------------------------------------------------------
    def request_avatar(self, path: str) -> None:
        """Load the avatar at ``path`` with the kind and face box remembered for it (if any)."""
        self.request_avatar_choice(self.store.avatar_choice(path))

    def request_avatar_choice(self, choice: AvatarChoice) -> None:
        if self.session is None:
            return
        self.statusBar().showMessage(f"loading avatar {choice.path.name}…")
        self._requested[str(choice.path)] = choice
        self.session.load_avatar_async(choice)

    def switch_kind(self, kind: str) -> None:
        """Reload the current avatar as ``kind`` (human or animal), with its face box if one was chosen."""
        current = self.current_choice
        if self.session is None or current is None or kind == current.kind:
            return
        self.request_avatar_choice(AvatarChoice(current.path, check_avatar_kind(kind), current.box, current.faces))

    def switch_faces(self, faces: tuple[int, ...]) -> None:
        """Reload the current group photo animating ``faces`` (numbers 1.. left to right; at least
        one), the way a face box change does. A corrected face box stays only while it still frames
        the first animated face (it corrects that face's crop)."""
        current = self.current_choice
        faces = tuple(sorted(set(faces)))
        if self.session is None or current is None or not faces or faces == self._group_faces:
            return
        box = current.box
        if box is not None and (not self._group_faces or faces[0] != self._group_faces[0]):
            log.info("face %d is the first animated now: its detected box replaces the corrected one", faces[0])
            box = None
        self.request_avatar_choice(AvatarChoice(current.path, current.kind, box, faces))

    def adjust_box(self) -> None:
        """Open the face box editor on the current avatar, with the box it was cropped with."""
        current = self.current_choice
        if self.session is None or current is None:
            return
        image = self._editor_image(current.path)
        if image is None:
            return
        # the face's box is in the file's pixels, as the editor's image
        box = current.box or self.session.animator.avatar.face.box
        self._edit_box(current.path, image, box, current.kind, "adjust the face box")

    def open_box_editor(self, path: str | Path, kind: AvatarKind = "human") -> bool:
        """Show the face box editor on the image at ``path`` with the suggested box (an animal face
        found pre-selects "animal"); False (and the error shown) when the image cannot be read."""
        image = self._editor_image(Path(path))
        if image is None:
            return False
        self._edit_box(Path(path), image, None, kind, "")
        return True

    @property
    def editing_box(self) -> bool:
        return self.view_stack.currentWidget() is self.box_editor

    def _editor_image(self, path: Path) -> np.ndarray | None:
        """The picture the face box editor shows for the avatar at ``path`` (a video's first frame)."""
        if is_video_file(path):
            frame = first_video_frame(path)
            if frame is None:
                self.show_error(f"{path}: cannot read a frame of the video")
            return frame
        try:
            return load_image(path)
        except ValueError as e:
            self.show_error(str(e))
            return None

    def _edit_box(self, path: Path, image: np.ndarray, box: AvatarBox | None, kind: AvatarKind,
                  message: str) -> None:
        if box is None:
            suggestion = self.suggest_box(image)
            box = suggestion.box
            if suggestion.kind == "animal":
                kind, message = "animal", "cat face found: animal?"
            else:
                message = suggestion.reason
        self.box_editor.edit(path, image, box, kind, message)
        self.view_stack.setCurrentWidget(self.box_editor)
        self.statusBar().showMessage(f"{path.name}: {message}")

    def request_camera(self, source: str, width: int, height: int) -> None:
        if self.session is None:
            return
        is_file = isinstance(parse_source(source), Path)
        self.store.remember_camera(source, width, height)
        self.session.open_camera_async(CameraRequest(source, width=width, height=height, loop=is_file, paced=True))

    def calibrate(self) -> None:
        if self.session is not None:
            self.session.calibrate()
            self.statusBar().showMessage("calibrating: look straight at the camera with a neutral face", 3000)

    def set_virtual_camera(self, on: bool) -> None:
        if self.session is None:
            return
        state = self.session.set_virtual_camera(on)
        self.output_panel.show_vcam_state(state, self.session.vcam_message)
        if state is VirtualCameraState.UNAVAILABLE:
            self.show_error(self.session.vcam_message)

    def request_render(self, choice: RenderChoice) -> None:
        """Remember ``choice`` and animate there: switch the running session over (in a worker
        thread), or ask for a new start when none runs."""
        from ..remote.client import RemoteError

        if choice.remote:
            try:
                choice.server()          # the address is checked here, before anything is remembered
            except RemoteError as e:
                self.render_panel.show_state(str(e))
                self.show_error(str(e))
                return
        self.store.save_render_choice(choice)
        if self.session is None:
            self.start_requested.emit(choice)
            return
        if self.renderer_factory is None:
            self.render_panel.show_state("applies at the next start")
            return
        if not choice.remote and not self.session.renderer.remote:
            self.render_panel.show_state(f"animating on {self.session.renderer.where}")
            return
        factory = self.renderer_factory
        self.busy("connecting to the render server…" if choice.remote else "loading the networks…")
        self.render_panel.show_state("switching…")
        self.session.switch_renderer_async(lambda: factory(choice))

    def toggle_virtual_camera(self) -> None:
        self.set_virtual_camera(not self.output_panel.vcam.isChecked())

    def step_avatar(self, step: int) -> None:
        path = self.avatar_panel.neighbour(self.session.avatar_path if self.session else None, step)
        if path:
            self.request_avatar(path)

    def show_error(self, message: str) -> None:
        self.last_error = message
        self.progress.hide()            # whatever was in progress has ended with this
        self.statusBar().showMessage(message, 15000)
        log.warning("%s", message)

    def show_help(self) -> None:
        rows = "".join(f"<tr><td><b>{h.label}</b></td><td>&nbsp;&nbsp;{h.action}</td></tr>" for h in HOTKEYS)
        QtWidgets.QMessageBox.information(self, "AvatarCam keys", f"<table>{rows}</table>")

    # -- slots ---------------------------------------------------------------------------------
    @QtCore.Slot()
    def _show_frame(self) -> None:
        packet = self.bridge.take_frame()
        if packet is None:
            return
        self.preview.set_frame(packet.frame.image)
        self.frames_tracked += packet.frame.status in TRACKED
        if self.session is not None and self.session.renderer.remote:
            self._show_render_status(packet.frame.status)
        waiting = self.session is not None and not self.session.animator.has_reference
        self.preview.hint = ("No neutral pose yet: look at the camera with a relaxed face (or press C)"
                             if waiting else "")

    @QtCore.Slot()
    def _show_face(self) -> None:
        self.preview.set_inset(inset_image(self.bridge.take_face()))

    @QtCore.Slot(str, object)
    def _on_avatar_loaded(self, path: str, avatar: AnimatedAvatar) -> None:
        if self._save_timer.isActive():            # changes made for the previous avatar are its own
            self._save_timer.stop()
            self._save_avatar_settings()
        self._settings_avatar = path
        self.avatar_panel.set_current(path)
        self.store.remember_avatar(path, self.avatar_panel.recent)
        saved = self.store.avatar_settings(path)
        if saved:
            try:
                self.settings.update(**saved)
            except (ValueError, TypeError) as e:
                log.info("ignoring saved settings for %s: %s", path, e)
        self.animation_panel.show_settings(self.settings.snapshot())
        self.output_panel.show_background(self.settings.snapshot().background)
        face = avatar.face
        asked = self._requested.pop(path, None)
        if asked is not None:         # remembered as asked for: a detected face's box stays automatic
            self.current_choice = AvatarChoice(Path(path), face.kind, asked.box, asked.faces)
            self.store.save_avatar_choice(self.current_choice)
        else:
            remembered = self.store.avatar_choice(path)
            self.current_choice = AvatarChoice(Path(path), face.kind, remembered.box, remembered.faces)
        self._group_count, self._group_faces = group_faces(face, path)
        if self.current_choice.box is not None and self.current_choice.faces is None:
            self._group_count, self._group_faces = 0, ()    # a box alone frames one face, whichever it is
        self.avatar_panel.show_faces(self._group_count, self._group_faces)
        self.avatar_panel.show_kind(face.kind)
        self.animation_panel.show_avatar(face.kind, face.has_landmarks)
        self.output_panel.show_avatar(face.kind, self.settings.snapshot().animal_paste_back)
        self.statusBar().showMessage(f"avatar: {Path(path).name}", 5000)

    @QtCore.Slot(object, object)
    def _on_avatar_failed(self, choice: AvatarChoice, error: Exception) -> None:
        self._requested.pop(str(choice.path), None)
        if self.current_choice is not None:          # a kind or faces switch that failed: show those in use
            self.avatar_panel.show_kind(self.current_choice.kind)
            self.avatar_panel.show_faces(self._group_count, self._group_faces)
        if isinstance(error, NoFaceError) and choice.faces is not None and choice.kind == "human":
            # remembered faces the image no longer has (it changed): all of its faces, as a new photo
            log.info("%s; loading %s with all its faces", error, choice.path.name)
            self.request_avatar_choice(replace(choice, faces=None))
            return
        if isinstance(error, NoFaceError) and choice.box is None:
            log.info("%s", error)
            self.open_box_editor(choice.path, choice.kind)
            return
        self.show_error(str(error) if isinstance(error, ValueError) else f"{choice.path}: {error}")

    def _on_box_accepted(self, choice: AvatarChoice) -> None:
        self.view_stack.setCurrentWidget(self.preview)
        current = self.current_choice
        if (self._group_faces and current is not None and choice.kind == "human"
                and choice.path.resolve() == current.path.resolve()):
            # a group photo's box corrects its first animated face; the others stay animated
            choice = replace(choice, faces=self._group_faces)
        self.request_avatar_choice(choice)

    def _on_box_cancelled(self) -> None:
        self.view_stack.setCurrentWidget(self.preview)
        name = self.current_choice.path.name if self.current_choice else "the current avatar"
        self.statusBar().showMessage(f"face box cancelled: still animating {name}", 5000)

    @QtCore.Slot(object)
    def _on_renderer_changed(self, renderer: Renderer) -> None:
        self.busy(None)
        self._show_renderer(renderer)
        self.statusBar().showMessage(f"animating on {renderer.where}", 5000)

    @QtCore.Slot(str)
    def _on_renderer_failed(self, message: str) -> None:
        self.show_error(message)
        self.render_panel.show_state(f"still animating on {self.session.renderer.where}: {message}")

    def _show_renderer(self, renderer: Renderer) -> None:
        self.render_panel.show_state(f"animating on {renderer.where}")
        self.render_status.setVisible(renderer.remote)
        if renderer.remote:
            self._show_render_status(Status.NO_FACE_YET)

    def _show_render_status(self, status: Status) -> None:
        if status is Status.SERVER_LOST:
            text = str(status)
        else:
            text = f"rendering on {urlsplit(self.session.renderer.where).netloc}: {status}"
        if self.render_status.text() != text:
            self.render_status.setText(text)

    @QtCore.Slot()
    def _save_avatar_settings(self) -> None:
        if self.session is None or not self._settings_avatar:
            return
        s = self.settings.snapshot()
        self.store.save_avatar_settings(self._settings_avatar, s)
        self.store.save_output_choices(s)

    def _set_overlay(self, on: bool) -> None:
        self.preview.show_overlay = on
        self.preview.update()

    def _set_inset(self, on: bool) -> None:
        self.preview.show_inset = on
        self.preview.update()

    def _update_stats(self) -> None:
        stats = self.session.stats if self.session else None
        if stats is None:
            return
        s = stats.snapshot()
        stages = "  ".join(f"{k} {v:.1f}" for k, v in s.stage_ms.items())
        lost = self.session.pipeline is not None and self.session.pipeline.camera_lost
        self.preview.overlay_text = (f"{s.fps:.1f} fps   latency {s.latency_ms:.0f} ms\n{stages} (ms)"
                                     + ("\ncamera lost: retrying…" if lost else ""))
        self.preview.update()

    # -- hotkeys, drag and drop, closing -------------------------------------------------------
    def _install_hotkeys(self) -> None:
        for hotkey in HOTKEYS:
            for keys in hotkey.keys:
                QtGui.QShortcut(QtGui.QKeySequence(keys), self, activated=functools.partial(hotkey.run, self))

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:  # noqa: N802 - Qt API
        for url in event.mimeData().urls():
            if url.isLocalFile():
                self.request_avatar(url.toLocalFile())
                event.acceptProposedAction()
                return

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt API
        self.stats_timer.stop()
        self._save_timer.stop()
        if self.session is not None:
            self._save_avatar_settings()
            self.session.close()
        self.store.sync()
        super().closeEvent(event)
