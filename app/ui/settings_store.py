"""What the app remembers between runs, in ``QSettings``: the one place that knows the keys and how
each value is written. Last avatar and the recent ones, last camera and its size, the output
choices, the animation controls' values and the kind, face box and animated faces per avatar, and where the
animation runs (this computer or a render server, with its address and token; the token is stored
as typed, like a browser's saved password, and never logged)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6 import QtCore

from ..avatar.framing import AvatarBox, AvatarChoice, check_avatar_kind, parse_faces
from ..run.renderer import RenderChoice, RenderTarget
from ..settings import AnimationSettings, BackgroundMode, MotionSettings, parse_size, remembered_fields

log = logging.getLogger(__name__)

SETTINGS_PATH_ENV = "AVATARCAM_SETTINGS"

# From the fields' metadata (``remember``): remembered per avatar, the animation panel's controls and
# the output background (written as its text form); across avatars, the output's on/off choices.
PER_AVATAR_FIELDS = remembered_fields("avatar")
OUTPUT_CHOICE_FIELDS = remembered_fields("app")
# The animation panel's controls (sliders, mode boxes, check boxes): the motion settings remembered
# per avatar, what "Reset all" puts back to the defaults.
ANIMATION_FIELDS = remembered_fields("avatar", MotionSettings)

_AVATAR = "avatar"                       # path of the last avatar
_RECENT_AVATARS = "recent_avatars"       # JSON list of paths, newest first
_CAMERA = "camera"                       # camera index or video path, as typed
_CAMERA_SIZE = "camera_size"             # "WxH"
_AVATAR_SETTINGS = "avatar_settings"     # group: one JSON object of PER_AVATAR_FIELDS per avatar
# group: per avatar, JSON {"kind": "human"|"animal", "box": "X,Y,SIZE"|null, "faces": [1, 3]|null}
# ("faces": a group photo's animated faces, numbered left to right; null or absent: all)
_AVATAR_FRAMING = "avatar_framing"
_RENDER_TARGET = "render/target"         # "local" (this computer) or "server"
_RENDER_URL = "render/url"               # the render server's ws:// or wss:// address, as typed
_RENDER_TOKEN = "render/token"           # the render server's token


class SettingsStore:
    """Typed access to the remembered choices; a missing or unreadable value reads as absent."""

    def __init__(self, qsettings: QtCore.QSettings) -> None:
        self.qsettings = qsettings

    @classmethod
    def open(cls) -> SettingsStore:
        """The platform's usual place; ``$AVATARCAM_SETTINGS`` (an .ini path) overrides it (tests)."""
        path = os.environ.get(SETTINGS_PATH_ENV)
        if path:
            return cls(QtCore.QSettings(path, QtCore.QSettings.Format.IniFormat))
        return cls(QtCore.QSettings("AvatarCam", "AvatarCam"))

    # -- avatar --------------------------------------------------------------------------------
    def last_avatar(self) -> str | None:
        return self._text(_AVATAR)

    def recent_avatars(self) -> list[str]:
        paths = self._json(_RECENT_AVATARS)
        return [str(p) for p in paths] if isinstance(paths, list) else []

    def remember_avatar(self, path: str, recent: list[str]) -> None:
        """``path`` is the current avatar; ``recent`` the recent row, newest first."""
        self.qsettings.setValue(_AVATAR, path)
        self.qsettings.setValue(_RECENT_AVATARS, json.dumps(recent))

    def avatar_settings(self, path: str) -> dict[str, Any]:
        """The animation values saved for the avatar at ``path`` (only ``PER_AVATAR_FIELDS``), or {}."""
        values = self._json(_avatar_key(_AVATAR_SETTINGS, path))
        if values is None:
            return {}
        if not isinstance(values, dict):
            log.info("ignoring saved settings for %s: not a JSON object", path)
            return {}
        return {k: v for k, v in values.items() if k in PER_AVATAR_FIELDS}

    def save_avatar_settings(self, path: str, settings: AnimationSettings) -> None:
        values = {k: str(v) if isinstance(v, BackgroundMode) else v
                  for k, v in ((k, getattr(settings, k)) for k in PER_AVATAR_FIELDS)}
        self.qsettings.setValue(_avatar_key(_AVATAR_SETTINGS, path), json.dumps(values))

    def avatar_choice(self, path: str) -> AvatarChoice:
        """The kind, face box and animated faces last used for the avatar at ``path`` (box in the
        file's pixels; None: found by face detection; faces None: all of a group photo); a human
        avatar with a detected face when nothing usable is saved."""
        values = self._json(_avatar_key(_AVATAR_FRAMING, path))
        if values is None:
            return AvatarChoice(Path(path))
        try:
            if not isinstance(values, dict):
                raise ValueError("not a JSON object")
            box = values.get("box")
            choice = AvatarChoice(Path(path), check_avatar_kind(str(values.get("kind", "human"))),
                                  None if box is None else AvatarBox.parse(str(box)))
        except ValueError as e:
            log.info("ignoring the saved face box of %s: %s", path, e)
            return AvatarChoice(Path(path))
        try:
            return replace(choice, faces=_faces(values.get("faces")))
        except ValueError as e:       # the kind and box stand; all faces are animated
            log.info("ignoring the saved faces of %s: %s", path, e)
            return choice

    def save_avatar_choice(self, choice: AvatarChoice) -> None:
        """Remember ``choice``'s kind, box and animated faces for its file."""
        values = {"kind": choice.kind, "box": None if choice.box is None else str(choice.box),
                  "faces": None if choice.faces is None else list(choice.faces)}
        self.qsettings.setValue(_avatar_key(_AVATAR_FRAMING, str(choice.path)), json.dumps(values))

    # -- camera --------------------------------------------------------------------------------
    def last_camera(self) -> str | None:
        return self._text(_CAMERA)

    def last_camera_size(self) -> tuple[int, int] | None:
        """(width, height) saved with the last camera, or None when absent or unusable."""
        try:
            return parse_size(self._text(_CAMERA_SIZE) or "")
        except ValueError:
            return None

    def remember_camera(self, source: str, width: int, height: int) -> None:
        self.qsettings.setValue(_CAMERA, source)
        self.qsettings.setValue(_CAMERA_SIZE, f"{width}x{height}")

    # -- output --------------------------------------------------------------------------------
    def output_choices(self, base: AnimationSettings) -> AnimationSettings:
        """``base`` with the output choices remembered from the last run (``OUTPUT_CHOICE_FIELDS``,
        all booleans)."""
        def flag(name: str) -> bool:
            value = self.qsettings.value(name)
            return getattr(base, name) if value is None else str(value).lower() in ("true", "1")

        return replace(base, **{name: flag(name) for name in OUTPUT_CHOICE_FIELDS})

    def save_output_choices(self, settings: AnimationSettings) -> None:
        for name in OUTPUT_CHOICE_FIELDS:
            self.qsettings.setValue(name, getattr(settings, name))

    # -- render ------------------------------------------------------------------------------
    def render_choice(self) -> RenderChoice:
        """Where the animation ran last time (this computer when nothing or something unknown is saved)."""
        try:
            target = RenderTarget(self._text(_RENDER_TARGET) or RenderTarget.LOCAL)
        except ValueError:
            target = RenderTarget.LOCAL
        return RenderChoice(target, self._text(_RENDER_URL) or "", self._text(_RENDER_TOKEN) or "")

    def save_render_choice(self, choice: RenderChoice) -> None:
        self.qsettings.setValue(_RENDER_TARGET, str(choice.target))
        self.qsettings.setValue(_RENDER_URL, choice.url)
        self.qsettings.setValue(_RENDER_TOKEN, choice.token)

    def sync(self) -> None:
        """Write everything to disk now."""
        self.qsettings.sync()

    # -- reading -------------------------------------------------------------------------------
    def _text(self, key: str) -> str | None:
        value = self.qsettings.value(key)
        return str(value) if value else None

    def _json(self, key: str) -> Any:
        text = self._text(key)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as e:
            log.info("ignoring saved %s: %s", key, e)
            return None


def _faces(value: Any) -> tuple[int, ...] | None:
    """The saved ``faces`` (a JSON list of face numbers, or null) -> ``AvatarChoice.faces``."""
    if value is None:
        return None
    if not (isinstance(value, list) and value and all(type(n) is int for n in value)):
        raise ValueError(f"expected a list of face numbers or null, got {value!r}")
    return parse_faces(",".join(map(str, value)))


def _avatar_key(group: str, path: str) -> str:
    """One key in ``group`` per image file, whatever path spelling led to it."""
    digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:16]
    return f"{group}/{digest}"
