"""main.py's animation flags, made from the settings fields' metadata: the same flags, choices and
defaults as always, and each one sets the same ``AnimationSettings`` as before."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import main
from app.cli.options import add_settings_arguments, settings_from_args
from app.settings import AnimationSettings, BackgroundMode

# main.py's animation flags and what each chose when they were written out by hand
FLAGS = ("--driving-option", "--no-stitching", "--eye-mode", "--eye-target", "--lip-mode", "--lip-target",
         "--expression-multiplier", "--translation-lock", "--crop-only", "--mirror", "--background",
         "--motion-strength", "--animal-stitching", "--animal-paste-back")
CASES = [
    ([], AnimationSettings()),
    (["--no-stitching"], AnimationSettings(stitching=False)),
    (["--translation-lock"], AnimationSettings(translation_lock=True)),
    (["--crop-only"], AnimationSettings(paste_back=False)),
    (["--mirror"], AnimationSettings(mirror=True)),
    (["--driving-option", "expression-friendly"], AnimationSettings(driving_option="expression-friendly")),
    (["--eye-mode", "fixed", "--eye-target", "0.5", "--lip-mode", "follow", "--lip-target", "0.25"],
     AnimationSettings(eye_mode="fixed", eye_target=0.5, lip_mode="follow", lip_target=0.25)),
    (["--expression-multiplier", "1.5"], AnimationSettings(expression_multiplier=1.5)),
    (["--background", "color:#00ff00"], AnimationSettings(background=BackgroundMode("color", color=(0, 255, 0)))),
    (["--background", "blur", "--mirror", "--crop-only", "--no-stitching"],
     AnimationSettings(background="blur", mirror=True, paste_back=False, stitching=False)),
    (["--motion-strength", "2.5"], AnimationSettings(motion_strength=2.5)),
    (["--animal-stitching"], AnimationSettings(animal_stitching=True)),
    (["--animal-paste-back"], AnimationSettings(animal_paste_back=True)),
]


def animation_actions() -> dict[str, argparse.Action]:
    ap = argparse.ArgumentParser()
    add_settings_arguments(ap)
    return {a.option_strings[0]: a for a in ap._actions if a.option_strings and a.dest != "help"}


def test_the_flags_are_main_pys_with_their_choices_and_defaults() -> None:
    actions = animation_actions()
    assert set(actions) == set(FLAGS)
    assert actions["--driving-option"].choices == ("pose-friendly", "expression-friendly")
    assert actions["--eye-mode"].choices == actions["--lip-mode"].choices == ("off", "follow", "fixed")
    d = AnimationSettings()
    assert [actions[f].default for f in ("--driving-option", "--eye-mode", "--eye-target", "--lip-mode",
                                         "--lip-target", "--expression-multiplier", "--background")] == \
        [d.driving_option, d.eye_mode, d.eye_target, d.lip_mode, d.lip_target, d.expression_multiplier, d.background]
    assert actions["--motion-strength"].default == d.motion_strength == 1.75
    assert actions["--animal-stitching"].default is d.animal_stitching is False
    for switch in ("--no-stitching", "--translation-lock", "--crop-only", "--mirror", "--animal-stitching"):
        assert actions[switch].nargs == 0, switch                      # a switch, taking no value
    assert all(a.help for a in actions.values())


@pytest.mark.parametrize("argv, expected", CASES)
def test_each_flag_sets_the_same_settings_as_before(argv: list[str], expected: AnimationSettings) -> None:
    assert main.settings_from_args(main.parse_args(argv)) == expected
    assert settings_from_args(main.parse_args(argv)) == expected


def test_bad_values_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--eye-mode", "sometimes"], ["--driving-option", "both"], ["--eye-target", "x"],
                 ["--background", f"image:{tmp_path / 'missing.png'}"], ["--background", "plaid"]):
        with pytest.raises(SystemExit):
            main.parse_args(argv)
    assert "background image not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="setting eye_target"):
        main.settings_from_args(main.parse_args(["--eye-target", "0.9"]))


def test_the_avatar_flags_make_the_avatar_choice() -> None:
    from app.avatar.framing import AvatarBox, AvatarChoice
    from app.avatar.loading import DEFAULT_AVATAR
    from app.run.avatar_options import avatar_choice_from_args

    args = main.parse_args([])
    assert (args.avatar_box, args.avatar_kind) == (None, "human")
    assert avatar_choice_from_args(args) == AvatarChoice(DEFAULT_AVATAR, "human", None)
    args = main.parse_args(["--avatar", "cat.png", "--avatar-kind", "animal", "--avatar-box=-20,-10.5,300"])
    assert args.avatar_box == AvatarBox(-20, -10.5, 300)
    assert avatar_choice_from_args(args) == AvatarChoice(Path("cat.png"), "animal", AvatarBox(-20, -10.5, 300))


@pytest.mark.parametrize("argv, message", [
    (["--avatar-box", "1,2"], "argument --avatar-box: avatar box: expected X,Y,SIZE"),
    (["--avatar-box", "0,0,8"], "avatar box: expected a side of at least 16 pixels, got 8"),
    (["--avatar-box", "0,0,nan"], "avatar box: expected finite numbers"),
    (["--avatar-kind", "dog"], "argument --avatar-kind: invalid choice: 'dog'"),
    (["--motion-strength", "x"], "argument --motion-strength: invalid float value"),
])
def test_bad_avatar_flags_are_one_error_line_and_exit_2(argv: list[str], message: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main.main(["--headless", *argv])
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], errors


@pytest.mark.parametrize("value", ["-0.1", "3.5"])
def test_a_motion_strength_out_of_range_is_one_error_line_and_exit_2(value: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["--headless", "--backend", "stub", "--motion-strength", value]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: setting motion_strength: expected 0..3, got {float(value)!r}"]
