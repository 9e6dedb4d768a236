"""The window's remembered choices (``SettingsStore`` over an .ini ``QSettings``): round trips, one
key per avatar file, and unreadable values read as absent."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from PySide6 import QtCore

from app.avatar.framing import AvatarBox, AvatarChoice
from app.settings import AnimationSettings, LiveSettings, SmoothingGroup
from app.ui.settings_store import (
    ANIMATION_FIELDS,
    OUTPUT_CHOICE_FIELDS,
    PER_AVATAR_FIELDS,
    SETTINGS_PATH_ENV,
    SettingsStore,
)


def ini_store(path: Path) -> SettingsStore:
    return SettingsStore(QtCore.QSettings(str(path), QtCore.QSettings.Format.IniFormat))


def test_remembered_fields_come_from_the_settings_metadata() -> None:
    assert set(PER_AVATAR_FIELDS) <= set(AnimationSettings.field_names())
    assert not {"paste_back", "mirror"} & set(PER_AVATAR_FIELDS)      # output choices are not per avatar
    assert PER_AVATAR_FIELDS == tuple(f.name for f in fields(AnimationSettings) if f.metadata["remember"] == "avatar")
    assert OUTPUT_CHOICE_FIELDS == ("paste_back", "mirror")
    # the animation panel's controls, which "Reset all" resets: every per-avatar field but the output
    # panel's (the background, an animal's paste-back)
    assert set(ANIMATION_FIELDS) == set(PER_AVATAR_FIELDS) - {"background", "animal_paste_back"}
    assert set(ANIMATION_FIELDS) == {"eye_mode", "eye_target", "lip_mode", "lip_target", "expression_multiplier",
                                     "rotation_multiplier", "rotation_limit_deg", "translation_lock", "stitching",
                                     "motion_strength", "animal_stitching",
                                     *(group.field for group in SmoothingGroup)}


def test_avatar_settings_round_trip_per_file(tmp_path: Path) -> None:
    store = ini_store(tmp_path / "s.ini")
    chosen = AnimationSettings(eye_mode="fixed", eye_target=0.6, rotation_multiplier=(0.5, 1.25, 0.0),
                               smooth_lips=0.1, stitching=False, mirror=True)
    avatar = tmp_path / "a.png"
    store.save_avatar_settings(str(avatar), chosen)
    store.sync()
    again = ini_store(tmp_path / "s.ini")
    values = again.avatar_settings(str(tmp_path / "sub" / ".." / "a.png"))     # same file, other spelling
    assert set(values) == set(PER_AVATAR_FIELDS)
    restored = LiveSettings().update(**values)
    assert all(getattr(restored, k) == getattr(chosen, k) for k in PER_AVATAR_FIELDS)
    assert again.avatar_settings(str(tmp_path / "b.png")) == {}


def test_unreadable_values_read_as_absent(tmp_path: Path) -> None:
    store = ini_store(tmp_path / "s.ini")
    store.save_avatar_settings(str(tmp_path / "a.png"), AnimationSettings())
    key = next(k for k in store.qsettings.allKeys() if k.startswith("avatar_settings/"))
    store.qsettings.setValue(key, '{"expression_multiplier": 1.5, "mirror": true, "no_such_field": 1}')
    assert store.avatar_settings(str(tmp_path / "a.png")) == {"expression_multiplier": 1.5}
    for garbage in ("{not json", "[1, 2]"):
        store.qsettings.setValue(key, garbage)
        assert store.avatar_settings(str(tmp_path / "a.png")) == {}
    store.qsettings.setValue("recent_avatars", "{not json")
    store.qsettings.setValue("camera_size", "huge")
    assert store.recent_avatars() == [] and store.last_camera_size() is None
    assert store.last_avatar() is None and store.last_camera() is None


def test_camera_avatar_and_output_choices_round_trip(tmp_path: Path) -> None:
    store = ini_store(tmp_path / "s.ini")
    base = AnimationSettings(expression_multiplier=1.2)
    assert store.output_choices(base) == base                   # nothing saved yet: the base as it is
    store.remember_camera("video.mp4", 640, 480)
    store.remember_avatar("/x/b.png", ["/x/b.png", "/x/a.png"])
    store.save_output_choices(AnimationSettings(paste_back=False, mirror=True))
    store.sync()
    again = ini_store(tmp_path / "s.ini")
    assert again.last_camera() == "video.mp4" and again.last_camera_size() == (640, 480)
    assert again.last_avatar() == "/x/b.png" and again.recent_avatars() == ["/x/b.png", "/x/a.png"]
    choices = again.output_choices(base)
    assert (choices.paste_back, choices.mirror, choices.expression_multiplier) == (False, True, 1.2)


def test_open_uses_the_path_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTINGS_PATH_ENV, str(tmp_path / "env.ini"))
    store = SettingsStore.open()
    store.remember_camera("3", 1920, 1080)
    store.sync()
    assert ini_store(tmp_path / "env.ini").last_camera_size() == (1920, 1080)


def test_avatar_kind_and_box_round_trip_per_file(tmp_path: Path) -> None:
    store = ini_store(tmp_path / "s.ini")
    avatar = tmp_path / "cat.png"
    assert store.avatar_choice(str(avatar)) == AvatarChoice(avatar)          # nothing saved: detect, human
    store.save_avatar_choice(AvatarChoice(avatar, "animal", AvatarBox(-12.5, 40, 300)))
    store.save_avatar_choice(AvatarChoice(tmp_path / "me.png", "human", None))
    store.sync()
    again = ini_store(tmp_path / "s.ini")
    assert again.avatar_choice(str(tmp_path / "x" / ".." / "cat.png")).box == AvatarBox(-12.5, 40, 300)
    assert again.avatar_choice(str(avatar)).kind == "animal"
    assert again.avatar_choice(str(tmp_path / "me.png")) == AvatarChoice(tmp_path / "me.png")


@pytest.mark.parametrize("garbage", ['{"kind": "robot", "box": null}', '{"kind": "human", "box": "1,2"}',
                                     '{"kind": "human", "box": "0,0,3"}', "[1]", "{not json"])
def test_unreadable_kind_or_box_reads_as_absent(tmp_path: Path, garbage: str) -> None:
    store = ini_store(tmp_path / "s.ini")
    avatar = tmp_path / "cat.png"
    store.save_avatar_choice(AvatarChoice(avatar, "animal", AvatarBox(0, 0, 100)))
    key = next(k for k in store.qsettings.allKeys() if k.startswith("avatar_framing/"))
    store.qsettings.setValue(key, garbage)
    assert store.avatar_choice(str(avatar)) == AvatarChoice(avatar)


def test_animated_faces_round_trip_per_file(tmp_path: Path) -> None:
    store = ini_store(tmp_path / "s.ini")
    group, solo = tmp_path / "group.png", tmp_path / "solo.png"
    store.save_avatar_choice(AvatarChoice(group, "human", AvatarBox(10, 20, 200), (1, 3)))
    store.save_avatar_choice(AvatarChoice(solo))
    store.sync()
    again = ini_store(tmp_path / "s.ini")
    assert again.avatar_choice(str(group)) == AvatarChoice(group, "human", AvatarBox(10, 20, 200), (1, 3))
    assert again.avatar_choice(str(solo)).faces is None                 # all faces
    key = next(k for k in again.qsettings.allKeys()
               if k.startswith("avatar_framing/") and '"faces": [1, 3]' in str(again.qsettings.value(k)))
    assert key


@pytest.mark.parametrize("faces", ['[]', '[0]', '[5]', '["1"]', '[true]', '"1,2"', '3'])
def test_unreadable_faces_are_dropped_alone(tmp_path: Path, faces: str) -> None:
    store = ini_store(tmp_path / "s.ini")
    group = tmp_path / "group.png"
    store.save_avatar_choice(AvatarChoice(group, "human", AvatarBox(0, 0, 100), (2,)))
    key = next(k for k in store.qsettings.allKeys() if k.startswith("avatar_framing/"))
    store.qsettings.setValue(key, f'{{"kind": "human", "box": "0,0,100", "faces": {faces}}}')
    assert store.avatar_choice(str(group)) == AvatarChoice(group, "human", AvatarBox(0, 0, 100), None)
