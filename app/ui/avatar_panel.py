"""Avatar panel: open a portrait or a video clip, pick one of the recent ones (drag and drop works
on the window), say whether it is a human or an animal face, open the face box editor on it, and
switch the faces of a group photo on and off."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from ..avatar.framing import AVATAR_KINDS, MAX_GROUP_FACES, AvatarKind
from ..avatar.video import VIDEO_SUFFIXES, is_video_file
from .widgets import bgr_to_qimage

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _patterns(suffixes: tuple[str, ...]) -> str:
    return " ".join(f"*{s}" for s in suffixes)


# the file dialog's filter: both kinds first, then each alone
AVATAR_FILTER = (f"Images and videos ({_patterns(IMAGE_SUFFIXES + VIDEO_SUFFIXES)});;"
                 f"Images ({_patterns(IMAGE_SUFFIXES)});;Videos ({_patterns(VIDEO_SUFFIXES)})")
MAX_RECENT = 8
THUMBNAIL_PX = 48
FACES_TOOLTIP = "Face {n} of the photo, numbered left to right: animated when checked (at least one stays on)"


def first_video_frame(path: str | Path) -> np.ndarray | None:
    """The first frame of the video at ``path`` (H x W x 3 uint8 BGR, the file's pixels), or None
    when OpenCV cannot read one (QPixmap cannot read videos: the thumbnails and the face box editor
    show this frame)."""
    cap = cv2.VideoCapture(str(path))
    try:
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        log.info("%s: no frame could be read", path)
        return None
    return np.ascontiguousarray(frame)


def thumbnail(path: str, size: int = THUMBNAIL_PX) -> QtGui.QPixmap | None:
    """A ``size`` x ``size`` (at least, aspect kept) picture of the avatar file at ``path``: the
    image, or a video's first frame; None when it cannot be read."""
    if is_video_file(path):
        frame = first_video_frame(path)
        if frame is None:
            return None
        # shrink on the host first: a 4K frame as a QImage only to become 48 px is wasteful
        scale = size / min(frame.shape[:2])
        if scale < 1:
            frame = cv2.resize(frame, (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale))),
                               interpolation=cv2.INTER_AREA)
        pixmap = QtGui.QPixmap.fromImage(bgr_to_qimage(frame))
    else:
        pixmap = QtGui.QPixmap(path)
    if pixmap.isNull():
        return None
    return pixmap.scaled(size, size, QtCore.Qt.AspectRatioMode.KeepAspectRatioByExpanding,
                         QtCore.Qt.TransformationMode.SmoothTransformation)


