"""Output panel: the virtual camera switch with its state, and what the output shows."""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from ..live_session import VirtualCameraState
from ..settings import LiveSettings


class OutputPanel(QtWidgets.QGroupBox):
    virtual_camera_toggled = QtCore.Signal(bool)

    def __init__(self, settings: LiveSettings, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Output", parent)
        self.settings = settings
        self.vcam = QtWidgets.QCheckBox("Virtual camera  (V)")
        self.vcam_state = QtWidgets.QLabel("off")
        self.vcam_state.setWordWrap(True)
        self.vcam_state.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.paste_back = QtWidgets.QCheckBox("Full picture (paste back)")
        self.mirror = QtWidgets.QCheckBox("Mirror")
        self.overlay = QtWidgets.QCheckBox("Stats overlay  (O)")
        self.inset = QtWidgets.QCheckBox("Webcam inset  (I)")
        s = settings.snapshot()
        self.paste_back.setChecked(s.paste_back)
        self.mirror.setChecked(s.mirror)
        self.overlay.setChecked(True)
        self.inset.setChecked(True)
        layout = QtWidgets.QVBoxLayout(self)
        for w in (self.vcam, self.vcam_state, self.paste_back, self.mirror, self.overlay, self.inset):
            layout.addWidget(w)
        self.vcam.toggled.connect(self.virtual_camera_toggled)
        self.paste_back.toggled.connect(lambda on: settings.update(paste_back=on))
        self.mirror.toggled.connect(lambda on: settings.update(mirror=on))

    def show_vcam_state(self, state: VirtualCameraState, message: str) -> None:
        self.vcam_state.setText(state.value + (f": {message}" if message else ""))
        self.vcam.blockSignals(True)
        self.vcam.setChecked(state is VirtualCameraState.ON)
        self.vcam.blockSignals(False)
