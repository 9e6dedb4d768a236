"""ONNX Runtime backend: the graphs written by ``python -m export onnx``, behind the same interface
as ``TorchBackend`` (see ``engines/backend.py``). The graph files and their exact inputs and outputs
are the contract of ``engines/graphs.py`` (``GRAPH_SPECS``).

Tensors go in and come out as float32 CPU torch tensors whichever provider runs the graphs, so
``device`` is always the CPU. ONNX Runtime runs on CUDA when its CUDA provider is installed
(``onnxruntime-gpu``), else on the CPU; the fp16 graphs are used only on CUDA, and the three MLPs
always run in fp32 (their outputs go straight into the keypoint geometry), as in ``TorchBackend``.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import motion
from .device import wants_cuda
from .graphs import GRAPH_SPECS, MLP_GRAPHS, GraphSpec

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


class OnnxModelError(ValueError):
    """A graph file does not have the inputs and outputs this backend expects."""


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise RuntimeError("onnxruntime is not installed: pip install onnxruntime "
                           "(or onnxruntime-gpu for NVIDIA GPUs)") from e
    return onnxruntime


def make_session(ort: Any, path: Path, providers: Sequence[str]) -> Any:
    """An ONNX Runtime session on ``path`` with the given providers, quiet about provider fallbacks
    (its warnings about them are noise here)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=list(providers))


def choose_providers(device: str, available: Sequence[str]) -> list[str]:
    """``auto``: CUDA when ONNX Runtime has it, else the CPU; ``cuda`` requires it; ``cpu`` and
    ``mps`` (no ONNX Runtime provider) are the CPU."""
    has_cuda = CUDA_PROVIDER in available
    if wants_cuda(device, has_cuda):
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device.startswith("cuda"):
        raise RuntimeError(f"ONNX Runtime has no {CUDA_PROVIDER} here (available: {', '.join(available)}); "
                           "install onnxruntime-gpu instead of onnxruntime")
    return [CPU_PROVIDER]


def check_graph_signature(path: Path, spec: GraphSpec, actual_inputs: Sequence[tuple[str, Sequence[Any], str]],
                          actual_outputs: Sequence[tuple[str, Sequence[Any], str]]) -> None:
    """Raise ``OnnxModelError`` naming ``path`` unless its (name, shape, type) lists equal the spec."""
    def fmt(items: Sequence[tuple[str, Sequence[Any], str]]) -> str:
        return ", ".join(f"{n} {'x'.join(map(str, s))} {t}" for n, s, t in items)

    for kind, spec_items, actual in (("inputs", spec.inputs, actual_inputs), ("outputs", spec.outputs, actual_outputs)):
        expected = [(n, tuple(s), "tensor(float)") for n, s in spec_items]
        got = [(n, tuple(s), t) for n, s, t in actual]
        if got != expected:
            raise OnnxModelError(f"{path}: {kind} are [{fmt(got)}], expected [{fmt(expected)}]; "
                                 "export the graphs again with `python -m export onnx`")


def check_manifest(model_dir: Path, files: Sequence[str]) -> None:
    """If ``manifest.json`` is present, each file's size must match it (a cheap guard against a
    directory mixing graphs of two exports)."""
    path = model_dir / MANIFEST
    if not path.is_file():
        return
    try:
        graphs = {g["file"]: g for g in json.loads(path.read_text())["graphs"]}
    except (ValueError, KeyError, TypeError) as e:
        raise OnnxModelError(f"{path}: not a manifest written by `python -m export onnx` ({e})") from None
    for name in files:
        entry = graphs.get(name)
        if entry is None:
            raise OnnxModelError(f"{model_dir / name}: not listed in {path}; export the graphs again")
        size = (model_dir / name).stat().st_size
        if "bytes" in entry and entry["bytes"] != size:
            raise OnnxModelError(f"{model_dir / name}: {size} bytes, but {path} lists {entry['bytes']}; "
                                 "the directory mixes two exports, export the graphs again")


