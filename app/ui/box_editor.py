"""The face box editor: the avatar image scaled to fit, and a square box the user drags (to move it)
and resizes by its corners (it stays square). The box may reach outside the image; the networks see
that part as padding, and so does the editor (the grey margin around the image). "Animate" hands
over the box in the image FILE's pixels with the chosen kind; "Cancel" keeps the current avatar.

The geometry (image <-> widget pixels, what a press grabs, how a drag moves or resizes the box, the
limits) is plain functions below, so it is tested without Qt events."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from ..avatar.framing import AVATAR_KINDS, AvatarBox, AvatarChoice, AvatarKind
from .widgets import bgr_to_qimage

Grip = Literal["move", "top_left", "top_right", "bottom_left", "bottom_right"]
CORNERS: tuple[Grip, ...] = ("top_left", "top_right", "bottom_left", "bottom_right")

MIN_BOX_SIDE = 16.0          # AvatarBox's own minimum, in image pixels
MAX_BOX_FACTOR = 2.0         # the side is at most this times the image's larger side
MARGIN_FACTOR = 0.25         # the padding shown around the image, times its larger side
HANDLE_PX = 10               # corner handles' side on screen, and how near a press must land
BOX_RGB = (0, 220, 255)      # the box outline's colour (the screenshot test looks for it)


@dataclass(frozen=True)
class View:
    """Image pixels -> widget pixels: ``widget = image * scale + offset``."""

    scale: float
    offset_x: float
    offset_y: float

    def to_widget(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale + self.offset_x, y * self.scale + self.offset_y

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.offset_x) / self.scale, (y - self.offset_y) / self.scale


def view_region(image_size: tuple[int, int], box: AvatarBox) -> tuple[float, float, float, float]:
    """The image-pixel rectangle (x0, y0, x1, y1) the editor shows: the image (``image_size`` is
    (width, height)) with a margin of ``MARGIN_FACTOR`` of its larger side, grown to hold ``box``."""
    w, h = image_size
    m = MARGIN_FACTOR * max(w, h)
    return (min(-m, box.x), min(-m, box.y), max(w + m, box.x + box.size), max(h + m, box.y + box.size))


def fit_view(region: tuple[float, float, float, float], widget_size: tuple[int, int]) -> View:
    """``region`` (x0, y0, x1, y1 in image pixels) scaled to fit ``widget_size`` (width, height),
    aspect kept, centred."""
    x0, y0, x1, y1 = region
    ww, wh = max(1, widget_size[0]), max(1, widget_size[1])
    scale = min(ww / (x1 - x0), wh / (y1 - y0))
    return View(scale, (ww - (x1 - x0) * scale) / 2 - x0 * scale, (wh - (y1 - y0) * scale) / 2 - y0 * scale)


def corner_point(box: AvatarBox, corner: Grip) -> tuple[float, float]:
    """The image-pixel position of one of the box's corners."""
    return (box.x + box.size * corner.endswith("right"), box.y + box.size * corner.startswith("bottom"))


def grip_at(box: AvatarBox, point: tuple[float, float], tolerance: float) -> Grip | None:
    """What a press at ``point`` (image pixels) takes hold of: a corner within ``tolerance`` (image
    pixels) of it, else the box when inside, else nothing. Corners win, so a small box can still grow."""
    px, py = point
    near = [(math.hypot(px - cx, py - cy), c) for c in CORNERS for cx, cy in [corner_point(box, c)]
            if abs(px - cx) <= tolerance and abs(py - cy) <= tolerance]
    if near:
        return min(near)[1]
    if box.x <= px <= box.x + box.size and box.y <= py <= box.y + box.size:
        return "move"
    return None


def clamp_box(x: float, y: float, size: float, image_size: tuple[int, int]) -> AvatarBox:
    """A box with its side within [``MIN_BOX_SIDE``, ``MAX_BOX_FACTOR`` x the larger image side] and
    its centre on the image (so it always frames part of it), moved as little as needed."""
    w, h = image_size
    size = min(max(size, MIN_BOX_SIDE), MAX_BOX_FACTOR * max(w, h, MIN_BOX_SIDE))
    cx = min(max(x + size / 2, 0.0), float(w))
    cy = min(max(y + size / 2, 0.0), float(h))
    return AvatarBox(cx - size / 2, cy - size / 2, size)


