"""One small face over the two TensorRT flavours: TensorRT for RTX (``tensorrt_rtx``, preferred)
and standard TensorRT (``tensorrt``).

Both share the builder / parser / runtime API (``Builder``, ``OnnxParser``,
``build_serialized_network``, ``Runtime.deserialize_cuda_engine``, ``set_tensor_address``,
``execute_async_v3``); everything that differs between them lives here and nowhere else:

* **targets**: TensorRT-RTX builds ahead of time without a GPU, for a list of compute
  capabilities or, by default, for any RTX-class GPU (8.0, 8.6, 8.9, 12.0 and later; Turing 7.5
  only when asked for explicitly). Standard TensorRT builds on, and for, the GPU it runs on.
* **engine validity**: only TensorRT-RTX can check an engine file's header against this machine.

Networks are created strongly typed in both flavours: precision comes from the ONNX types (fp16
graphs with fp32 islands), never from builder flags.
"""
from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

RTX = "tensorrt-rtx"
STANDARD = "tensorrt"
# Module name per flavour, in order of preference.
_MODULES = ((RTX, "tensorrt_rtx"), (STANDARD, "tensorrt"))
# What the default (empty) target of a TensorRT-RTX AOT build runs on, per NVIDIA's docs.
RTX_DEFAULT_TARGET = "any RTX GPU (compute capability 8.0, 8.6, 8.9, 12.0 and later)"
# Keep this many builder/parser error lines for the exception text.
_ERRORS_KEPT = 8


class TensorRTUnavailable(RuntimeError):
    """Neither ``tensorrt_rtx`` nor ``tensorrt`` can be imported (or the one asked for)."""


class EngineBuildError(RuntimeError):
    """Parsing an ONNX graph or building its engine failed; the message carries TensorRT's errors."""


@dataclass(frozen=True)
class BuildTarget:
    """The GPUs an engine is built for. ``compute_capabilities`` empty means the flavour's default:
    any RTX GPU for TensorRT-RTX, the current GPU (named in ``device``) for standard TensorRT."""

    compute_capabilities: tuple[str, ...] = ()
    device: str | None = None

    @property
    def key(self) -> str:
        """Stable text for cache keys."""
        if self.compute_capabilities:
            return "cc:" + ",".join(self.compute_capabilities)
        if self.device:
            return "gpu:" + self.device
        return "rtx-default"

    def describe(self) -> str:
        if self.compute_capabilities:
            return "compute capability " + ", ".join(self.compute_capabilities)
        return self.device or RTX_DEFAULT_TARGET


def parse_compute_capability(text: str) -> str:
    """``"8.6"``, ``"86"``, ``"sm86"`` or ``"sm_86"`` -> ``"8.6"``; ``"12.0"`` / ``"120"`` -> ``"12.0"``."""
    t = text.strip().lower().removeprefix("sm").lstrip("_")
    m = re.fullmatch(r"(\d+)\.(\d)", t) or re.fullmatch(r"(\d+)(\d)", t)
    if not m:
        raise ValueError(f"compute capability {text!r}: expected MAJOR.MINOR such as 8.6 or 12.0")
    return f"{int(m.group(1))}.{m.group(2)}"


def _cc_sort_key(cc: str) -> tuple[int, int]:
    major, minor = cc.split(".")
    return int(major), int(minor)


def _make_logger(trt: ModuleType) -> Any:
    """A ``trt.ILogger`` that forwards TensorRT's log to Python logging and keeps the recent errors,
    so that a failed build can say why (the class depends on the flavour imported at run time)."""
    sev = trt.ILogger.Severity
    levels = {sev.INTERNAL_ERROR: logging.ERROR, sev.ERROR: logging.ERROR, sev.WARNING: logging.WARNING,
              sev.INFO: logging.DEBUG, sev.VERBOSE: logging.DEBUG}
    trt_log = logging.getLogger(f"{__name__}.{trt.__name__}")

    class Bridge(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity: Any, msg: str) -> None:
            level = levels.get(severity, logging.INFO)
            if level >= logging.ERROR:
                self.errors = (self.errors + [msg])[-_ERRORS_KEPT:]
            trt_log.log(level, "%s", msg)

    return Bridge()


