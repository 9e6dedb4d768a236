"""Small reusable widgets: a labelled slider that resets on double-click, and the preview."""
from __future__ import annotations

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets


class _ResettableSlider(QtWidgets.QSlider):
    reset_requested = QtCore.Signal()

    def mouseDoubleClickEvent(self, event: QtGui.QMouseEvent) -> None:  # noqa: N802 - Qt API
        self.reset_requested.emit()
        event.accept()


class LabeledSlider(QtWidgets.QWidget):
    """A horizontal slider over [minimum, maximum] in ``steps`` steps that shows its value and goes
    back to ``default`` on double-click. ``value_changed`` carries the float value."""

    value_changed = QtCore.Signal(float)

    def __init__(self, title: str, minimum: float, maximum: float, default: float, *, steps: int = 100,
                 fmt: str = "{:.2f}", parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.minimum, self.maximum, self.default, self.steps, self.fmt = minimum, maximum, default, steps, fmt
        self.title = QtWidgets.QLabel(title)
        self.slider = _ResettableSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, steps)
        self.slider.setToolTip(f"{title} (double-click to reset to {fmt.format(default)})")
        self.value_label = QtWidgets.QLabel()
        self.value_label.setMinimumWidth(44)
        self.value_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title, 3)
        layout.addWidget(self.slider, 5)
        layout.addWidget(self.value_label, 1)
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.reset_requested.connect(self.reset)
        self.set_value(default)

    def _to_steps(self, value: float) -> int:
        span = self.maximum - self.minimum
        return round((min(max(value, self.minimum), self.maximum) - self.minimum) / span * self.steps)

    def value(self) -> float:
        return self.minimum + (self.maximum - self.minimum) * self.slider.value() / self.steps

    def set_value(self, value: float) -> None:
        self.slider.setValue(self._to_steps(value))
        self.value_label.setText(self.fmt.format(self.value()))

    def reset(self) -> None:
        self.set_value(self.default)

    def _on_slider(self, _: int) -> None:
        v = self.value()
        self.value_label.setText(self.fmt.format(v))
        self.value_changed.emit(v)


def bgr_to_qimage(image: np.ndarray) -> QtGui.QImage:
    """H x W x 3 uint8 BGR -> QImage (a deep copy, so the array may be reused)."""
    h, w = image.shape[:2]
    bgr = np.ascontiguousarray(image)          # Qt reads BGR bytes as they are: one copy, in Qt
    return QtGui.QImage(bgr.data, w, h, 3 * w, QtGui.QImage.Format.Format_BGR888).copy()


class Preview(QtWidgets.QWidget):
    """Shows the output frame scaled to fit, an optional inset (the webcam crop with its landmarks,
    local only) and an optional text overlay (fps, latency, stage times)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(480, 360)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Expanding)
        self._image: QtGui.QImage | None = None
        self._inset: QtGui.QImage | None = None
        self.overlay_text = ""
        self.show_overlay = True
        self.show_inset = True
        self.hint = ""
        self.frames_shown = 0

    def set_frame(self, image: np.ndarray) -> None:
        self._image = bgr_to_qimage(image)
        self.frames_shown += 1
        self.update()

    def set_inset(self, image: np.ndarray | None) -> None:
        self._inset = None if image is None else bgr_to_qimage(image)
        self.update()

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802 - Qt API
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), QtGui.QColor(24, 24, 28))
        if self._image is not None:
            img = self._image.scaled(self.size(), QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                     QtCore.Qt.TransformationMode.SmoothTransformation)
            p.drawImage((self.width() - img.width()) // 2, (self.height() - img.height()) // 2, img)
        if self.show_inset and self._inset is not None:
            side = max(96, self.width() // 5)
            inset = self._inset.scaled(side, side, QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                       QtCore.Qt.TransformationMode.SmoothTransformation)
            x, y = self.width() - inset.width() - 10, self.height() - inset.height() - 10
            p.drawImage(x, y, inset)
            p.setPen(QtGui.QPen(QtGui.QColor(255, 255, 255, 180), 1))
            p.drawRect(x, y, inset.width(), inset.height())
        p.setPen(QtGui.QColor(240, 240, 240))
        if self.show_overlay and self.overlay_text:
            rect = QtCore.QRect(10, 10, self.width() - 20, 80)
            p.fillRect(p.boundingRect(rect, 0, self.overlay_text).adjusted(-4, -2, 4, 2), QtGui.QColor(0, 0, 0, 150))
            p.drawText(rect, 0, self.overlay_text)
        if self.hint:
            rect = QtCore.QRect(0, self.height() - 40, self.width(), 30)
            p.fillRect(p.boundingRect(rect, QtCore.Qt.AlignmentFlag.AlignHCenter, self.hint).adjusted(-6, -3, 6, 3),
                       QtGui.QColor(20, 60, 140, 200))
            p.drawText(rect, QtCore.Qt.AlignmentFlag.AlignHCenter, self.hint)
        p.end()
