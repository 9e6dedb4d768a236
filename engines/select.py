"""Which inference backend to use: ``--backend auto`` picks the fastest one that is installed and
validated on this machine, and says which and why.

The decision is a pure function of facts about the machine (``MachineFacts``), so it is tested
without GPUs; ``machine_facts`` gathers them for real.

Exported graphs and built engines belong to one weight set: the human set's lie in the ONNX or
engine folder itself (where they always were), another set's in a subfolder named after it
(``weight_set_dir``: ``onnx/animal``, ``engines/animal``). The rule holds for the default folders
and for ones the user names (``--onnx-dir DIR``, ``--engine-dir DIR``, the exporters' ``--out DIR``),
so the folder given to an exporter is the one given to the app."""
from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .backend_onnx import CUDA_PROVIDER, MANIFEST
from .device import DeviceFacts, choose_device, wants_cuda
from .tensorrt_runtime import ENGINES_JSON
from .weights import (
    LIVEPORTRAIT,
    WeightSet,
    as_weight_set,
    default_weights_dir,
    missing_checkpoints,
    weight_set_name,
    weights_fingerprint,
)

log = logging.getLogger(__name__)

BACKEND_KINDS = ("auto", "torch", "onnxruntime", "tensorrt", "stub")


def default_onnx_dir() -> Path:
    return default_weights_dir().parent / "onnx"


def default_engine_dir() -> Path:
    return default_weights_dir().parent / "engines"


def weight_set_dir(base: str | Path, weight_set: WeightSet | str = LIVEPORTRAIT) -> Path:
    """The folder of ``weight_set``'s graphs or engines under ``base``: ``base`` itself for the
    human set, ``base/<set name>`` for another (``base/animal``)."""
    name = weight_set_name(as_weight_set(weight_set))
    return Path(base) if name == "human" else Path(base) / name


@dataclass(frozen=True)
class MachineFacts:
    cuda: bool                       # torch can use an NVIDIA GPU
    tensorrt: bool                   # tensorrt_rtx or tensorrt imports
    engines_built: bool              # engines.json lists the render engine
    onnxruntime_cuda: bool           # onnxruntime-gpu with a loadable CUDA provider
    onnx_verified: bool = False      # onnxruntime imports and exported graphs of these weights passed their check
    mps: bool = False                # torch can use an Apple GPU, on macOS (engines.device.DeviceFacts)


@dataclass(frozen=True)
class BackendChoice:
    kind: str                        # torch | onnxruntime | tensorrt | stub
    device: str                      # cpu | cuda | mps
    precision: str                   # fp32 | fp16
    reason: str


def check_backend_kind(requested: str) -> None:
    """A ``ValueError`` naming the kinds unless ``requested`` is one of BACKEND_KINDS."""
    if requested not in BACKEND_KINDS:
        raise ValueError(f"unknown backend {requested!r}; expected one of {', '.join(BACKEND_KINDS)}")


