"""The window's start-up worker: which avatar the window starts with when the chosen one cannot be
used (no face: the box editor is offered; the animal weight set missing: our default avatar)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from app.avatar.face import NoFaceError
from app.avatar.framing import AvatarBox, AvatarChoice
from app.avatar.loading import DEFAULT_AVATAR
from app.settings import LiveSettings
from app.ui.app import Starter
from engines.weights import WeightsError


class FailingRenderer:
    """Fails the load of ``fails`` (a choice) with ``error``; loads any other choice."""

    def __init__(self, fails: AvatarChoice, error: Exception) -> None:
        self.fails, self.error, self.loads = fails, error, []

    def load_avatar(self, choice: AvatarChoice):
        self.loads.append(choice)
        if choice == self.fails:
            raise self.error
        return SimpleNamespace(choice=choice)

    def animator(self, settings, avatar):
        return SimpleNamespace(avatar=avatar)


def start(qtbot, renderer: FailingRenderer, choice: AvatarChoice) -> tuple[list, list]:
    starter = Starter()
    ready: list = []
    failed: list[str] = []
    starter.ready.connect(lambda *args: ready.append(args))
    starter.failed.connect(failed.append)
    starter.start(lambda: renderer, LiveSettings(), choice)
    qtbot.waitUntil(lambda: bool(ready or failed), timeout=5000)
    return ready, failed


def test_missing_animal_weights_start_with_the_default_avatar(qtbot) -> None:
    cat = AvatarChoice(Path("cat.jpg"), "animal", AvatarBox(0, 0, 100))
    renderer = FailingRenderer(cat, WeightsError("the animal weights are not in weights/"))
    ready, failed = start(qtbot, renderer, cat)
    assert failed == []
    _, animator, loaded, wants_box = ready[0]
    assert loaded == AvatarChoice(DEFAULT_AVATAR) and wants_box is None
    assert animator.avatar.choice == AvatarChoice(DEFAULT_AVATAR)


def test_missing_human_weights_fail_the_start(qtbot) -> None:
    face = AvatarChoice(Path("me.jpg"))
    renderer = FailingRenderer(face, WeightsError("no weights"))
    ready, failed = start(qtbot, renderer, face)
    assert ready == [] and failed == ["no weights"]
    assert renderer.loads == [face]                     # no second try on the same weights


@pytest.mark.parametrize("box", [None, AvatarBox(1, 2, 50)])
def test_an_avatar_without_a_face_offers_the_box_editor_unless_boxed(qtbot, box) -> None:
    cartoon = AvatarChoice(Path("cartoon.png"), "human", box)
    ready, _ = start(qtbot, FailingRenderer(cartoon, NoFaceError("cartoon.png: no face found")), cartoon)
    _, _, loaded, wants_box = ready[0]
    assert loaded == AvatarChoice(DEFAULT_AVATAR)
    assert wants_box == (cartoon if box is None else None)
