"""Whoever makes a backend closes it where its life ends: the headless run at its end (also after
a failure), the window's renderer factory at the window's shutdown (not at a renderer switch: it
keeps the backend for switching back) and a render server replica at its shutdown."""
from __future__ import annotations

from pathlib import Path

import pytest
from support.fakes import ClosingStub

from app.live.capture import CameraError
from app.run import headless
from app.settings import AnimationSettings
from main import parse_args


def run_headless(monkeypatch: pytest.MonkeyPatch, backend: ClosingStub, camera: str) -> int:
    """``run_headless`` on ``camera``, with ``backend`` as the backend it makes."""
    monkeypatch.setattr(headless, "backend_from_args", lambda args, weight_set: backend)
    args = parse_args(["--headless", "--backend", "stub", "--camera", camera, "--max-frames", "1",
                       "--no-virtual-camera"])
    return headless.run_headless(args, AnimationSettings())


def test_a_headless_run_closes_its_backend_at_its_end(monkeypatch: pytest.MonkeyPatch, d0: Path) -> None:
    backend = ClosingStub()
    assert run_headless(monkeypatch, backend, str(d0)) == 0
    assert backend.closes == 1


def test_a_failed_headless_run_closes_its_backend_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    backend = ClosingStub()
    with pytest.raises(CameraError):
        run_headless(monkeypatch, backend, str(tmp_path / "missing.mp4"))
    assert backend.closes == 1


def test_the_window_closes_its_backend_at_shutdown_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.run import renderer
    from app.run.renderer import RenderChoice

    made: list[ClosingStub] = []
    monkeypatch.setattr(renderer, "backend_from_args", lambda args, **options: made.append(ClosingStub()) or made[-1])
    factory = renderer.RendererFactory(parse_args([]))
    first, again = factory(RenderChoice()), factory(RenderChoice())      # a switch back to this computer
    assert first.backend("human") is again.backend("human") and len(made) == 1 and made[0].closes == 0
    factory.close()
    factory.close()
    assert made[0].closes == 1


def test_a_server_replica_closes_its_backend_at_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray.serve", reason="the render server needs requirements-server.txt")
    import engines.registry
    from app.remote.server import deployment

    backend = ClosingStub()
    monkeypatch.setattr(engines.registry, "make_backend", lambda *args, **options: backend)
    # the class as written: serve.ingress subclasses it with an asynchronous constructor
    replica = deployment.RenderServer.func_or_class.__bases__[0](deployment.ServerOptions(backend="stub"))
    replica.__del__()
    assert backend.closes == 1
