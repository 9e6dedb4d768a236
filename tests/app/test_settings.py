"""The settings' two parts (``MotionSettings``: what the animation needs, ``OutputSettings``: what
finishing the output needs) and the flat ``AnimationSettings`` made of them; the fields' metadata
that the CLI, the protocol and the settings store derive their lists from."""
from __future__ import annotations

from dataclasses import fields

import pytest

from app.settings import (
    AnimationSettings,
    BackgroundMode,
    LiveSettings,
    MotionSettings,
    OutputSettings,
    remembered_fields,
)


def test_animation_settings_is_motion_then_output_field_for_field() -> None:
    assert AnimationSettings.field_names() == MotionSettings.field_names() + OutputSettings.field_names()
    assert not set(MotionSettings.field_names()) & set(OutputSettings.field_names())
    assert set(OutputSettings.field_names()) == {"paste_back", "mirror", "background", "animal_paste_back"}
    assert isinstance(AnimationSettings(), MotionSettings) and isinstance(AnimationSettings(), OutputSettings)


def test_flat_settings_split_into_their_parts_and_back() -> None:
    s = AnimationSettings(eye_mode="fixed", eye_target=0.5, rotation_multiplier=(1.0, 0.5, 2.0), paste_back=False,
                          mirror=True, background="blur", smooth_lips=0.7)
    assert s.background == BackgroundMode("blur")                     # the text form still parses
    assert type(s.motion) is MotionSettings and type(s.output) is OutputSettings
    assert (s.motion.eye_mode, s.motion.rotation_multiplier, s.motion.smooth_lips) == ("fixed", (1.0, 0.5, 2.0), 0.7)
    assert s.output == OutputSettings(paste_back=False, mirror=True, background=BackgroundMode("blur"))
    assert AnimationSettings.from_parts(s.motion, s.output) == s
    assert AnimationSettings.from_parts(MotionSettings(), OutputSettings()) == AnimationSettings()


def test_each_part_validates_its_own_fields() -> None:
    assert MotionSettings(eye_target=0.8).validated() == MotionSettings(eye_target=0.8)
    with pytest.raises(ValueError, match="setting eye_target: expected 0..0.8"):
        MotionSettings(eye_target=0.9).validated()
    with pytest.raises(ValueError, match="setting background: colour channels"):
        OutputSettings(background=BackgroundMode("color", color=(0, 300, 0))).validated()
    for bad in ({"eye_target": 0.9}, {"background": BackgroundMode("color", color=(0, 300, 0))},
                {"reference_frames": 0}, {"rotation_multiplier": (1.0, 1.0)}):
        with pytest.raises(ValueError, match=f"setting {next(iter(bad))}"):
            AnimationSettings(**bad).validated()
        with pytest.raises(ValueError):
            LiveSettings().update(**bad)


def test_every_field_has_help_and_a_known_memory() -> None:
    for f in fields(AnimationSettings):
        assert f.metadata.get("help"), f.name
        assert f.metadata.get("remember") in ("avatar", "app", None), f.name
    # remembered across avatars: the output's on/off choices, read back as booleans
    assert remembered_fields("app") == ("paste_back", "mirror")
    assert all(AnimationSettings.field_types()[name] is bool for name in remembered_fields("app"))
    assert "background" in remembered_fields("avatar") and "eye_mode" in remembered_fields("avatar")
    assert remembered_fields("avatar", OutputSettings) == ("background", "animal_paste_back")


def test_live_settings_take_lists_for_tuple_fields() -> None:
    s = LiveSettings().update(rotation_multiplier=[1, 0.5, 2], rotation_limit_deg=[10, 20, 30])
    assert s.rotation_multiplier == (1.0, 0.5, 2.0) and s.rotation_limit_deg == (10.0, 20.0, 30.0)


def test_the_animal_settings_default_to_the_official_example_and_travel() -> None:
    from app.remote.protocol import settings_from_wire, settings_to_wire

    s = MotionSettings()
    assert (s.motion_strength, s.animal_stitching) == (1.75, False)       # the official animal example
    assert {"motion_strength", "animal_stitching"} <= set(remembered_fields("avatar"))
    for bad in (-0.01, 3.01):
        with pytest.raises(ValueError, match="setting motion_strength: expected 0..3"):
            AnimationSettings(motion_strength=bad).validated()
    changed = AnimationSettings(motion_strength=2.5, animal_stitching=True)
    wire = settings_to_wire(changed)
    assert (wire["motion_strength"], wire["animal_stitching"]) == (2.5, True)
    assert LiveSettings().update(**settings_from_wire(wire)) == changed
    with pytest.raises(ValueError):
        settings_from_wire({**wire, "animal_stitching": "yes"})


def test_an_animal_is_pasted_back_only_when_asked() -> None:
    s = AnimationSettings()
    assert s.for_kind("human") is s                                   # unchanged: the same object
    assert not s.for_kind("animal").paste_back and s.for_kind("animal").mirror == s.mirror
    asked = AnimationSettings(animal_paste_back=True)
    assert asked.for_kind("animal") is asked
    crop_only = AnimationSettings(paste_back=False, animal_paste_back=True)
    assert crop_only.for_kind("animal") is crop_only and not crop_only.paste_back
