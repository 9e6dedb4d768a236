"""The one parameter object shared by the UI, the command line and the engine.

``AnimationSettings`` is an immutable snapshot made of two parts: ``MotionSettings`` (what the
animation needs; all a render server receives) and ``OutputSettings`` (what finishing the output
needs). Each field declares in its metadata (``setting``) its help text, its command-line flag and
whether the window remembers it, so the CLI, the protocol and the settings store derive their lists
from the fields instead of keeping their own. ``LiveSettings`` holds the current snapshot behind a
lock. Stages read ``live.snapshot()`` once per frame, so a change made by the UI, a hotkey or the
CLI takes effect on the next frame and a frame never sees half an update."""
from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Self, cast, get_args, get_origin, get_type_hints

# the driving options belong to the motion math; the UI and the CLI take them from here
from engines.motion import DRIVING_OPTIONS, DrivingOption

RetargetMode = Literal["off", "follow", "fixed"]
RETARGET_MODES: tuple[RetargetMode, ...] = get_args(RetargetMode)
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
        """The ``MotionSettings`` field holding this group's strength."""
        return f"smooth_{self.value}"


def smoothing_fields(strength: float | Mapping[SmoothingGroup, float]) -> dict[str, float]:
    """Keyword arguments (for ``AnimationSettings`` or ``LiveSettings.update``) that set the
    smoothing strength of every group: one value for all, or one per group."""
    if isinstance(strength, Mapping):
        return {group.field: float(strength[group]) for group in SmoothingGroup}
    return {group.field: float(strength) for group in SmoothingGroup}


SettingMemory = Literal["avatar", "app"]


def setting(default: Any, *, help: str, flag: str | None = None, metavar: str | None = None,
            remember: SettingMemory | None = None) -> Any:
    """A settings field with what the rest of the app derives from it, in its metadata:

    ``help``: what it does (for a field with a flag, that flag's help text); ``flag``: its
    command-line spelling, if it has one (a boolean's flag switches it away from its default, e.g.
    ``--no-stitching``; a ``Literal`` field offers its values as choices); ``metavar``: the flag's
    value placeholder; ``remember``: what the window keeps between runs, ``"avatar"`` per avatar
    image, ``"app"`` across avatars, None not at all."""
    return field(default=default, metadata={"help": help, "flag": flag, "metavar": metavar, "remember": remember})


class _SettingsPart:
    """What every settings dataclass can say about its fields."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(_dataclass(cls)))

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """Each field's type, resolved (``bool``, ``float``, ``Literal[...]``, ``tuple[float, ...]``, ...)."""
        return _resolved_types(_dataclass(cls))


def _dataclass(cls: type[_SettingsPart]) -> Any:
    """``cls`` for ``dataclasses.fields`` and the type cache: every part is a frozen dataclass, which
    the type checker cannot see through the mixin."""
    return cls


