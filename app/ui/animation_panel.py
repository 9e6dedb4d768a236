"""Animation panel: every live control of the animator, bound to the shared ``LiveSettings``.
A change is written to the settings at once and used from the next frame on.

The controls follow the avatar (``show_avatar``): an animal shows its motion strength and its own
stitching switch instead of the eye/lip retargeting, the human stitching and the pose and
expression controls the animal formula has no use for (smoothing stays); a human avatar
without face landmarks (a face box on a face the tracker cannot read) keeps the retargeting
controls visible but off, with a line saying why."""
from __future__ import annotations

from PySide6 import QtWidgets

from ..avatar.framing import AvatarKind
from ..settings import AnimationSettings, LiveSettings, SmoothingGroup, smoothing_fields
from .settings_store import ANIMATION_FIELDS
from .widgets import LabeledSlider

MODES = (("Off", "off"), ("Follow me", "follow"), ("Fixed", "fixed"))
# The single "smoothing" slider drives all five groups; expression-like groups get less, as
# heavy smoothing there makes talking look laggy.
NO_LANDMARKS_NOTE = "Eye and lip controls are off: no face landmarks in this avatar"
_SMOOTHING_SHARE = {SmoothingGroup.ROTATION: 1.0, SmoothingGroup.TRANSLATION: 1.0, SmoothingGroup.EXPRESSION: 0.6,
                    SmoothingGroup.EYES: 0.6, SmoothingGroup.LIPS: 0.4}


