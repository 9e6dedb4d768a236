"""Avatars of both kinds in the renderers and the window's session: each kind's avatar is prepared
and animated on the backend of its weight set; the window's factory keeps one kind's networks at a
time (the other's closed first); the session swaps the animator, with the loop stopped, when the
kind changes, and prepares the current avatar again when the other kind's networks fail."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest
from support.fakes import ClosingStub

from app.animation.animator import Animator
from app.avatar.framing import AvatarBox, AvatarChoice
from app.avatar.prepared import prepare_avatar
from app.live.capture import CameraRequest
from app.run import headless, renderer
from app.run.live_session import LiveSession
from app.run.renderer import RenderChoice, RendererFactory
from app.settings import AnimationSettings, LiveSettings
from engines.weights import WeightsError
from main import parse_args


class KindStub(ClosingStub):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind


@pytest.fixture()
def made(monkeypatch: pytest.MonkeyPatch) -> list[KindStub]:
    """The backends ``backend_from_args`` makes, one per call, each knowing its weight set."""
    backends: list[KindStub] = []

    def make(args: argparse.Namespace, *, weight_set: str = "human", download_progress=None) -> KindStub:
        backends.append(KindStub(weight_set))
        return backends[-1]
    monkeypatch.setattr(renderer, "backend_from_args", make)
    return backends


def test_the_factory_keeps_one_kinds_networks_and_closes_the_other_first(made: list[KindStub]) -> None:
    factory = RendererFactory(parse_args([]))
    local = factory(RenderChoice())
    assert made == []                                      # nothing is loaded before an avatar needs it
    human = local.backend("human")
    assert local.backend("human") is human and [b.kind for b in made] == ["human"]
    animal = local.backend("animal")
    assert animal.kind == "animal" and human.closes == 1 and animal.closes == 0
    assert factory(RenderChoice()).backend("animal") is animal        # a new local renderer: the same networks
    again = local.backend("human")
    assert again is not human and animal.closes == 1 and [b.kind for b in made] == ["human", "animal", "human"]
    factory.close()
    assert again.closes == 1 and human.closes == 1 and animal.closes == 1


def test_a_local_renderer_prepares_and_animates_each_kind_on_its_backend(made: list[KindStub], avatar_face) -> None:
    factory = RendererFactory(parse_args([]))
    local = factory(RenderChoice())
    cat = local.adopt(replace(avatar_face, kind="animal"))
    animator = local.animator(LiveSettings(), cat)
    assert cat.kind == "animal" and animator.backend is made[-1] and made[-1].kind == "animal"
    assert local.needs_new_animator(cat.face, "human") and not local.needs_new_animator(cat.face, "animal")
    assert not renderer.RemoteRenderer.needs_new_animator(None, cat.face, "human")  # type: ignore[arg-type]
    factory.close()


def test_the_session_swaps_the_animator_when_the_kind_changes(made: list[KindStub], avatar_face, d0: Path) -> None:
    factory = RendererFactory(parse_args([]))
    local = factory(RenderChoice())
    settings = LiveSettings()
    session = LiveSession(local, local.animator(settings, local.adopt(avatar_face)))
    try:
        session.open_camera(CameraRequest(str(d0), loop=True, paced=True))
        human_animator, human_loop = session.animator, session.pipeline
        assert human_loop is not None
        same_kind = session._hand_over_face(replace(avatar_face, num_faces=2))
        assert session.animator is human_animator and session.pipeline is human_loop and len(made) == 1
        assert same_kind.kind == "human"
        cat = session._hand_over_face(replace(avatar_face, kind="animal"))
        assert isinstance(session.animator, Animator) and session.animator is not human_animator
        assert session.animator.backend is made[-1] and made[-1].kind == "animal" and made[0].closes == 1
        assert session.animator.avatar is cat and session.animator.settings is settings
        # the loop was stopped for the switch and runs again, on the same camera
        assert session.pipeline is not None and session.pipeline is not human_loop
    finally:
        session.close()
        factory.close()


def test_when_the_other_kinds_networks_fail_the_current_avatar_is_prepared_again(
        monkeypatch: pytest.MonkeyPatch, avatar_face) -> None:
    made: list[KindStub] = []

    def make(args: argparse.Namespace, *, weight_set: str = "human", download_progress=None) -> KindStub:
        if weight_set == "animal":
            raise WeightsError("liveportrait_animals/base_models_v1.1/warping_module.pth: missing")
        made.append(KindStub(weight_set))
        return made[-1]
    monkeypatch.setattr(renderer, "backend_from_args", make)
    factory = RendererFactory(parse_args([]))
    local = factory(RenderChoice())
    session = LiveSession(local, local.animator(LiveSettings(), local.adopt(avatar_face)))
    first = session.animator
    with pytest.raises(WeightsError, match="warping_module.pth: missing"):
        session._hand_over_face(replace(avatar_face, kind="animal"))
    # the human networks were closed for the animal ones; they are loaded again, with a new animator
    assert [b.closes for b in made] == [1, 0] and session.animator is not first
    assert session.animator.backend is made[-1] and session.animator.avatar.face is avatar_face
    session.close()
    factory.close()


def test_a_headless_run_loads_the_networks_of_the_avatars_kind(monkeypatch: pytest.MonkeyPatch, d0: Path,
                                                               avatar_face) -> None:
    made: list[KindStub] = []

    def make(args: argparse.Namespace, *, weight_set: str = "human") -> KindStub:
        made.append(KindStub(weight_set))
        return made[-1]
    monkeypatch.setattr(headless, "backend_from_args", make)
    prepared: list = []

    def load(choice, backend):        # the avatar file's face as the choice frames it
        prepared.append((choice, backend))
        return prepare_avatar(replace(avatar_face, kind=choice.kind, box=choice.box), backend)
    monkeypatch.setattr(renderer, "load_avatar", load)
    args = parse_args(["--headless", "--camera", str(d0), "--max-frames", "1", "--no-virtual-camera",
                       "--avatar", "cat.png", "--avatar-kind", "animal", "--avatar-box", "10,20,300"])
    assert headless.run_headless(args, AnimationSettings()) == 0
    assert [b.kind for b in made] == ["animal"] and made[0].closes == 1
    assert prepared == [(AvatarChoice(Path("cat.png"), "animal", AvatarBox(10, 20, 300)), made[0])]


def test_a_video_of_the_other_kind_is_prepared_whole_once_the_loop_stops(
        made: list[KindStub], avatar_face, d0: Path, tmp_path: Path) -> None:
    import cv2

    from app.live.capture import read_video_frames

    clip = tmp_path / "cat.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (320, 240))
    for frame in read_video_frames(d0, 3):
        writer.write(cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA))
    writer.release()
    factory = RendererFactory(parse_args([]))
    local = factory(RenderChoice())
    session = LiveSession(local, local.animator(LiveSettings(), local.adopt(avatar_face)))
    try:
        session.open_camera(CameraRequest(str(d0), loop=True, paced=True))
        human_animator, human_loop = session.animator, session.pipeline
        avatar = session._load_avatar(AvatarChoice(clip, "animal", AvatarBox(60, 20, 200)))
        assert avatar.video is not None and avatar.video.num_frames == 3 and avatar.kind == "animal"
        assert session.animator is not human_animator and session.animator.avatar is avatar
        assert session.animator.backend is made[-1] and made[-1].kind == "animal" and made[0].closes == 1
        assert session.pipeline is not None and session.pipeline is not human_loop
    finally:
        session.close()
        factory.close()


def test_faces_flag_makes_the_choice_of_a_group_photos_faces(capsys) -> None:
    from app.run.avatar_options import avatar_choice_from_args

    assert avatar_choice_from_args(parse_args(["--avatar", "g.png", "--faces", "3,1"])).faces == (1, 3)
    assert avatar_choice_from_args(parse_args(["--avatar", "g.png", "--faces", "all"])).faces is None
    assert avatar_choice_from_args(parse_args(["--avatar", "g.png"])) == AvatarChoice(Path("g.png"))
    with pytest.raises(SystemExit):
        parse_args(["--faces", "5"])
    assert "faces: expected numbers from 1 to 4, got 5" in capsys.readouterr().err