@functools.cache
def _resolved_types(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


@dataclass(frozen=True)
class MotionSettings(_SettingsPart):
    """What the animation needs: motion transfer, retargeting, smoothing, the neutral reference and
    the face-lost behaviour. A render server receives exactly these (``protocol.settings_to_wire``)."""

    # motion transfer
    driving_option: DrivingOption = setting(
        "pose-friendly", flag="--driving-option",
        help="the official pipeline's driving option: relative motion that favours the pose or the expression")
    stitching: bool = setting(True, flag="--no-stitching", remember="avatar", help="turn stitching off")
    normalize_lip: bool = setting(True, help="close the avatar's open lips before animating them (official)")
    expression_multiplier: float = setting(1.0, flag="--expression-multiplier", remember="avatar",
                                           help="scale of the expression motion (0-3)")
    rotation_multiplier: tuple[float, float, float] = setting(
        (1.0, 1.0, 1.0), remember="avatar", help="head rotation scale per axis: pitch, yaw, roll (0-3)")
    rotation_limit_deg: tuple[float, float, float] = setting(
        (45.0, 60.0, 45.0), remember="avatar", help="cap on the relative head angle per axis, degrees (0-90)")
    translation_lock: bool = setting(False, flag="--translation-lock", remember="avatar",
                                     help="keep the avatar's position")
    # animal avatars (the official animal pipeline's options)
    motion_strength: float = setting(
        1.75, flag="--motion-strength", remember="avatar",
        help="animal avatars: how strongly the motion drives them (the official driving_multiplier, 0-3)")
    animal_stitching: bool = setting(
        False, flag="--animal-stitching", remember="avatar",
        help="animal avatars: stitching, off by default as in the official animal example")
    # eye / lip retargeting: off, follow the user's own ratios, or a fixed open-ratio target
    eye_mode: RetargetMode = setting("off", flag="--eye-mode", remember="avatar", help="eye retargeting")
    eye_target: float = setting(0.35, flag="--eye-target", remember="avatar",
                                help="eye-open ratio for --eye-mode fixed (0-0.8)")
    lip_mode: RetargetMode = setting("off", flag="--lip-mode", remember="avatar", help="lip retargeting")
    lip_target: float = setting(0.0, flag="--lip-target", remember="avatar",
                                help="lip-open ratio for --lip-mode fixed (0-0.8)")
    # smoothing strength per SmoothingGroup, 0 (off) .. 1 (strongest)
    smooth_rotation: float = setting(0.5, remember="avatar", help="smoothing of the head rotation (0-1)")
    smooth_translation: float = setting(0.5, remember="avatar", help="smoothing of the head position (0-1)")
    smooth_expression: float = setting(0.3, remember="avatar", help="smoothing of the expression (0-1)")
    smooth_eyes: float = setting(0.3, remember="avatar", help="smoothing of the eye openness (0-1)")
    smooth_lips: float = setting(0.2, remember="avatar", help="smoothing of the lip openness (0-1)")
    # neutral reference
    reference_frames: int = setting(5, help="frames averaged into the neutral reference once the face is steady")
    # face lost: hold the last frame, then ease back to neutral
    hold_seconds: float = setting(0.15, help="face lost: hold the last frame this long (0-5 s)")
    ease_seconds: float = setting(0.5, help="face lost: then ease back to neutral over this long (0-5 s)")
    resume_seconds: float = setting(0.3, help="face back: glide from the eased pose to the live one (0-5 s)")

    def validated(self) -> Self:
        """Raise ``ValueError`` with the field name on an out-of-range value."""
        check = functools.partial(_check, self)
        check("driving_option", self.driving_option in DRIVING_OPTIONS, f"expected one of {DRIVING_OPTIONS}")
        check("eye_mode", self.eye_mode in RETARGET_MODES, f"expected one of {RETARGET_MODES}")
        check("lip_mode", self.lip_mode in RETARGET_MODES, f"expected one of {RETARGET_MODES}")
        check("eye_target", 0.0 <= self.eye_target <= 0.8, "expected 0..0.8")
        check("lip_target", 0.0 <= self.lip_target <= 0.8, "expected 0..0.8")
        check("expression_multiplier", 0.0 <= self.expression_multiplier <= 3.0, "expected 0..3")
        check("motion_strength", 0.0 <= self.motion_strength <= 3.0, "expected 0..3")
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
        return self

    def smoothing(self, group: SmoothingGroup) -> float:
        """The smoothing strength of ``group``, 0..1."""
        return getattr(self, group.field)


@dataclass(frozen=True)
class OutputSettings(_SettingsPart):
    """What finishing the output needs: paste-back into the avatar image (for animal avatars
    only with ``animal_paste_back``: ``for_kind``), mirroring, the background."""

    paste_back: bool = setting(True, flag="--crop-only", remember="app",
                               help="output the animated face crop, not the full image")
    mirror: bool = setting(False, flag="--mirror", remember="app", help="mirror the output")
    background: BackgroundMode = setting(       # also accepts the text form
        BackgroundMode(), flag="--background", metavar="MODE", remember="avatar",
        help="behind the person: keep (default), blur, color:#RRGGBB (e.g. color:#00ff00, a chroma key for OBS) "
             "or image:PATH")
    # the official animal pipeline outputs the crop: without stitching, the edges of an animal's
    # re-rendered crop need not meet the picture around them
    animal_paste_back: bool = setting(
        False, flag="--animal-paste-back", remember="avatar",
        help="animal avatars: paste the animated crop back into the full picture (default: the crop, "
             "as the official animal pipeline)")

    def __post_init__(self) -> None:
        if isinstance(self.background, str):
            object.__setattr__(self, "background", BackgroundMode.parse(self.background))

    def for_kind(self, kind: str) -> Self:
        """These settings as they apply to an avatar of ``kind`` ("human" or "animal"): an animal is
        pasted back only with ``animal_paste_back``. ``self`` itself when nothing changes (callers
        key caches on its identity)."""
        if kind == "animal" and self.paste_back and not self.animal_paste_back:
            return replace(self, paste_back=False)
        return self

    def validated(self) -> Self:
        """Raise ``ValueError`` with the field name on a malformed value."""
        _check(self, "background", isinstance(self.background, BackgroundMode), "expected a BackgroundMode")
        problem = self.background.problem()
        if problem is not None:
            raise ValueError(f"setting background: {problem}")
        return self


# The bases are listed output first so that the fields come motion first (a dataclass collects
# them from the last base on), in the order they always had.
@dataclass(frozen=True)
class AnimationSettings(OutputSettings, MotionSettings):
    """The one flat snapshot the UI, the CLI and the engine share: every ``MotionSettings`` and
    ``OutputSettings`` field, built flat (``AnimationSettings(eye_mode=..., mirror=...)``) or from
    its parts (``from_parts``), and split back into them (``motion``, ``output``)."""

    def validated(self) -> Self:
        """Raise ``ValueError`` with the field name on an out-of-range value (motion first)."""
        MotionSettings.validated(self)
        OutputSettings.validated(self)
        return self

    @property
    def motion(self) -> MotionSettings:
        return MotionSettings(**_values(self, MotionSettings))

    @property
    def output(self) -> OutputSettings:
        return OutputSettings(**_values(self, OutputSettings))

    @classmethod
    def from_parts(cls, motion: MotionSettings, output: OutputSettings) -> AnimationSettings:
        return cls(**_values(motion, MotionSettings), **_values(output, OutputSettings))


def _values(settings: object, part: type[_SettingsPart]) -> dict[str, Any]:
    """``part``'s fields of ``settings``, by name (not ``asdict``: that would take the background apart)."""
    return {name: getattr(settings, name) for name in part.field_names()}


def _check(settings: object, name: str, ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"setting {name}: {what}, got {getattr(settings, name)!r}")


def remembered_fields(memory: SettingMemory, part: type[_SettingsPart] = AnimationSettings) -> tuple[str, ...]:
    """The fields of ``part`` that the window remembers per avatar (``"avatar"``) or across avatars
    (``"app"``), in field order (from the fields' metadata)."""
    return tuple(f.name for f in fields(_dataclass(part)) if f.metadata.get("remember") == memory)


# fields whose values are tuples: a list given for one (from JSON) is turned into a tuple
_TUPLE_FIELDS = tuple(name for name, kind in AnimationSettings.field_types().items() if get_origin(kind) is tuple)


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
        for key in _TUPLE_FIELDS:
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
