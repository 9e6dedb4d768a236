"""Avatar panel: open a portrait, pick one of the recent ones (drag and drop works on the window),
say whether it is a human or an animal face, and open the face box editor on it."""
from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from ..avatar.framing import AVATAR_KINDS, AvatarKind

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff)"
MAX_RECENT = 8


class AvatarPanel(QtWidgets.QGroupBox):
    avatar_requested = QtCore.Signal(str)
    kind_requested = QtCore.Signal(str)          # the user switched the kind (an AvatarKind)
    box_edit_requested = QtCore.Signal()         # "Adjust face box…"

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Avatar", parent)
        self.recent: list[str] = []
        self.current = QtWidgets.QLabel("-")
        self.current.setWordWrap(True)
        self.open_button = QtWidgets.QPushButton("Open image…")
        self.open_button.clicked.connect(self.open_dialog)
        self.kind = QtWidgets.QComboBox()
        for kind in AVATAR_KINDS:
            self.kind.addItem(kind.capitalize(), kind)
        self.kind.setToolTip("Which networks animate the avatar: a human face or an animal's")
        self.kind.activated.connect(lambda _: self.kind_requested.emit(self.kind.currentData()))
        self.adjust_button = QtWidgets.QPushButton("Adjust face box…")
        self.adjust_button.setToolTip("Choose the square region of the image that is animated")
        self.adjust_button.clicked.connect(self.box_edit_requested.emit)
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
        layout.addWidget(QtWidgets.QLabel("Recent (drop an image on the window to add one):"))
        layout.addLayout(self.recent_row)

    def open_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Choose a portrait", "", IMAGE_FILTER)
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

    def set_recent(self, paths: list[str]) -> None:
        self.recent = [p for p in paths if Path(p).is_file()][:MAX_RECENT]
        self._rebuild_recent()

    def neighbour(self, current: str | None, step: int) -> str | None:
        """The recent avatar ``step`` places after ``current`` (wrapping), for next/previous."""
        if not self.recent:
            return None
        i = self.recent.index(current) if current in self.recent else 0
        return self.recent[(i + step) % len(self.recent)]

    def _rebuild_recent(self) -> None:
        while self.recent_row.count():
            item = self.recent_row.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        for path in self.recent:
            button = QtWidgets.QToolButton()
            button.setIconSize(QtCore.QSize(48, 48))
            pixmap = QtGui.QPixmap(path)
            if not pixmap.isNull():
                button.setIcon(QtGui.QIcon(pixmap.scaled(48, 48, QtCore.Qt.AspectRatioMode.KeepAspectRatioByExpanding)))
            button.setToolTip(path)
            button.clicked.connect(lambda _=False, p=path: self.avatar_requested.emit(p))
            self.recent_row.addWidget(button)
        self.recent_row.addStretch(1)