def dragged_box(start: AvatarBox, grip: Grip, press: tuple[float, float], point: tuple[float, float],
                image_size: tuple[int, int]) -> AvatarBox:
    """The box after a drag from ``press`` to ``point`` (image pixels) that took hold of ``grip``.
    A move shifts it; a corner drag keeps the opposite corner where it was and makes the side the
    larger of the two distances to the pointer (square, never below the minimum)."""
    if grip == "move":
        return clamp_box(start.x + point[0] - press[0], start.y + point[1] - press[1], start.size, image_size)
    left, top = grip.endswith("left"), grip.startswith("top")
    # the fixed corner is the one opposite the grip
    ax = start.x + start.size if left else start.x
    ay = start.y + start.size if top else start.y
    dx = ax - point[0] if left else point[0] - ax
    dy = ay - point[1] if top else point[1] - ay
    w, h = image_size
    side = min(max(dx, dy, MIN_BOX_SIDE), MAX_BOX_FACTOR * max(w, h, MIN_BOX_SIDE))
    return clamp_box(ax - side if left else ax, ay - side if top else ay, side, image_size)


class BoxCanvas(QtWidgets.QWidget):
    """Paints the image, its padding and the box; mouse drags move or resize the box."""

    box_changed = QtCore.Signal(object)          # AvatarBox

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(320, 240)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)              # the cursor shows what a press would take
        self._image: QtGui.QImage | None = None
        self.image_size = (1, 1)
        self.box = AvatarBox(0, 0, MIN_BOX_SIDE)
        self._drag: tuple[Grip, tuple[float, float], AvatarBox, View] | None = None

    def set_image(self, image: np.ndarray, box: AvatarBox) -> None:
        self._image = bgr_to_qimage(image)
        self.image_size = (image.shape[1], image.shape[0])
        self.box = clamp_box(box.x, box.y, box.size, self.image_size)
        self._drag = None
        self.update()

    def view(self) -> View:
        # frozen during a drag, so the pointer's image position does not move with a growing view
        if self._drag is not None:
            return self._drag[3]
        return fit_view(view_region(self.image_size, self.box), (self.width(), self.height()))

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:  # noqa: N802 - Qt API
        if event.button() != QtCore.Qt.MouseButton.LeftButton:
            return
        view = self.view()
        point = view.to_image(event.position().x(), event.position().y())
        grip = grip_at(self.box, point, HANDLE_PX / view.scale)
        if grip is not None:
            self._drag = (grip, point, self.box, view)
        event.accept()

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:  # noqa: N802 - Qt API
        view = self.view()
        point = view.to_image(event.position().x(), event.position().y())
        if self._drag is None:
            self.setCursor(_CURSORS[grip_at(self.box, point, HANDLE_PX / view.scale)])
            return
        grip, press, start, _ = self._drag
        box = dragged_box(start, grip, press, point, self.image_size)
        if box != self.box:
            self.box = box
            self.box_changed.emit(box)
            self.update()

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self._drag is not None and event.button() == QtCore.Qt.MouseButton.LeftButton:
            self._drag = None
            self.update()             # the view may grow to the box now

    def box_rect(self) -> QtCore.QRectF:
        """The box in widget pixels."""
        view = self.view()
        x, y = view.to_widget(self.box.x, self.box.y)
        return QtCore.QRectF(x, y, self.box.size * view.scale, self.box.size * view.scale)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802 - Qt API
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), QtGui.QColor(24, 24, 28))
        if self._image is None:
            p.end()
            return
        view = self.view()
        x0, y0, x1, y1 = view_region(self.image_size, self.box)
        wx0, wy0 = view.to_widget(x0, y0)
        wx1, wy1 = view.to_widget(x1, y1)
        # the padding: what the networks see outside the image (its edge colour, shown neutral here)
        p.fillRect(QtCore.QRectF(wx0, wy0, wx1 - wx0, wy1 - wy0),
                   QtGui.QBrush(QtGui.QColor(70, 70, 76), QtCore.Qt.BrushStyle.SolidPattern))
        p.fillRect(QtCore.QRectF(wx0, wy0, wx1 - wx0, wy1 - wy0),
                   QtGui.QBrush(QtGui.QColor(90, 90, 96), QtCore.Qt.BrushStyle.BDiagPattern))
        ix, iy = view.to_widget(0, 0)
        target = QtCore.QRectF(ix, iy, self.image_size[0] * view.scale, self.image_size[1] * view.scale)
        p.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform)
        p.drawImage(target, self._image)
        box = self.box_rect()
        # dim everything outside the box, so what becomes the avatar stands out
        outside = QtGui.QPainterPath()
        outside.addRect(QtCore.QRectF(self.rect()))
        inside = QtGui.QPainterPath()
        inside.addRect(box)
        p.fillPath(outside.subtracted(inside), QtGui.QColor(0, 0, 0, 110))
        color = QtGui.QColor(*BOX_RGB)
        p.setPen(QtGui.QPen(color, 2))
        p.drawRect(box)
        for corner in CORNERS:
            cx, cy = view.to_widget(*corner_point(self.box, corner))
            p.fillRect(QtCore.QRectF(cx - HANDLE_PX / 2, cy - HANDLE_PX / 2, HANDLE_PX, HANDLE_PX), color)
        p.end()


