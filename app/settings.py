"""The one parameter object shared by the UI, the command line and the engine.

``AnimationSettings`` is an immutable snapshot; ``LiveSettings`` holds the current one behind a
lock. Stages read ``live.snapshot()`` once per frame, so a change made by the UI, a hotkey or the
CLI takes effect on the next frame and a frame never sees half an update."""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, cast

# the driving options belong to the motion math; the UI and the CLI take them from here
from engines.motion import DRIVING_OPTIONS, DrivingOption

RetargetMode = Literal["off", "follow", "fixed"]
RETARGET_MODES = ("off", "follow", "fixed")
DEFAULT_FRAME_SIZE = (1280, 720)        # camera request and virtual camera, unless chosen


def parse_size(text: str) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` -> (width, height); ``ValueError`` naming the problem otherwise."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if not (16 <= w <= 7680 and 16 <= h <= 4320):
        raise ValueError(f"size out of range: {text}")
    return w, h


BackgroundKind = Literal["keep", "blur", "color", "image"]
_HEX_COLOUR = re.compile(r"#([0-9a-fA-F]{6})")


@dataclass(frozen=True)
class BackgroundMode:
    """What the output shows behind the person: ``keep`` (the avatar's own background), ``blur``
    (it, blurred), ``color`` (one colour, e.g. a chroma key; ``color`` is RGB 0..255) or ``image``
    (the picture at ``path``, scaled to cover). Written as ``keep``, ``blur``, ``color:#RRGGBB`` or
    ``image:PATH`` (``parse`` / ``str``)."""

    kind: BackgroundKind = "keep"
    color: tuple[int, int, int] = (0, 0, 0)
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> BackgroundMode:
        """``keep|blur|color:#RRGGBB|image:PATH`` -> mode; ``ValueError`` naming the problem otherwise."""
        kind, sep, arg = str(text).strip().partition(":")
        kind = kind.lower()
        if kind in ("keep", "blur") and not sep:
            return cls(cast(BackgroundKind, kind))      # `in` does not narrow a str to the Literal
        if kind == "color" and sep:
            match = _HEX_COLOUR.fullmatch(arg.strip())
            if match is None:
                raise ValueError(f"background colour: expected #RRGGBB, got {arg!r}")
            value = int(match.group(1), 16)
            return cls("color", color=((value >> 16) & 255, (value >> 8) & 255, value & 255))
        if kind == "image" and sep and arg:
            return cls("image", path=arg)
        raise ValueError(f"background: expected keep, blur, color:#RRGGBB or image:PATH, got {text!r}")

    def __str__(self) -> str:
        if self.kind == "color":
            return "color:#{:02x}{:02x}{:02x}".format(*self.color)
        if self.kind == "image":
            return f"image:{self.path}"
        return self.kind

    @property
    def keeps(self) -> bool:
        """True when the output is left as it is (no segmentation, no compositing)."""
        return self.kind == "keep"

    def problem(self) -> str | None:
        """Why this value is malformed, or None. Whether an image file exists is not part of it: the
        file can go away while the settings live (``with_existing_image`` checks it where a user
        chooses the mode; the compositor falls back when it cannot read it)."""
        if self.kind not in ("keep", "blur", "color", "image"):
            return f"unknown kind {self.kind!r}"
        if self.kind == "color" and not (len(self.color) == 3 and all(0 <= c <= 255 for c in self.color)):
            return "colour channels must be 0..255"
        return None

    def with_existing_image(self) -> BackgroundMode:
        """This mode, after checking that its image file exists (raises ``ValueError`` if not)."""
        if self.kind == "image" and not Path(self.path).is_file():
            raise ValueError(f"background image not found: {self.path}")
        return self


KEY_GREEN = BackgroundMode.parse("color:#00ff00")      # the usual chroma-key green (OBS's default key colour)


class SmoothingGroup(StrEnum):
    """The motion groups that are smoothed separately, each with its own strength setting."""

    ROTATION = "rotation"
    TRANSLATION = "translation"
    EXPRESSION = "expression"
    EYES = "eyes"
    LIPS = "lips"

    @property
    def field(self) -> str:
        """The ``AnimationSettings`` field holding this group's strength."""
        return f"smooth_{self.value}"


def smoothing_fields(strength: float | Mapping[SmoothingGroup, float]) -> dict[str, float]:
    """Keyword arguments (for ``AnimationSettings`` or ``LiveSettings.update``) that set the
    smoothing strength of every group: one value for all, or one per group."""
    if isinstance(strength, Mapping):
        return {group.field: float(strength[group]) for group in SmoothingGroup}
    return {group.field: float(strength) for group in SmoothingGroup}


@dataclass(frozen=True)
class AnimationSettings:
    # motion transfer
    driving_option: DrivingOption = "pose-friendly"
    stitching: bool = True
    normalize_lip: bool = True
    expression_multiplier: float = 1.0
    rotation_multiplier: tuple[float, float, float] = (1.0, 1.0, 1.0)     # pitch, yaw, roll
    rotation_limit_deg: tuple[float, float, float] = (45.0, 60.0, 45.0)   # |relative angle| cap per axis
    translation_lock: bool = False
    # eye / lip retargeting: off, follow the user's own ratios, or a fixed open-ratio target
    eye_mode: RetargetMode = "off"
    eye_target: float = 0.35
    lip_mode: RetargetMode = "off"
    lip_target: float = 0.0
    # smoothing strength per SmoothingGroup, 0 (off) .. 1 (strongest)
    smooth_rotation: float = 0.5
    smooth_translation: float = 0.5
    smooth_expression: float = 0.3
    smooth_eyes: float = 0.3
    smooth_lips: float = 0.2
    # neutral reference: frames averaged once the face is steady
    reference_frames: int = 5
    # face lost: hold the last frame, then ease back to neutral
    hold_seconds: float = 0.15
    ease_seconds: float = 0.5
    resume_seconds: float = 0.3     # face back: glide from the eased pose to the live one
    # output
    paste_back: bool = True
    mirror: bool = False
    background: BackgroundMode = BackgroundMode()     # also accepts the text form

    def __post_init__(self) -> None:
        if isinstance(self.background, str):
            object.__setattr__(self, "background", BackgroundMode.parse(self.background))

    def validated(self) -> AnimationSettings:
        """Raise ``ValueError`` with the field name on an out-of-range value."""
        def check(name: str, ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"setting {name}: {what}, got {getattr(self, name)!r}")

        check("driving_option", self.driving_option in DRIVING_OPTIONS, f"expected one of {DRIVING_OPTIONS}")
        check("eye_mode", self.eye_mode in RETARGET_MODES, f"expected one of {RETARGET_MODES}")
        check("lip_mode", self.lip_mode in RETARGET_MODES, f"expected one of {RETARGET_MODES}")
        check("eye_target", 0.0 <= self.eye_target <= 0.8, "expected 0..0.8")
        check("lip_target", 0.0 <= self.lip_target <= 0.8, "expected 0..0.8")
        check("expression_multiplier", 0.0 <= self.expression_multiplier <= 3.0, "expected 0..3")
        check("rotation_multiplier", len(self.rotation_multiplier) == 3
              and all(0.0 <= m <= 3.0 for m in self.rotation_multiplier), "expected three values in 0..3")
        check("rotation_limit_deg", len(self.rotation_limit_deg) == 3
              and all(0.0 <= m <= 90.0 for m in self.rotation_limit_deg), "expected three values in 0..90")
        for group in SmoothingGroup:
            check(group.field, 0.0 <= self.smoothing(group) <= 1.0, "expected 0..1")
        check("reference_frames", 1 <= self.reference_frames <= 60, "expected 1..60")
        check("hold_seconds", 0.0 <= self.hold_seconds <= 5.0, "expected 0..5")
        check("ease_seconds", 0.0 <= self.ease_seconds <= 5.0, "expected 0..5")
        check("resume_seconds", 0.0 <= self.resume_seconds <= 5.0, "expected 0..5")
        check("background", isinstance(self.background, BackgroundMode), "expected a BackgroundMode")
        problem = self.background.problem()
        if problem is not None:
            raise ValueError(f"setting background: {problem}")
        return self

    def smoothing(self, group: SmoothingGroup) -> float:
        """The smoothing strength of ``group``, 0..1."""
        return getattr(self, group.field)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


class LiveSettings:
    """Thread-safe holder of the current ``AnimationSettings``."""

    def __init__(self, initial: AnimationSettings | None = None) -> None:
        self._lock = threading.Lock()
        self._value = (initial or AnimationSettings()).validated()
        self._listeners: list[Callable[[AnimationSettings], None]] = []

    def snapshot(self) -> AnimationSettings:
        with self._lock:
            return self._value

    def update(self, **changes: Any) -> AnimationSettings:
        unknown = set(changes) - set(AnimationSettings.field_names())
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for key in ("rotation_multiplier", "rotation_limit_deg"):
            if key in changes:
                changes[key] = tuple(float(v) for v in changes[key])
        with self._lock:
            new = replace(self._value, **changes).validated()
            self._value = new
            listeners = list(self._listeners)
        for listener in listeners:
            listener(new)
        return new

    def subscribe(self, listener: Callable[[AnimationSettings], None]) -> None:
        with self._lock:
            self._listeners.append(listener)
