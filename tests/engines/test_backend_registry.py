"""The backend registry is complete and checked: every kind ``choose_backend`` can return has a
builder (and no builder waits for a kind it cannot return), and a kind nobody knows is one clear
``ValueError`` before anything is looked for."""
from __future__ import annotations

import itertools
from dataclasses import fields
from pathlib import Path

import pytest

import engines.registry as registry
from engines.backend import StubBackend
from engines.device import DEVICE_CHOICES
from engines.select import BACKEND_KINDS, MachineFacts, choose_backend


def kinds_choose_backend_returns() -> set[str]:
    """Every kind ``choose_backend`` returns, over every request, device and machine."""
    kinds = set()
    flags = [f.name for f in fields(MachineFacts)]
    for values in itertools.product((False, True), repeat=len(flags)):
        facts = MachineFacts(**dict(zip(flags, values, strict=True)))
        for requested, device in itertools.product(BACKEND_KINDS, DEVICE_CHOICES):
            try:
                kinds.add(choose_backend(requested, device, facts).kind)
            except ValueError:          # e.g. tensorrt without a GPU: refused, nothing to build
                pass
    return kinds


def test_every_kind_choose_backend_returns_has_a_builder() -> None:
    kinds = kinds_choose_backend_returns()
    assert kinds == set(BACKEND_KINDS) - {"auto"}
    assert set(registry.BACKEND_BUILDERS) == kinds


def test_an_unknown_kind_is_one_value_error_before_the_weights(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    def no_weights(*args: object, **options: object) -> Path:
        raise AssertionError("weights looked for")

    monkeypatch.setattr(registry, "ensure_weights", no_weights)
    with pytest.raises(ValueError, match=r"^unknown backend 'onnx'; expected one of auto, torch, onnxruntime"):
        registry.make_backend("onnx", weights=tmp_path, device="cpu")


def test_a_builder_is_registered_once_and_for_a_known_kind_only() -> None:
    with pytest.raises(ValueError, match="'stub'.*registered already"):
        registry.register_backend("stub")(registry.BACKEND_BUILDERS["stub"])
    for kind in ("auto", "openvino"):
        with pytest.raises(ValueError, match=f"{kind!r} is not a backend kind"):
            registry.register_backend(kind)


def test_the_stub_is_built_through_the_registry() -> None:
    backend = registry.make_backend("stub", device="cpu")
    assert isinstance(backend, StubBackend) and str(backend.device) == "cpu"


def test_an_unknown_weight_set_is_one_value_error_before_the_weights(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    def no_weights(*args: object, **options: object) -> Path:
        raise AssertionError("weights looked for")

    monkeypatch.setattr(registry, "ensure_weights", no_weights)
    with pytest.raises(ValueError, match=r"^unknown weight set 'cats'; expected one of human, animal$"):
        registry.make_backend("torch", weights=tmp_path, device="cpu", weight_set="cats")


@pytest.mark.parametrize("weight_set, sub", [("human", ""), ("animal", "animal")])
def test_a_builder_gets_the_set_and_its_own_graph_and_engine_folders(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path, weight_set: str,
                                                                     sub: str) -> None:
    from engines.weights import WEIGHT_SETS

    requests: list[registry.BackendRequest] = []
    monkeypatch.setitem(registry.BACKEND_BUILDERS, "stub",
                        lambda request: requests.append(request) or StubBackend(request.choice.device))
    registry.make_backend("stub", device="cpu", onnx_dir=tmp_path / "onnx", engine_dir=tmp_path / "engines",
                          weight_set=weight_set)
    (request,) = requests
    assert request.weight_set is WEIGHT_SETS[weight_set]
    assert (request.onnx_dir, request.engine_dir) == (tmp_path / "onnx" / sub, tmp_path / "engines" / sub)


def test_onnxruntime_without_the_sets_graphs_names_the_export_command(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from engines.weights import LIVEPORTRAIT_ANIMALS

    for rel in LIVEPORTRAIT_ANIMALS.files.values():
        (tmp_path / "w" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "w" / rel).write_bytes(b"x")
    with pytest.raises(ValueError) as err:
        registry.make_backend("onnxruntime", weights=tmp_path / "w", device="cpu", download=False,
                              onnx_dir=tmp_path / "onnx", weight_set="animal")
    assert str(err.value) == (
        f"{tmp_path / 'onnx' / 'animal'}: no ONNX graphs verified for the LivePortrait animal weights in "
        f"{tmp_path / 'w'}; make them with `python -m export onnx --weights {tmp_path / 'w'} "
        f"--out {tmp_path / 'onnx'} --weight-set animal`")
