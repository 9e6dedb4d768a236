"""Camera panel: which camera (by name where the platform tells) or video file, and resolution."""
from __future__ import annotations

import sys
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from ..live.capture import parse_source

RESOLUTIONS = ((640, 480), (1280, 720), (1920, 1080))


def list_cameras(max_index: int = 4) -> list[tuple[str, str]]:
    """(source, label) pairs. Linux names come from sysfs (exact /dev/videoN mapping); other
    platforms get numbered entries (OpenCV opens cameras by index)."""
    cams: list[tuple[str, str]] = []
    if sys.platform.startswith("linux"):
        for dev in sorted(Path("/sys/class/video4linux").glob("video*"), key=lambda p: int(p.name[5:] or 0)):
            try:
                name = (dev / "name").read_text().strip()
                index = int(dev.name[5:])
            except (OSError, ValueError):
                continue
            cams.append((str(index), f"{name} (/dev/video{index})"))
        return cams
    return [(str(i), f"Camera {i}") for i in range(max_index)]


class CameraPanel(QtWidgets.QGroupBox):
    camera_requested = QtCore.Signal(str, int, int)    # source, width, height

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Camera", parent)
        self.combo = QtWidgets.QComboBox()
        self.resolution = QtWidgets.QComboBox()
        for w, h in RESOLUTIONS:
            self.resolution.addItem(f"{w} x {h}", (w, h))
        self.resolution.setCurrentIndex(1)
        self.file_button = QtWidgets.QPushButton("Video file…")
        self.status = QtWidgets.QLabel("")
        self.status.setWordWrap(True)
        layout = QtWidgets.QFormLayout(self)
        layout.addRow("Source", self.combo)
        layout.addRow("Resolution", self.resolution)
        layout.addRow(self.file_button)
        layout.addRow(self.status)
        self.refresh()
        self.combo.activated.connect(lambda _: self._emit())
        self.resolution.activated.connect(lambda _: self._emit())
        self.file_button.clicked.connect(self._choose_file)

    def refresh(self) -> None:
        current = self.source()
        self.combo.clear()
        for source, label in list_cameras():
            self.combo.addItem(label, source)
        if current:
            self.select(current)

    def source(self) -> str | None:
        return self.combo.currentData()

    def size(self) -> tuple[int, int]:  # type: ignore[override]
        return self.resolution.currentData()

    def select(self, source: str) -> None:
        i = self.combo.findData(source)
        if i < 0:
            parsed = parse_source(source)
            label = parsed.name if isinstance(parsed, Path) else f"Camera {parsed}"
            self.combo.addItem(label, source)
            i = self.combo.count() - 1
        self.combo.setCurrentIndex(i)

    def set_resolution(self, width: int, height: int) -> None:
        i = self.resolution.findData((width, height))
        if i >= 0:
            self.resolution.setCurrentIndex(i)

    def _choose_file(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Video as camera", "", "Videos (*.mp4 *.avi *.mov *.mkv)")
        if path:
            self.select(path)
            self._emit()

    def _emit(self) -> None:
        if self.source() is not None:
            self.camera_requested.emit(self.source(), *self.size())
