"""Building the backend a user asked for: a small registry of backend builders, one per kind.

``make_backend`` resolves ``--backend auto`` (``engines.select``), makes sure the weights are
there, and calls the kind's builder from ``BACKEND_BUILDERS``. A new backend is one module with
the ``InferenceBackend`` methods and one builder registered here (``register_backend``); its
kind must also be one ``engines.select.choose_backend`` knows."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .backend import InferenceBackend, StubBackend, TorchBackend
from .checkpoints import load_networks
from .device import resolve_device
from .select import (
    BACKEND_KINDS,
    BackendChoice,
    check_backend_kind,
    choose_backend,
    default_engine_dir,
    default_onnx_dir,
    machine_facts,
)
from .weights import DownloadProgress, ensure_weights, resolve_weights_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendRequest:
    """What a builder gets: the resolved choice (kind, device, precision) and where its files are.
    ``weights_dir`` is None for the stub."""

    choice: BackendChoice
    weights_dir: Path | None
    onnx_dir: Path
    engine_dir: Path


BackendBuilder = Callable[[BackendRequest], InferenceBackend]
BACKEND_BUILDERS: dict[str, BackendBuilder] = {}


def register_backend(kind: str) -> Callable[[BackendBuilder], BackendBuilder]:
    """Decorator: ``builder`` makes the backends of ``kind`` (one builder per kind, and only for
    a kind that ``choose_backend`` can return)."""
    if kind not in BACKEND_KINDS or kind == "auto":
        raise ValueError(f"{kind!r} is not a backend kind of engines.select.BACKEND_KINDS (add it there first)")

    def register(builder: BackendBuilder) -> BackendBuilder:
        if kind in BACKEND_BUILDERS:
            raise ValueError(f"a backend builder for {kind!r} is registered already")
        BACKEND_BUILDERS[kind] = builder
        return builder
    return register


@register_backend("stub")
def _stub(request: BackendRequest) -> InferenceBackend:
    return StubBackend(request.choice.device)


@register_backend("torch")
def _torch(request: BackendRequest) -> InferenceBackend:
    assert request.weights_dir is not None
    return TorchBackend(load_networks(request.weights_dir), request.choice.device,
                        precision=request.choice.precision)


@register_backend("onnxruntime")
def _onnxruntime(request: BackendRequest) -> InferenceBackend:
    from .backend_onnx import OnnxRuntimeBackend

    return OnnxRuntimeBackend(request.onnx_dir, device=request.choice.device, precision=request.choice.precision)


@register_backend("tensorrt")
def _tensorrt(request: BackendRequest) -> InferenceBackend:
    from .backend_tensorrt import TensorRTBackend

    assert request.weights_dir is not None
    # the PyTorch networks check every engine at start and stand in for any that fails
    return TensorRTBackend(request.engine_dir, request.choice.device, fallback=load_networks(request.weights_dir),
                           validate=True)


def make_backend(kind: str = "auto", *, weights: str | Path | None = None, device: str = "auto",
                 download: bool = True, onnx_dir: str | Path | None = None,
                 engine_dir: str | Path | None = None,
                 download_progress: DownloadProgress | None = None) -> InferenceBackend:
    """The backend the user asked for (``auto``: the fastest installed and validated one, see
    ``engines.select``); ``stub`` runs no networks (tests, benchmarks). A weights download reports
    to ``download_progress`` (``ensure_weights``). Raises ``ValueError``
    (unknown kind, unusable choice), ``WeightsError`` or ``CheckpointError`` with one line for the
    user."""
    check_backend_kind(kind)                     # before anything is looked for, let alone downloaded
    resolve_device(device)                       # a clear error for --device cuda without a GPU
    engines = Path(engine_dir) if engine_dir else default_engine_dir()
    onnx = Path(onnx_dir) if onnx_dir else default_onnx_dir()
    weights_dir = None if kind == "stub" else ensure_weights(
        resolve_weights_dir(weights), download=download, progress=download_progress)
    facts = machine_facts(engines, onnx, weights_dir, requested=kind, device=device)
    choice = choose_backend(kind, device, facts)
    if choice.kind == "onnxruntime" and not facts.onnx_verified:
        raise ValueError(f"{onnx}: no ONNX graphs verified for the weights in {weights_dir}; make them with "
                         f"`python -m export onnx --weights {weights_dir} --out {onnx}`")
    log.info("backend: %s on %s (%s): %s", choice.kind, choice.device, choice.precision, choice.reason)
    builder = BACKEND_BUILDERS.get(choice.kind)
    if builder is None:
        raise ValueError(f"no backend builder registered for {choice.kind!r}")
    t0 = time.perf_counter()
    backend = builder(BackendRequest(choice, weights_dir, onnx, engines))
    if choice.kind != "stub":
        log.info("networks ready (%s) in %.1f s", backend.name, time.perf_counter() - t0)
    return backend