class AvatarPanel(QtWidgets.QGroupBox):
    avatar_requested = QtCore.Signal(str)
    kind_requested = QtCore.Signal(str)          # the user switched the kind (an AvatarKind)
    box_edit_requested = QtCore.Signal()         # "Adjust face box…"
    faces_requested = QtCore.Signal(object)      # a group photo's faces to animate: tuple of numbers 1..

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Avatar", parent)
        self.recent: list[str] = []
        # thumbnails by (path, modification time): a video's costs ~50 ms to decode, and the row is
        # rebuilt at every avatar switch
        self._thumbnails: dict[tuple[str, float], QtGui.QPixmap | None] = {}
        self.current = QtWidgets.QLabel("-")
        self.current.setWordWrap(True)
        self.open_button = QtWidgets.QPushButton("Open image or video…")
        self.open_button.setToolTip("A portrait, a group photo (up to 4 faces) or a video clip (its first 10 s)")
        self.open_button.clicked.connect(self.open_dialog)
        self.kind = QtWidgets.QComboBox()
        for kind in AVATAR_KINDS:
            self.kind.addItem(kind.capitalize(), kind)
        self.kind.setToolTip("Which networks animate the avatar: a human face or an animal's")
        self.kind.activated.connect(lambda _: self.kind_requested.emit(self.kind.currentData()))
        self.adjust_button = QtWidgets.QPushButton("Adjust face box…")
        self.adjust_button.setToolTip("Choose the square region of the image that is animated")
        self.adjust_button.clicked.connect(self.box_edit_requested.emit)
        # a group photo's faces, one check box each ("1".."4", left to right); hidden otherwise
        self.faces_row = QtWidgets.QWidget()
        faces_layout = QtWidgets.QHBoxLayout(self.faces_row)
        faces_layout.setContentsMargins(0, 0, 0, 0)
        faces_layout.addWidget(QtWidgets.QLabel("Animate faces:"))
        self.face_boxes: list[QtWidgets.QCheckBox] = []
        for n in range(1, MAX_GROUP_FACES + 1):
            box = QtWidgets.QCheckBox(str(n))
            box.setToolTip(FACES_TOOLTIP.format(n=n))
            box.toggled.connect(lambda on, n=n: self._on_face_toggled(n, on))
            faces_layout.addWidget(box)
            self.face_boxes.append(box)
        faces_layout.addStretch(1)
        self.faces_row.hide()
        self.recent_row = QtWidgets.QHBoxLayout()
        self.recent_row.setSpacing(4)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.current)
        layout.addWidget(self.open_button)
        face_row = QtWidgets.QHBoxLayout()
        face_row.addWidget(QtWidgets.QLabel("Face:"))
        face_row.addWidget(self.kind)
        face_row.addWidget(self.adjust_button, 1)
        layout.addLayout(face_row)
        layout.addWidget(self.faces_row)
        layout.addWidget(QtWidgets.QLabel("Recent (drop an image or a video on the window):"))
        layout.addLayout(self.recent_row)

    def open_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Choose a portrait or a video", "", AVATAR_FILTER)
        if path:
            self.avatar_requested.emit(path)

    def set_current(self, path: str) -> None:
        self.current.setText(Path(path).name)
        self.current.setToolTip(path)
        self.recent = [path] + [p for p in self.recent if p != path][: MAX_RECENT - 1]
        self._rebuild_recent()

    def show_kind(self, kind: AvatarKind) -> None:
        """Show the current avatar's kind (without asking for a switch)."""
        self.kind.setCurrentIndex(self.kind.findData(kind))

    def show_faces(self, count: int, animated: tuple[int, ...] = ()) -> None:
        """Show the per-face boxes of a group photo: ``count`` faces numbered 1.. left to right
        (hidden below 2: one face, an animal, a video), those in ``animated`` checked; nothing is
        requested."""
        count = min(count, MAX_GROUP_FACES)
        self.faces_row.setVisible(count > 1)
        for n, box in enumerate(self.face_boxes, start=1):
            box.blockSignals(True)
            box.setVisible(n <= count)
            box.setChecked(n <= count and n in animated)
            box.blockSignals(False)

    def animated_faces(self) -> tuple[int, ...]:
        """The checked faces' numbers, ascending (empty when the row is hidden)."""
        if self.faces_row.isHidden():
            return ()
        return tuple(n for n, box in enumerate(self.face_boxes, start=1) if not box.isHidden() and box.isChecked())

    def _on_face_toggled(self, number: int, on: bool) -> None:
        faces = self.animated_faces()
        if not faces:                  # the last face stays on: an avatar animates at least one
            box = self.face_boxes[number - 1]
            box.blockSignals(True)
            box.setChecked(True)
            box.blockSignals(False)
            return
        self.faces_requested.emit(faces)

    def set_recent(self, paths: list[str]) -> None:
        self.recent = [p for p in paths if Path(p).is_file()][:MAX_RECENT]
        self._rebuild_recent()

    def neighbour(self, current: str | None, step: int) -> str | None:
        """The recent avatar ``step`` places after ``current`` (wrapping), for next/previous."""
        if not self.recent:
            return None
        i = self.recent.index(current) if current in self.recent else 0
        return self.recent[(i + step) % len(self.recent)]

    def _thumbnail(self, path: str) -> QtGui.QPixmap | None:
        try:
            key = (path, Path(path).stat().st_mtime)
        except OSError:
            return None
        if key not in self._thumbnails:
            self._thumbnails = {k: v for k, v in self._thumbnails.items() if k[0] in self.recent}
            self._thumbnails[key] = thumbnail(path)
        return self._thumbnails[key]

    def _rebuild_recent(self) -> None:
        while self.recent_row.count():
            item = self.recent_row.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        for path in self.recent:
            button = QtWidgets.QToolButton()
            button.setIconSize(QtCore.QSize(THUMBNAIL_PX, THUMBNAIL_PX))
            pixmap = self._thumbnail(path)
            if pixmap is not None:
                button.setIcon(QtGui.QIcon(pixmap))
            button.setToolTip(path)
            button.clicked.connect(lambda _=False, p=path: self.avatar_requested.emit(p))
            self.recent_row.addWidget(button)
        self.recent_row.addStretch(1)