_CURSORS: dict[Grip | None, QtCore.Qt.CursorShape] = {
    None: QtCore.Qt.CursorShape.ArrowCursor,
    "move": QtCore.Qt.CursorShape.SizeAllCursor,
    "top_left": QtCore.Qt.CursorShape.SizeFDiagCursor,
    "bottom_right": QtCore.Qt.CursorShape.SizeFDiagCursor,
    "top_right": QtCore.Qt.CursorShape.SizeBDiagCursor,
    "bottom_left": QtCore.Qt.CursorShape.SizeBDiagCursor,
}


class BoxEditor(QtWidgets.QWidget):
    """The canvas with a line saying why it is shown, the kind (human or animal) and the buttons.
    ``accepted`` carries the ``AvatarChoice`` (box in file pixels); ``cancelled`` carries nothing."""

    accepted = QtCore.Signal(object)
    cancelled = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.path: Path | None = None
        self.message = QtWidgets.QLabel("")
        self.message.setWordWrap(True)
        self.canvas = BoxCanvas()
        self.kind_buttons = {kind: QtWidgets.QRadioButton(kind.capitalize()) for kind in AVATAR_KINDS}
        self.kind_buttons["human"].setChecked(True)
        self.box_label = QtWidgets.QLabel("")
        self.animate_button = QtWidgets.QPushButton("Animate")
        self.animate_button.setDefault(True)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("Face:"))
        for button in self.kind_buttons.values():
            row.addWidget(button)
        row.addSpacing(12)
        row.addWidget(self.box_label, 1)
        row.addWidget(self.cancel_button)
        row.addWidget(self.animate_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.message)
        layout.addWidget(self.canvas, 1)
        layout.addLayout(row)
        self.canvas.box_changed.connect(self._show_box)
        self.animate_button.clicked.connect(self._accept)
        self.cancel_button.clicked.connect(self.cancelled.emit)

    def edit(self, path: str | Path, image: np.ndarray, box: AvatarBox, kind: AvatarKind, message: str) -> None:
        """Show ``image`` (the file at ``path``, H x W x 3 BGR, full size) with ``box`` (its pixels)."""
        self.path = Path(path)
        self.message.setText(f"<b>{self.path.name}</b>: {message}. Drag the box onto the face "
                             "(corners resize it); parts outside the image are padded.")
        self.kind_buttons[kind].setChecked(True)
        self.canvas.set_image(image, box)
        self._show_box(self.canvas.box)

    @property
    def kind(self) -> AvatarKind:
        return next(kind for kind, button in self.kind_buttons.items() if button.isChecked())

    def choice(self) -> AvatarChoice:
        """What "Animate" hands over now."""
        if self.path is None:
            raise ValueError("the box editor has no image")
        box = self.canvas.box
        return AvatarChoice(self.path, self.kind, AvatarBox(round(box.x), round(box.y), round(box.size)))

    def _show_box(self, box: AvatarBox) -> None:
        self.box_label.setText(f"box {round(box.x)},{round(box.y)},{round(box.size)}")

    def _accept(self) -> None:
        self.accepted.emit(self.choice())
