"""Building the backend a user asked for: a small registry of backend builders, one per kind.

``make_backend`` resolves ``--backend auto`` (``engines.select``), makes sure the weights are
there, and calls the kind's builder from ``BACKEND_BUILDERS``. A new backend is one module with
the ``InferenceBackend`` methods and one builder registered here (``register_backend``); its
kind must also be one ``engines.select.choose_backend`` knows.

A backend runs one weight set (``weight_set="human"`` or ``"animal"``, the keys of
``engines.weights.WEIGHT_SETS``): its files are fetched on first use like the human ones, and its
ONNX graphs and TensorRT engines are looked for in that set's folders (``engines.select.weight_set_dir``:
the folder itself for the human set, ``<folder>/animal`` for the animal one, whether the folder is
the default or ``--onnx-dir`` / ``--engine-dir``)."""
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
    weight_set_dir,
)
from .weights import LIVEPORTRAIT, DownloadProgress, WeightSet, ensure_weights, resolve_weights_dir, weight_set_named

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendRequest:
    """What a builder gets: the resolved choice (kind, device, precision), the weight set and where
    its files are (``onnx_dir`` and ``engine_dir`` are the set's own folders). ``weights_dir`` is
    None for the stub."""

    choice: BackendChoice
    weights_dir: Path | None
    onnx_dir: Path
    engine_dir: Path
    weight_set: WeightSet = LIVEPORTRAIT


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
    return TorchBackend(load_networks(request.weights_dir, weight_set=request.weight_set), request.choice.device,
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
    return TensorRTBackend(request.engine_dir, request.choice.device,
                           fallback=load_networks(request.weights_dir, weight_set=request.weight_set), validate=True)


def make_backend(kind: str = "auto", *, weights: str | Path | None = None, device: str = "auto",
                 download: bool = True, onnx_dir: str | Path | None = None,
                 engine_dir: str | Path | None = None,
                 download_progress: DownloadProgress | None = None,
                 weight_set: str = "human") -> InferenceBackend:
    """The backend the user asked for (``auto``: the fastest installed and validated one, see
    ``engines.select``) running ``weight_set``'s networks (a key of ``WEIGHT_SETS``: ``human`` or
    ``animal``); ``stub`` runs no networks (tests, benchmarks). Missing weights of the set are
    downloaded (``ensure_weights``, reporting to ``download_progress``); ``onnx_dir`` and
    ``engine_dir`` are base folders, the set's graphs and engines lie in ``weight_set_dir`` of
    them. Raises ``ValueError`` (unknown kind or set, unusable choice), ``WeightsError`` or
    ``CheckpointError`` with one line for the user."""
    check_backend_kind(kind)                     # before anything is looked for, let alone downloaded
    chosen_set = weight_set_named(weight_set)
    resolve_device(device)                       # a clear error for --device cuda without a GPU
    engine_base = Path(engine_dir) if engine_dir else default_engine_dir()
    onnx_base = Path(onnx_dir) if onnx_dir else default_onnx_dir()
    engines, onnx = weight_set_dir(engine_base, chosen_set), weight_set_dir(onnx_base, chosen_set)
    weights_dir = None if kind == "stub" else ensure_weights(
        resolve_weights_dir(weights), download=download, progress=download_progress, weight_set=chosen_set)
    facts = machine_facts(engines, onnx, weights_dir, requested=kind, device=device, weight_set=chosen_set)
    choice = choose_backend(kind, device, facts)
    if choice.kind == "onnxruntime" and not facts.onnx_verified:
        set_option = "" if weight_set == "human" else f" --weight-set {weight_set}"
        raise ValueError(f"{onnx}: no ONNX graphs verified for the {chosen_set.title} weights in {weights_dir}; "
                         f"make them with `python -m export onnx --weights {weights_dir} --out {onnx_base}"
                         f"{set_option}`")
    log.info("backend: %s on %s (%s), %s weights: %s", choice.kind, choice.device, choice.precision, weight_set,
             choice.reason)
    builder = BACKEND_BUILDERS.get(choice.kind)
    if builder is None:
        raise ValueError(f"no backend builder registered for {choice.kind!r}")
    t0 = time.perf_counter()
    backend = builder(BackendRequest(choice, weights_dir, onnx, engines, chosen_set))
    if choice.kind != "stub":
        log.info("networks ready (%s, %s weights) in %.1f s", backend.name, weight_set, time.perf_counter() - t0)
    return backend