class AnimationPanel(QtWidgets.QGroupBox):
    def __init__(self, settings: LiveSettings, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Animation", parent)
        self.settings = settings
        self._updating = False        # True while show_settings sets the controls: no write-back
        d = AnimationSettings()
        self.eye_mode = self._mode_combo()
        self.eye_target = LabeledSlider("Eye open", 0.0, 0.8, d.eye_target)
        self.lip_mode = self._mode_combo()
        self.lip_target = LabeledSlider("Lip open", 0.0, 0.8, d.lip_target)
        self.expression = LabeledSlider("Expression", 0.0, 2.0, d.expression_multiplier, steps=200)
        self.pitch = LabeledSlider("Head pitch", 0.0, 2.0, d.rotation_multiplier[0], steps=200)
        self.yaw = LabeledSlider("Head yaw", 0.0, 2.0, d.rotation_multiplier[1], steps=200)
        self.roll = LabeledSlider("Head roll", 0.0, 2.0, d.rotation_multiplier[2], steps=200)
        self.rotation_limit = LabeledSlider("Rotation limit (deg)", 0.0, 90.0, max(d.rotation_limit_deg),
                                            steps=90, fmt="{:.0f}")
        self.smoothing = LabeledSlider("Smoothing", 0.0, 1.0, d.smooth_rotation)
        self.translation_lock = QtWidgets.QCheckBox("Lock position")
        self.stitching = QtWidgets.QCheckBox("Stitching")
        self.motion_strength = LabeledSlider("Motion strength", 0.0, 3.0, d.motion_strength, steps=300)
        self.animal_stitching = QtWidgets.QCheckBox("Stitching")
        self.animal_stitching.setToolTip("Animal avatars: stitching (off in the official animal example)")
        self.no_landmarks = QtWidgets.QLabel(NO_LANDMARKS_NOTE)
        self.no_landmarks.setWordWrap(True)
        self.no_landmarks.hide()
        self.kind: AvatarKind = "human"
        self.calibrate_button = QtWidgets.QPushButton("Calibrate neutral  (C)")
        self.reset_button = QtWidgets.QPushButton("Reset all")

        # the groups shown or hidden together with the avatar's kind
        self.retargeting = QtWidgets.QWidget()            # human avatars: eye / lip retargeting
        retargeting = QtWidgets.QFormLayout(self.retargeting)
        retargeting.setContentsMargins(0, 0, 0, 0)
        retargeting.addRow("Eyes", self.eye_mode)
        retargeting.addRow(self.eye_target)
        retargeting.addRow("Lips", self.lip_mode)
        retargeting.addRow(self.lip_target)
        self.animal_controls = QtWidgets.QWidget()        # animal avatars
        animal = QtWidgets.QVBoxLayout(self.animal_controls)
        animal.setContentsMargins(0, 0, 0, 0)
        animal.addWidget(self.motion_strength)
        self.animal_controls.hide()

        self.human_motion_controls: tuple[QtWidgets.QWidget, ...] = (
            self.expression, self.pitch, self.yaw, self.roll, self.rotation_limit, self.translation_lock)
        form = QtWidgets.QFormLayout(self)
        form.addRow(self.no_landmarks)
        form.addRow(self.retargeting)
        form.addRow(self.animal_controls)
        for w in (self.expression, self.pitch, self.yaw, self.roll, self.rotation_limit, self.smoothing):
            form.addRow(w)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.translation_lock)
        row.addWidget(self.stitching)
        row.addWidget(self.animal_stitching)
        self.animal_stitching.hide()
        form.addRow(row)
        form.addRow(self.calibrate_button)
        form.addRow(self.reset_button)

        self.show_settings(settings.snapshot())
        self.eye_mode.activated.connect(lambda _: self._push(eye_mode=self.eye_mode.currentData()))
        self.lip_mode.activated.connect(lambda _: self._push(lip_mode=self.lip_mode.currentData()))
        self.eye_target.value_changed.connect(lambda v: self._push(eye_target=v))
        self.lip_target.value_changed.connect(lambda v: self._push(lip_target=v))
        self.expression.value_changed.connect(lambda v: self._push(expression_multiplier=v))
        for w in (self.pitch, self.yaw, self.roll):
            w.value_changed.connect(lambda _: self._push(
                rotation_multiplier=(self.pitch.value(), self.yaw.value(), self.roll.value())))
        self.rotation_limit.value_changed.connect(lambda v: self._push(rotation_limit_deg=(v, v, v)))
        self.smoothing.value_changed.connect(
            lambda v: self._push(**smoothing_fields({g: v * share for g, share in _SMOOTHING_SHARE.items()})))
        self.translation_lock.toggled.connect(lambda on: self._push(translation_lock=on))
        self.stitching.toggled.connect(lambda on: self._push(stitching=on))
        self.motion_strength.value_changed.connect(lambda v: self._push(motion_strength=v))
        self.animal_stitching.toggled.connect(lambda on: self._push(animal_stitching=on))
        self.reset_button.clicked.connect(self.reset_all)

    @staticmethod
    def _mode_combo() -> QtWidgets.QComboBox:
        combo = QtWidgets.QComboBox()
        for label, mode in MODES:
            combo.addItem(label, mode)
        return combo

    def _push(self, **changes) -> None:
        if not self._updating:
            self.settings.update(**changes)
            self._enable_targets()

    def _enable_targets(self) -> None:
        s = self.settings.snapshot()
        self.eye_target.setEnabled(s.eye_mode == "fixed")
        self.lip_target.setEnabled(s.lip_mode == "fixed")

    def show_settings(self, s: AnimationSettings) -> None:
        """Make the controls show ``s`` without writing back."""
        self._updating = True
        try:
            self.eye_mode.setCurrentIndex(self.eye_mode.findData(s.eye_mode))
            self.lip_mode.setCurrentIndex(self.lip_mode.findData(s.lip_mode))
            self.eye_target.set_value(s.eye_target)
            self.lip_target.set_value(s.lip_target)
            self.expression.set_value(s.expression_multiplier)
            self.pitch.set_value(s.rotation_multiplier[0])
            self.yaw.set_value(s.rotation_multiplier[1])
            self.roll.set_value(s.rotation_multiplier[2])
            self.rotation_limit.set_value(max(s.rotation_limit_deg))
            self.smoothing.set_value(s.smooth_rotation)
            self.translation_lock.setChecked(s.translation_lock)
            self.stitching.setChecked(s.stitching)
            self.motion_strength.set_value(s.motion_strength)
            self.animal_stitching.setChecked(s.animal_stitching)
        finally:
            self._updating = False
        self._enable_targets()

    def show_avatar(self, kind: AvatarKind, has_landmarks: bool) -> None:
        """Show the controls that act on this avatar: an animal's (motion strength, its stitching,
        smoothing) or a human's (eye/lip retargeting, expression and head controls, position lock,
        stitching; the retargeting disabled without landmarks)."""
        self.kind = kind
        animal = kind == "animal"
        self.retargeting.setVisible(not animal)
        self.retargeting.setEnabled(has_landmarks)
        self.no_landmarks.setVisible(not animal and not has_landmarks)
        self.animal_controls.setVisible(animal)
        self.animal_stitching.setVisible(animal)
        self.stitching.setVisible(not animal)
        # the official animal formula takes the driver's pose and expression as they are: these
        # controls do nothing for an animal, so they are not offered
        for control in self.human_motion_controls:
            control.setVisible(not animal)

    def reset_all(self) -> None:
        """All animation controls back to their defaults (output choices stay)."""
        defaults = AnimationSettings()
        self.settings.update(**{k: getattr(defaults, k) for k in ANIMATION_FIELDS})
        self.show_settings(self.settings.snapshot())