def choose_backend(requested: str, device: str, facts: MachineFacts) -> BackendChoice:
    """``requested`` is one of BACKEND_KINDS; ``device`` one of ``engines.device.DEVICE_CHOICES``."""
    check_backend_kind(requested)
    dev = choose_device(device, DeviceFacts(cuda=facts.cuda, mps=facts.mps))
    gpu = dev.startswith("cuda")
    if requested == "stub":
        return BackendChoice("stub", dev, "fp32", "requested: no networks (testing)")
    if requested == "torch":
        return BackendChoice("torch", dev, "fp16" if gpu else "fp32", "requested")
    if requested == "onnxruntime":
        on_gpu = gpu and facts.onnxruntime_cuda          # ONNX Runtime has no MPS provider: the CPU there
        return BackendChoice("onnxruntime", "cuda" if on_gpu else "cpu", "fp16" if on_gpu else "fp32", "requested")
    if requested == "tensorrt":
        if not gpu:
            raise ValueError("--backend tensorrt needs an NVIDIA GPU")
        if not facts.tensorrt:
            raise ValueError("--backend tensorrt: neither tensorrt_rtx nor tensorrt is installed")
        return BackendChoice("tensorrt", "cuda", "fp16", "requested")
    # auto
    if dev == "mps":
        return BackendChoice("torch", "mps", "fp32",
                             "PyTorch on the Apple GPU (MPS); operators it lacks run on the CPU")
    if not gpu:
        why = "no CUDA GPU" if not facts.cuda else "--device cpu"
        if facts.onnx_verified:
            return BackendChoice("onnxruntime", "cpu", "fp32",
                                 f"{why}: ONNX Runtime, faster than PyTorch on CPUs; its graphs of these weights "
                                 "passed the check against PyTorch")
        return BackendChoice("torch", "cpu", "fp32",
                             f"{why}: PyTorch on the CPU; `python -m export onnx` makes ONNX Runtime graphs, "
                             "which run faster on CPUs")
    if facts.tensorrt and facts.engines_built:
        return BackendChoice("tensorrt", "cuda", "fp16",
                             "TensorRT engines are built for this machine (each is checked against PyTorch at "
                             "start; one that fails is replaced by PyTorch)")
    hint = ("build TensorRT engines with `python -m export tensorrt` for more speed" if facts.tensorrt
            else "install tensorrt-rtx and build engines for more speed")
    return BackendChoice("torch", "cuda", "fp16", f"PyTorch CUDA fp16 with CUDA graphs; {hint}")


def onnx_graphs_verified(onnx_dir: Path, weights_dir: Path | None, weight_set: WeightSet | str = LIVEPORTRAIT) -> bool:
    """The graphs in ``onnx_dir`` were exported from ``weight_set``'s weights in ``weights_dir`` and
    every fp32 graph passed its check against PyTorch (``manifest.json`` written by ``python -m
    export onnx``; the fingerprint covers the set's file paths, so one set's graphs never count for
    another)."""
    try:
        manifest = json.loads((onnx_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    fp32 = [g for g in manifest.get("graphs", []) if g.get("precision") == "fp32"]
    passed = bool(fp32) and all(v.get("status") == "PASS" for g in fp32 for v in g.get("verification", {}).values())
    if not passed or weights_dir is None:
        return False
    if missing_checkpoints(weights_dir, weight_set):
        return False
    return manifest.get("weights", {}).get("sha256") == weights_fingerprint(weights_dir, weight_set)


def machine_facts(engine_dir: Path | None = None, onnx_dir: Path | None = None,
                  weights_dir: Path | None = None, *, requested: str = "auto", device: str = "auto",
                  weight_set: WeightSet | str = LIVEPORTRAIT) -> MachineFacts:
    """The facts ``choose_backend(requested, device, ...)`` needs, for ``weight_set``'s graphs and
    engines: ``engine_dir`` and ``onnx_dir`` are that set's own folders (``weight_set_dir``; the
    defaults are the default folders' ones). Exported ONNX graphs are checked against
    ``weights_dir`` only when ONNX Runtime could be chosen: the check hashes every weight file."""
    device_facts = DeviceFacts.probe()
    cuda = device_facts.cuda
    trt = any(importlib.util.find_spec(m) is not None for m in ("tensorrt_rtx", "tensorrt"))
    engines = False
    path = (engine_dir or weight_set_dir(default_engine_dir(), weight_set)) / ENGINES_JSON
    if path.is_file():
        try:
            engines = "warping_spade" in json.loads(path.read_text()).get("engines", {})
        except (OSError, ValueError):
            engines = False
    ort = importlib.util.find_spec("onnxruntime") is not None
    ort_cuda = False
    if cuda and ort:
        import onnxruntime  # optional package

        ort_cuda = CUDA_PROVIDER in onnxruntime.get_available_providers()
    onnx_may_serve = requested == "onnxruntime" or (requested == "auto" and not wants_cuda(device, cuda))
    verified = ort and onnx_may_serve and onnx_graphs_verified(
        onnx_dir or weight_set_dir(default_onnx_dir(), weight_set), weights_dir, weight_set)
    return MachineFacts(cuda=cuda, tensorrt=trt, engines_built=engines, onnxruntime_cuda=ort_cuda,
                        onnx_verified=verified, mps=device_facts.mps)