class _Graph:
    """One ONNX Runtime session with its spec: torch tensors in, float32 numpy arrays out."""

    def __init__(self, ort: Any, path: Path, spec: GraphSpec, providers: list[str]) -> None:
        try:
            self.session = make_session(ort, path, providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for broken files
            raise OnnxModelError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
        check_graph_signature(
            path, spec,
            [(i.name, i.shape, i.type) for i in self.session.get_inputs()],
            [(o.name, o.shape, o.type) for o in self.session.get_outputs()])
        self.spec = spec
        self.path = path
        self.provider = self.session.get_providers()[0]

    def __call__(self, *tensors: torch.Tensor) -> dict[str, np.ndarray]:
        session = self.session
        if session is None:
            raise RuntimeError(f"{self.path}: used after its backend was closed")
        feeds = {}
        for (name, shape), t in zip(self.spec.inputs, tensors, strict=True):
            if tuple(t.shape) != shape:
                raise ValueError(f"{self.spec.name} {name}: expected shape {'x'.join(map(str, shape))}, "
                                 f"got {'x'.join(map(str, t.shape))}")
            feeds[name] = np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())
        return dict(zip(self.spec.output_names, session.run(self.spec.output_names, feeds), strict=False))

    def close(self) -> None:
        # ONNX Runtime has no explicit release: the session goes with its last reference (a run in
        # flight on another thread holds one until it returns)
        self.session = None


class OnnxRuntimeBackend:
    """The exported graphs in ``model_dir`` on ONNX Runtime (batch 1, static shapes)."""

    def __init__(self, model_dir: str | Path, device: str = "auto", precision: str = "fp32") -> None:
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision: expected fp32 or fp16, got {precision!r}")
        ort = _import_ort()
        self.providers = choose_providers(str(device), ort.get_available_providers())
        on_cuda = self.providers[0] == CUDA_PROVIDER
        if precision == "fp16" and not on_cuda:
            raise ValueError("fp16 graphs need ONNX Runtime's CUDA provider (onnxruntime-gpu); "
                             "the CPU provider has no fast fp16 kernels")
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"{self.model_dir}: ONNX model directory not found; "
                                    "create it with `python -m export onnx --weights DIR --out DIR`")
        self.precision = precision
        self.device = torch.device("cpu")       # where tensors go in and come out
        self.name = f"onnxruntime-{'cuda' if on_cuda else 'cpu'}" + ("-fp16" if precision == "fp16" else "")
        files = {name: spec.file("fp32" if name in MLP_GRAPHS else precision) for name, spec in GRAPH_SPECS.items()}
        for f in files.values():
            if not (self.model_dir / f).is_file():
                raise FileNotFoundError(f"{self.model_dir / f}: graph file missing; "
                                        "export the graphs with `python -m export onnx --weights DIR --out DIR`")
        check_manifest(self.model_dir, list(files.values()))
        self._graphs = {name: _Graph(ort, self.model_dir / f, GRAPH_SPECS[name], self.providers)
                        for name, f in files.items()}
        if on_cuda and any(g.provider != CUDA_PROVIDER for g in self._graphs.values()):
            # onnxruntime-gpu without usable CUDA/cuDNN libraries falls back to the CPU silently
            if device == "cuda" or precision == "fp16":
                raise RuntimeError(f"ONNX Runtime's {CUDA_PROVIDER} did not start (CUDA or cuDNN libraries "
                                   "missing or mismatched); see onnxruntime.ai's CUDA requirements")
            log.warning("ONNX Runtime's %s did not start; running on the CPU", CUDA_PROVIDER)
            self.name = "onnxruntime-cpu"
            self.providers = [CPU_PROVIDER]
        self.stitching = self._mlp("stitching")
        self.eye = self._mlp("eye")
        self.lip = self._mlp("lip")
        log.info("ONNX Runtime backend: %s on %s", self.model_dir, ", ".join(self.providers))

    def _mlp(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        graph = self._graphs[name]

        def call(x: torch.Tensor) -> torch.Tensor:
            # the graphs are batch 1: a batch runs row by row
            rows = [torch.from_numpy(graph(x[i:i + 1])["y"]) for i in range(x.shape[0])]
            return torch.cat(rows, dim=0)
        return call

    def appearance(self, image: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._graphs["appearance_feature_extractor"](image)["feature_3d"])

    def motion(self, image: torch.Tensor) -> motion.KeypointInfo:
        raw = self._graphs["motion_extractor"](image)
        return motion.refine_motion_output({k: torch.from_numpy(v) for k, v in raw.items()})

    def render(self, feature: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        out = self._graphs["warping_spade"](feature, x_s, x_d)
        return torch.from_numpy(out["image"])

    def close(self) -> None:
        """Release every graph's ONNX Runtime session (idempotent)."""
        for graph in self._graphs.values():
            graph.close()
