"""Protocol 3 on the render server, without Ray: an avatar's kind, face box and optional ratios on
the wire; a server that loads each kind's weight set on first use (``WeightSets``), animates each
session's avatar on its kind's backend, switches a session's backend with its avatar's kind, never
batches two sets together, and ends only the asking session when a set cannot be loaded."""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch
from support.fakes import ClosingStub
from support.render_server import (
    TOKEN,
    Frames,
    avatar_message,
    close_code,
    frame_message,
    result,
    running,
    send_avatar,
    session,
)

from app.avatar.framing import AvatarBox
from app.remote import protocol as p
from app.remote.client import RemoteAnimator, RemoteServer
from app.remote.server.batching import render_by_set
from app.remote.server.options import ServerOptions
from app.remote.server.service import RenderService
from app.remote.server.weight_sets import WeightSetError, WeightSets, load_weight_set
from app.settings import AnimationSettings, LiveSettings
from engines.backend import StubBackend

AVATAR = np.full(p.CROP_SHAPE, 120, np.uint8)
DRIVING = np.full(p.DRIVING_SHAPE, 90, np.uint8)


class CountingStub(ClosingStub):
    """The stub, counting the avatars it prepared (``appearance``) and the frames it rendered."""

    def __init__(self) -> None:
        super().__init__()
        self.appearances = 0
        self.renders: list[int] = []         # each render call's batch size

    def appearance(self, image: torch.Tensor) -> torch.Tensor:
        self.appearances += 1
        return super().appearance(image)

    def render(self, feature: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        self.renders.append(feature.shape[0])
        return super().render(feature, x_s, x_d)


class Loader:
    """A ``WeightSets`` load function: a ``CountingStub`` per kind, counting the loads; ``fail``:
    kinds whose load raises, as a missing weights file does."""

    def __init__(self, fail: tuple[str, ...] = (), delay_s: float = 0.0) -> None:
        self.backends: dict[str, CountingStub] = {}
        self.loads: list[str] = []
        self.fail = fail
        self.delay_s = delay_s

    def __call__(self, kind: str) -> CountingStub:
        self.loads.append(kind)
        time.sleep(self.delay_s)
        if kind in self.fail:
            raise FileNotFoundError(f"/models/liveportrait_animals/base_models_v1.1/F.pth not found ({kind})")
        self.backends[kind] = CountingStub()
        return self.backends[kind]


def lazy_service(loader: Loader, preload: tuple[str, ...] = ("human",)) -> RenderService:
    sets = WeightSets(loader)
    for kind in preload:
        sets.get(kind)
    return RenderService(sets, token=TOKEN)


# -- the wire --------------------------------------------------------------------------------------
def test_an_avatar_header_carries_kind_box_and_ratios_and_reads_back():
    header = p.avatar_header("png", "animal", AvatarBox(-10, 20.5, 300), None, None)
    assert header == {"type": "avatar", "format": "png", "kind": "animal", "box": [-10.0, 20.5, 300.0],
                      "eye_ratios": None, "lip_ratio": None}
    assert (p.avatar_kind(header), p.avatar_box(header), p.avatar_ratios(header)) == (
        "animal", AvatarBox(-10, 20.5, 300), (None, None))
    human = p.avatar_header("raw", "human", None, np.array([[0.25, 0.5]]), np.array([[0.125]]))
    eye, lip = p.avatar_ratios(human)
    assert p.avatar_box(human) is None and eye.tolist() == [0.25, 0.5] and lip.tolist() == [0.125]
    with pytest.raises(ValueError, match="both"):
        p.avatar_header("png", "human", None, np.array([0.3, 0.3]), None)


@pytest.mark.parametrize("fields", [
    {"kind": "cat"}, {"kind": None}, {"kind": ["animal"]}, {"kind": "Human"},
    {"box": [0, 0]}, {"box": [0, 0, 8]}, {"box": [0, 0, "100"]}, {"box": [0, 1e300, 100]}, {"box": "0,0,100"},
    {"eye_ratios": None}, {"lip_ratio": None, "eye_ratios": [0.3, 0.3]}, {"eye_ratios": [0.3, 7.0]},
])
def test_a_malformed_avatar_ends_the_session_with_4400(fields: dict):
    service = RenderService(StubBackend(), token=TOKEN)
    with running(service) as url:
        ws = session(url)
        ws.send(avatar_message(AVATAR, **{"kind": "human", **fields}))
        assert close_code(ws) == p.Close.MALFORMED


def test_an_avatar_without_a_kind_is_malformed():
    with running(RenderService(StubBackend(), token=TOKEN)) as url:
        ws = session(url)
        ws.send(p.pack({"type": "avatar", "format": "raw", "eye_ratios": [0.3, 0.3], "lip_ratio": [0.0]},
                       AVATAR.tobytes()))
        assert close_code(ws) == p.Close.MALFORMED


# -- weight sets on first use --------------------------------------------------------------------
def test_an_animal_avatar_with_null_ratios_loads_the_animal_set_and_renders_on_it():
    loader = Loader()
    service = lazy_service(loader)
    with running(service) as url:
        assert service.health()["weight_sets"] == ["human"] and loader.loads == ["human"]
        ws = session(url)
        ready = send_avatar(ws, AVATAR, "animal", box=[10, -5, 400])
        assert ready["kind"] == "animal"
        headers = Frames(ws).send(4)
        assert [h["seq"] for h in headers] == [1, 2, 3, 4] and headers[-1]["rendered"]
        assert service.health()["weight_sets"] == ["human", "animal"] and loader.loads == ["human", "animal"]
        animal, human = loader.backends["animal"], loader.backends["human"]
        assert animal.appearances == 1 and animal.renders and human.appearances == 0 and not human.renders
        ws.close()


def test_a_human_and_an_animal_session_at_once_each_use_their_set():
    loader = Loader()
    service = lazy_service(loader)
    dark, light = np.full(p.CROP_SHAPE, 40, np.uint8), np.full(p.CROP_SHAPE, 210, np.uint8)
    with running(service) as url:
        people, cat = session(url, avatar=dark), session(url, avatar=light, kind="animal")
        receipts: dict[str, str | None] = {"people": None, "cat": None}
        seen: dict[str, list[float]] = {"people": [], "cat": []}
        for seq in range(1, 7):
            for name, ws in (("people", people), ("cat", cat)):       # both in flight at once
                ws.send(frame_message(seq, DRIVING, receipt=receipts[name]))
            for name, ws in (("people", people), ("cat", cat)):
                header, body = result(ws)
                receipts[name] = header["receipt"]
                if header["rendered"]:
                    seen[name].append(float(p.decode_image(body, "raw", p.CROP_SHAPE).mean()))
        assert seen["people"] and seen["cat"]
        assert all(abs(m - 40) < 2 for m in seen["people"]) and all(abs(m - 210) < 2 for m in seen["cat"])
        assert loader.backends["human"].renders and loader.backends["animal"].renders
        assert service.health()["weight_sets"] == ["human", "animal"]
        people.close()
        cat.close()


def test_a_session_switching_from_human_to_animal_gets_an_animator_on_the_animal_set():
    loader = Loader()
    service = lazy_service(loader)
    with running(service) as url:
        ws = session(url, avatar=AVATAR)
        sent = Frames(ws)
        sent.send(3)
        human_renders = len(loader.backends["human"].renders)
        assert human_renders > 0
        assert send_avatar(ws, np.full(p.CROP_SHAPE, 200, np.uint8), "animal")["kind"] == "animal"
        headers = sent.send(4)
        assert headers[-1]["rendered"]
        assert len(loader.backends["human"].renders) == human_renders        # nothing more on the human set
        assert loader.backends["animal"].renders
        # and back: the human set is loaded already
        send_avatar(ws, AVATAR, "human")
        assert sent.send(3)[-1]["rendered"] and len(loader.backends["human"].renders) > human_renders
        assert loader.loads == ["human", "animal"]
        ws.close()


def test_a_set_that_cannot_load_ends_only_the_session_that_asked_with_its_reason():
    loader = Loader(fail=("animal",))
    service = lazy_service(loader)
    with running(service) as url:
        other = session(url, avatar=AVATAR)
        ws = session(url)
        ws.send(avatar_message(AVATAR, "animal"))
        with pytest.raises(Exception) as closed:
            for _ in range(3):
                ws.recv(timeout=5)
        close = closed.value.rcvd
        assert close.code == p.Close.INTERNAL and "cannot animate animal avatars" in close.reason
        assert Frames(other).send(2)[-1]["seq"] == 2                  # the other session goes on
        assert service.health()["weight_sets"] == ["human"]
        other.close()


def test_a_set_is_loaded_once_whoever_asks_at_the_same_time():
    loader = Loader(delay_s=0.2)
    sets = WeightSets(loader)
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(sets.get("animal"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert loader.loads == ["animal"] and len(got) == 4 and all(b is got[0] for b in got)
    assert sets.loaded == ["animal"]


def test_closing_the_sets_closes_each_loaded_backend_once():
    loader = Loader()
    sets = WeightSets(loader, share=lambda kind, backend: StubBackend())     # sessions get a stand-in
    shared = sets.get("human")
    sets.get("animal")
    assert shared is not loader.backends["human"] and sets.backend("human") is loader.backends["human"]
    sets.close()
    assert [b.closes for b in loader.backends.values()] == [1, 1]
    one = ClosingStub()
    WeightSets.of(one).close()                     # one backend for every kind: closed once
    assert one.closes == 1
    with pytest.raises(WeightSetError, match="stopping"):
        sets.get("human")


def test_a_failed_load_says_one_line_and_is_tried_again_next_time():
    loader = Loader(fail=("animal",))
    sets = WeightSets(loader)
    with pytest.raises(WeightSetError) as failed:
        sets.get("animal")
    assert "\n" not in str(failed.value) and "F.pth not found" in str(failed.value)
    loader.fail = ()
    assert sets.get("animal") is loader.backends["animal"] and loader.loads == ["animal", "animal"]


def test_with_weight_sets_in_the_engines_each_kind_asks_for_its_own(monkeypatch: pytest.MonkeyPatch):
    import engines.registry

    asked: list[str] = []

    def make_backend(kind: str = "auto", *, weights=None, device="auto", download=True, weight_set="human"):
        asked.append(weight_set)
        return StubBackend()

    monkeypatch.setattr(engines.registry, "make_backend", make_backend)
    load_weight_set(ServerOptions(backend="torch"), "animal")
    load_weight_set(ServerOptions(backend="torch"), "human")
    assert asked == ["animal", "human"]


# -- batches ---------------------------------------------------------------------------------------
def test_a_batch_never_mixes_weight_sets_and_keeps_the_order():
    backends = {"human": CountingStub(), "animal": CountingStub()}
    requests = [(kind, (torch.full((1, 3, 512, 512), float(i)), torch.zeros(1, 21, 3), torch.zeros(1, 21, 3)))
                for i, kind in enumerate(["human", "animal", "human", "human", "animal"])]
    images = render_by_set(backends.__getitem__, requests)
    assert backends["human"].renders == [3] and backends["animal"].renders == [2]
    assert [float(image.mean()) for image in images] == [0.0, 1.0, 2.0, 3.0, 4.0]


# -- options -------------------------------------------------------------------------------------
def test_preload_takes_a_config_files_list_of_known_kinds():
    assert ServerOptions().preload == ("human",) and ServerOptions().download is False
    assert ServerOptions.from_args({"preload": ["animal", "human", "animal"]}).preload == ("animal", "human")
    assert ServerOptions.from_args({"preload": []}).preload == ()
    for bad in (["cat"], "human", [3]):
        with pytest.raises(ValueError, match="preload"):
            ServerOptions.from_args({"preload": bad})


# -- the client ------------------------------------------------------------------------------------
def test_the_client_uploads_an_animal_without_landmarks_with_null_ratios(avatar_face):
    loader = Loader()
    service = lazy_service(loader)
    # an avatar without landmarks: no ratios (helper "box" makes them Optional on AvatarFace)
    animal = dataclasses.replace(avatar_face, kind="animal", box=AvatarBox(0, 0, 512), eye_ratios=None,
                                 lip_ratio=None)
    with running(service) as url:
        client = RemoteAnimator(RemoteServer.parse(url, TOKEN, frame_format="raw"),
                                LiveSettings(AnimationSettings(reference_frames=2)), animal)
        client.connect()
        try:
            from support.fakes import fake_face

            outs = [client.process(fake_face(), i / 30) for i in range(4)]
        finally:
            client.close()
    assert outs[-1].rendered
    assert loader.loads == ["human", "animal"] and loader.backends["animal"].renders
    assert not loader.backends["human"].renders
