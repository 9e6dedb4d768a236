"""Building TensorRT engines with either flavour: TensorRT for RTX (``tensorrt_rtx``, preferred)
and standard TensorRT (``tensorrt``). The runtime half (importing a flavour, its logger, engine
validity, dtypes) is ``engines/tensorrt_runtime.py``; ``TensorRTBuilder`` adds what only building
needs, and everything that differs between the flavours when building lives here:

* **targets**: TensorRT-RTX builds ahead of time without a GPU, for a list of compute
  capabilities or, by default, for any RTX-class GPU (8.0, 8.6, 8.9, 12.0 and later; Turing 7.5
  only when asked for explicitly). Standard TensorRT builds on, and for, the GPU it runs on.

Networks are created strongly typed in both flavours: precision comes from the ONNX types (fp16
graphs with fp32 islands), never from builder flags.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engines import tensorrt_runtime
from engines.tensorrt_runtime import ERRORS_KEPT, RTX, STANDARD, TensorRT, TensorRTUnavailable

__all__ = ["RTX", "STANDARD", "BuildTarget", "EngineBuildError", "TensorRTBuilder", "TensorRTUnavailable",
           "load", "parse_compute_capability"]

# What the default (empty) target of a TensorRT-RTX AOT build runs on, per NVIDIA's docs.
RTX_DEFAULT_TARGET = "any RTX GPU (compute capability 8.0, 8.6, 8.9, 12.0 and later)"


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


class TensorRTBuilder(TensorRT):
    """The imported flavour with the build operations (targets, ONNX parsing, engine builds)."""

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
            raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: " + " | ".join(errors[:ERRORS_KEPT]))
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


def _current_gpu() -> str:
    """``"sm90:NVIDIA H100 80GB HBM3"`` for the current CUDA device (standard TensorRT's target)."""
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("standard TensorRT builds engines on the GPU they are for, and no CUDA GPU is "
                                  "available here; install TensorRT for RTX (pip install tensorrt-rtx), which "
                                  "builds ahead of time without a GPU")
    major, minor = torch.cuda.get_device_capability()
    return f"sm{major}{minor}:{torch.cuda.get_device_name()}"


def load(prefer: str | None = None) -> TensorRTBuilder:
    """TensorRT-RTX, else standard TensorRT (``prefer`` picks one flavour only), ready to build."""
    api = tensorrt_runtime.load(prefer)
    return TensorRTBuilder(trt=api.trt, flavour=api.flavour, version=api.version, logger=api.logger)