@dataclass
class TensorRT:
    """The imported flavour with the handful of operations the project needs."""

    trt: ModuleType
    flavour: str
    version: str
    logger: Any = field(repr=False)

    @property
    def is_rtx(self) -> bool:
        return self.flavour == RTX

    # ------------------------------------------------------------------ targets
    def supported_compute_capabilities(self) -> tuple[str, ...]:
        """Compute capabilities this TensorRT-RTX release can build for (from its enum)."""
        if not self.is_rtx:
            return ()
        names = [n for n in self.trt.ComputeCapability.__members__ if re.fullmatch(r"SM\d+", n)]
        return tuple(sorted((parse_compute_capability(n) for n in names), key=_cc_sort_key))

    def resolve_target(self, compute_capabilities: Sequence[str] = ()) -> BuildTarget:
        """Validate the requested compute capabilities for this flavour. Standard TensorRT cannot
        target other GPUs: its engines are built for the GPU present (which must exist)."""
        ccs = tuple(sorted({parse_compute_capability(c) for c in compute_capabilities}, key=_cc_sort_key))
        if self.is_rtx:
            unknown = [c for c in ccs if c not in self.supported_compute_capabilities()]
            if unknown:
                supported = ", ".join(self.supported_compute_capabilities())
                raise ValueError(f"TensorRT-RTX {self.version} cannot target compute capability "
                                 f"{', '.join(unknown)}; it supports {supported}")
            return BuildTarget(ccs)
        if ccs:
            raise ValueError("choosing target compute capabilities needs TensorRT-RTX (pip install tensorrt-rtx); "
                             "standard TensorRT builds for the GPU it runs on")
        return BuildTarget(device=_current_gpu())

    def _apply_target(self, config: Any, target: BuildTarget) -> None:
        if not target.compute_capabilities:
            return                                  # flavour default (any RTX GPU / this GPU)
        config.num_compute_capabilities = len(target.compute_capabilities)
        for i, cc in enumerate(target.compute_capabilities):
            value = getattr(self.trt.ComputeCapability, "SM" + cc.replace(".", ""))
            if not config.set_compute_capability(value, i):
                raise EngineBuildError(f"TensorRT-RTX refused target compute capability {cc}")

    # ------------------------------------------------------------------ build
    def build_engine(self, onnx_path: str | Path, target: BuildTarget) -> tuple[memoryview, dict[str, Any]]:
        """Parse ``onnx_path`` into a strongly typed network and build a serialised engine for
        ``target``. Returns the engine bytes and the network's I/O (name -> dtype, shape)."""
        trt = self.trt
        self.logger.errors = []
        builder = trt.Builder(self.logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, self.logger)
        # parse_from_file resolves external weight files relative to the model's folder.
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or self.logger.errors
            raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: " + " | ".join(errors[:_ERRORS_KEPT]))
        io = self._network_io(network)
        config = builder.create_builder_config()
        self._apply_target(config, target)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineBuildError(f"{onnx_path}: building the engine for {target.describe()} failed: "
                                   + (" | ".join(self.logger.errors) or "no error reported"))
        return memoryview(serialized), io

    def _network_io(self, network: Any) -> dict[str, Any]:
        def describe(t: Any) -> dict[str, Any]:
            return {"name": t.name, "dtype": self.dtype_name(t.dtype), "shape": list(t.shape)}
        return {"inputs": [describe(network.get_input(i)) for i in range(network.num_inputs)],
                "outputs": [describe(network.get_output(i)) for i in range(network.num_outputs)]}

    # ------------------------------------------------------------------ runtime
    def runtime(self) -> Any:
        return self.trt.Runtime(self.logger)

    def engine_problem(self, runtime: Any, data: bytes | memoryview) -> str | None:
        """Why this engine cannot run here (wrong GPU, old driver, other version), or None when it
        can or when the flavour cannot tell before deserialising (standard TensorRT)."""
        if not self.is_rtx:
            return None
        validity, diagnostics = runtime.get_engine_validity(data)
        if validity != self.trt.EngineValidity.INVALID:
            return None
        bits = self.trt.EngineInvalidityDiagnostics.__members__.items()
        reasons = [name.lower().replace("_", " ") for name, bit in bits if int(diagnostics) & int(bit)]
        return "engine invalid on this machine: " + (", ".join(reasons) or "no diagnostics")

    def dtype_name(self, dtype: Any) -> str:
        """``trt.DataType`` -> numpy/torch-style name (``float32``, ``float16``, ...)."""
        names = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64",
                 "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}
        # by member name: older standard TensorRT releases lack some members (BF16, INT64)
        return next((v for k, v in names.items() if getattr(self.trt.DataType, k, None) == dtype), str(dtype))

    def is_input(self, engine: Any, name: str) -> bool:
        return engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT


def _current_gpu() -> str:
    """``"sm90:NVIDIA H100 80GB HBM3"`` for the current CUDA device (standard TensorRT's target)."""
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("standard TensorRT builds engines on the GPU they are for, and no CUDA GPU is "
                                  "available here; install TensorRT for RTX (pip install tensorrt-rtx), which "
                                  "builds ahead of time without a GPU")
    major, minor = torch.cuda.get_device_capability()
    return f"sm{major}{minor}:{torch.cuda.get_device_name()}"


def load(prefer: str | None = None) -> TensorRT:
    """Import TensorRT-RTX, else standard TensorRT (``prefer`` picks one flavour only)."""
    candidates = [(f, m) for f, m in _MODULES if prefer in (None, f)]
    if not candidates:
        raise ValueError(f"unknown TensorRT flavour {prefer!r}; expected {RTX} or {STANDARD}")
    failures = []
    for flavour, module in candidates:
        try:
            trt = importlib.import_module(module)
        except (ImportError, OSError) as e:   # OSError: a shared library that does not load
            failures.append(f"{module}: {e}")
            continue
        return TensorRT(trt=trt, flavour=flavour, version=str(trt.__version__), logger=_make_logger(trt))
    raise TensorRTUnavailable("TensorRT is not installed: " + "; ".join(failures)
                              + " (install it with: pip install tensorrt-rtx==1.7.1.116)")
