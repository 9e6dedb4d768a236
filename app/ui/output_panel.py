"""Output panel: the virtual camera switch with its state, and what the output shows."""
from __future__ import annotations

import logging

from PySide6 import QtCore, QtGui, QtWidgets

from ..run.live_session import VirtualCameraState
from ..settings import KEY_GREEN, BackgroundMode, LiveSettings

log = logging.getLogger(__name__)

# the background box: presets (label, mode text), then two entries that open a picker
BACKGROUND_PRESETS = (("Background: keep", "keep"), ("Background: blur", "blur"),
                      ("Background: key green (OBS)", str(KEY_GREEN)))
_PICK_COLOUR, _PICK_IMAGE = "pick:colour", "pick:image"


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
        # an animal's own switch, in the same place: its default is the crop (the official choice)
        self.animal_paste_back = QtWidgets.QCheckBox("Full picture (paste back)")
        self.animal_paste_back.setToolTip("Animal avatars: paste the animated face into the picture "
                                          "(off: the face crop, as the official animal pipeline)")
        self.animal_paste_back.hide()
        self.mirror = QtWidgets.QCheckBox("Mirror")
        self.background = QtWidgets.QComboBox()
        for label, mode in BACKGROUND_PRESETS:
            self.background.addItem(label, mode)
        self.background.addItem("Background: colour...", _PICK_COLOUR)
        self.background.addItem("Background: image...", _PICK_IMAGE)
        self.overlay = QtWidgets.QCheckBox("Stats overlay  (O)")
        self.inset = QtWidgets.QCheckBox("Webcam inset  (I)")
        s = settings.snapshot()
        self.paste_back.setChecked(s.paste_back)
        self.animal_paste_back.setChecked(s.animal_paste_back)
        self.mirror.setChecked(s.mirror)
        self.overlay.setChecked(True)
        self.inset.setChecked(True)
        self.show_background(s.background)
        layout = QtWidgets.QVBoxLayout(self)
        for w in (self.vcam, self.vcam_state, self.paste_back, self.animal_paste_back, self.mirror, self.background,
                  self.overlay, self.inset):
            layout.addWidget(w)
        self.vcam.toggled.connect(self.virtual_camera_toggled)
        self.paste_back.toggled.connect(lambda on: settings.update(paste_back=on))
        self.animal_paste_back.toggled.connect(lambda on: settings.update(animal_paste_back=on))
        self.mirror.toggled.connect(lambda on: settings.update(mirror=on))
        self.background.activated.connect(self._background_chosen)

    def show_avatar(self, kind: str, animal_paste_back: bool) -> None:
        """Offer the paste-back switch of ``kind``'s avatars, showing the animal one's remembered
        state (``animal_paste_back``) without writing it back."""
        animal = kind == "animal"
        self.paste_back.setVisible(not animal)
        self.animal_paste_back.setVisible(animal)
        blocked = self.animal_paste_back.blockSignals(True)
        self.animal_paste_back.setChecked(animal_paste_back)
        self.animal_paste_back.blockSignals(blocked)

    def set_background(self, mode: str | BackgroundMode) -> bool:
        """Apply ``mode`` (a ``BackgroundMode`` or its text) from the next frame on; False (and the
        box unchanged) when it cannot be used."""
        try:
            if isinstance(mode, str):
                mode = BackgroundMode.parse(mode)
            new = self.settings.update(background=mode.with_existing_image())
        except ValueError as e:
            log.warning("%s", e)
            self.show_background(self.settings.snapshot().background)
            return False
        self.show_background(new.background)
        return True

    def show_background(self, mode: BackgroundMode) -> None:
        """Make the box show ``mode`` without applying it (a chosen colour or image gets its own entry)."""
        index = self.background.findData(str(mode))
        if index < 0:
            custom = len(BACKGROUND_PRESETS)
            if self.background.itemData(custom) not in (_PICK_COLOUR, _PICK_IMAGE):
                self.background.removeItem(custom)          # the previous custom choice
            self.background.insertItem(custom, f"Background: {mode}", str(mode))
            index = custom
        self.background.setCurrentIndex(index)

    def _background_chosen(self, index: int) -> None:
        choice = self.background.itemData(index)
        if choice == _PICK_COLOUR:
            colour = QtGui.QColor(*self.settings.snapshot().background.color)
            colour = QtWidgets.QColorDialog.getColor(colour, self, "Background colour")
            choice = f"color:{colour.name()}" if colour.isValid() else None
        elif choice == _PICK_IMAGE:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Background image", "",
                                                            "Images (*.png *.jpg *.jpeg *.bmp *.webp)")
            choice = f"image:{path}" if path else None
        if choice is None:
            self.show_background(self.settings.snapshot().background)
        else:
            self.set_background(choice)

    def show_vcam_state(self, state: VirtualCameraState, message: str) -> None:
        self.vcam_state.setText(state.value + (f": {message}" if message else ""))
        self.vcam.blockSignals(True)
        self.vcam.setChecked(state is VirtualCameraState.ON)
        self.vcam.blockSignals(False)
