"""Running TensorRT engines: the installed TensorRT flavour, ``engines.json``, and one deserialised
engine with its persistent CUDA buffers.

Two flavours share the runtime API (``Runtime.deserialize_cuda_engine``, ``set_tensor_address``,
``execute_async_v3``): TensorRT for RTX (``tensorrt_rtx``, preferred) and standard TensorRT
(``tensorrt``). What differs between them at run time lives in ``TensorRT`` and nowhere else; only
TensorRT-RTX can check an engine file's header against this machine before deserialising it.
Building engines is the exporter's part (``export/trt_compat.py`` extends ``TensorRT``).

``engines.json`` (written by ``python -m export tensorrt``) lists the engines of a folder: per
graph name at least ``file`` and ``precision`` ("fp32" or "fp16").
"""
from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

log = logging.getLogger(__name__)

RTX = "tensorrt-rtx"
STANDARD = "tensorrt"
# Module name per flavour, in order of preference.
_MODULES = ((RTX, "tensorrt_rtx"), (STANDARD, "tensorrt"))
# Keep this many TensorRT error lines for exception texts.
ERRORS_KEPT = 8
ENGINES_JSON = "engines.json"
ENGINES_JSON_FORMAT = 1
# numpy/torch-style dtype names (``TensorRT.dtype_name``) -> torch dtypes.
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "int32": torch.int32, "int64": torch.int64, "int8": torch.int8, "uint8": torch.uint8,
                "bool": torch.bool}

Tensors = Mapping[str, torch.Tensor]


class TensorRTUnavailable(RuntimeError):
    """Neither ``tensorrt_rtx`` nor ``tensorrt`` can be imported (or the one asked for)."""


class EngineLoadError(RuntimeError):
    """One engine file cannot run here (other GPU, driver, version, or a damaged file)."""


def _make_logger(trt: ModuleType) -> Any:
    """A ``trt.ILogger`` that forwards TensorRT's log to Python logging and keeps the recent errors
    in ``errors``, so that a failure can say why (the class depends on the flavour imported)."""
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
                self.errors = (self.errors + [msg])[-ERRORS_KEPT:]
            trt_log.log(level, "%s", msg)

    return Bridge()


@dataclass
class TensorRT:
    """The imported flavour with the runtime operations the project needs."""

    trt: ModuleType
    flavour: str
    version: str
    logger: Any = field(repr=False)

    @property
    def is_rtx(self) -> bool:
        return self.flavour == RTX

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


def import_flavour(prefer: str | None = None) -> tuple[str, ModuleType]:
    """Import TensorRT-RTX, else standard TensorRT (``prefer`` picks one flavour only): the
    flavour's name and its module."""
    candidates = [(f, m) for f, m in _MODULES if prefer in (None, f)]
    if not candidates:
        raise ValueError(f"unknown TensorRT flavour {prefer!r}; expected {RTX} or {STANDARD}")
    failures = []
    for flavour, module in candidates:
        try:
            return flavour, importlib.import_module(module)
        except (ImportError, OSError) as e:   # OSError: a shared library that does not load
            failures.append(f"{module}: {e}")
    raise TensorRTUnavailable("TensorRT is not installed: " + "; ".join(failures)
                              + " (install it with: pip install tensorrt-rtx==1.7.1.116)")


def load(prefer: str | None = None) -> TensorRT:
    """The installed flavour (see ``import_flavour``) with a logger bridge."""
    flavour, trt = import_flavour(prefer)
    return TensorRT(trt=trt, flavour=flavour, version=str(trt.__version__), logger=_make_logger(trt))


def read_engines_json(engine_dir: str | Path) -> dict[str, Any]:
    """``engines.json`` of ``engine_dir`` as ``{"format": ..., "engines": {graph: record}}``; one
    listing no engines when it is absent, unreadable or of another format (it is only a cache of
    builds: such a folder is built again)."""
    path = Path(engine_dir) / ENGINES_JSON
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"format": ENGINES_JSON_FORMAT, "engines": {}}
    except (OSError, ValueError) as e:
        log.warning("%s unreadable (%s): every engine will be rebuilt", path, e)
        return {"format": ENGINES_JSON_FORMAT, "engines": {}}
    if data.get("format") != ENGINES_JSON_FORMAT or not isinstance(data.get("engines"), dict):
        log.warning("%s has another format: every engine will be rebuilt", path)
        return {"format": ENGINES_JSON_FORMAT, "engines": {}}
    return data


class TrtEngine:
    """One deserialised engine, its execution context and its persistent CUDA I/O buffers.

    Inputs and outputs live in torch CUDA buffers bound once with ``set_tensor_address``; a call
    copies the inputs in, runs ``execute_async_v3`` ordered after the caller's current torch stream
    (on the engine's own stream, joined by events) and hands back copies of the outputs."""

    def __init__(self, api: TensorRT, runtime: Any, path: Path, device: torch.device) -> None:
        self.name, self.device = path.stem, device
        with torch.cuda.device(device):         # TensorRT works in the current CUDA device's context
            self._load(api, runtime, path)
            # TensorRT adds device-wide syncs when enqueued on the legacy default stream (torch's
            # usual current stream), so it runs on its own stream, joined to the caller's by events.
            self._stream = torch.cuda.Stream(device)
        self._lock = threading.Lock()           # one context: calls from several threads take turns
        self._done: torch.cuda.Event | None = None
        self._closed = False

    def _load(self, api: TensorRT, runtime: Any, path: Path) -> None:
        data = path.read_bytes()
        api.logger.errors = []
        problem = api.engine_problem(runtime, data)
        if problem:
            raise EngineLoadError(f"{path.name}: {problem}")
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineLoadError(f"{path.name}: TensorRT could not deserialise it: "
                                  + (" | ".join(api.logger.errors) or "no error reported"))
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineLoadError(f"{path.name}: no execution context (out of GPU memory?)")
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        for i in range(self.engine.num_io_tensors):
            self._bind(api, self.engine.get_tensor_name(i))

    def _bind(self, api: TensorRT, tensor: str) -> None:
        shape = tuple(self.engine.get_tensor_shape(tensor))
        if any(d < 0 for d in shape):
            raise EngineLoadError(f"{self.name}: tensor {tensor} has a dynamic shape {shape}; "
                                  "the ONNX export is expected to be static")
        dtype = TORCH_DTYPES[api.dtype_name(self.engine.get_tensor_dtype(tensor))]
        buf = torch.empty(shape, dtype=dtype, device=self.device)
        self.context.set_tensor_address(tensor, buf.data_ptr())
        (self.inputs if api.is_input(self.engine, tensor) else self.outputs)[tensor] = buf

    @property
    def batch(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def __call__(self, feeds: Tensors) -> dict[str, torch.Tensor]:
        """One run at the engine's batch size; inputs may be flat or shaped, any float dtype.
        Ordered on the caller's current stream: copies in, the engine, copies out."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"engine {self.name}: used after it was closed")
            stream = torch.cuda.current_stream(self.device)
            if self._done is not None:
                stream.wait_event(self._done)   # the last run (maybe from another stream) is done with the buffers
            for name, buf in self.inputs.items():
                x = feeds[name]
                if x.numel() != buf.numel():
                    raise ValueError(f"engine {self.name} input {name}: expected shape "
                                     f"{'x'.join(map(str, buf.shape))}, got {'x'.join(map(str, x.shape))}")
                buf.copy_(x.reshape(buf.shape), non_blocking=True)
            # Only the persistent buffers cross streams: no allocator tensor needs record_stream.
            self._stream.wait_stream(stream)
            if not self.context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f"engine {self.name}: execute_async_v3 failed")
            stream.wait_stream(self._stream)
            # copies: the buffers are overwritten by the next run (float() copies as well)
            outs = {name: buf.clone() if buf.dtype == torch.float32 else buf.float()
                    for name, buf in self.outputs.items()}
            self._done = torch.cuda.Event()
            self._done.record(stream)
            return outs

    def close(self) -> None:
        """Release the context, the engine and the buffers (idempotent). A run in flight on
        another thread finishes first (the lock), and the device is drained: the buffers must not
        go back to torch's allocator while the engine or a caller's stream still uses them."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            torch.cuda.synchronize(self.device)
            self.context = None             # the context before its engine, as TensorRT requires
            self.engine = None
            self.inputs.clear()
            self.outputs.clear()


def run_batched(engine: TrtEngine, feeds: Tensors) -> dict[str, torch.Tensor]:
    """Run ``feeds`` with any batch size B through an engine of batch b (B a multiple of b)."""
    total = next(iter(feeds.values())).shape[0]
    if total == engine.batch:
        return engine(feeds)
    if total % engine.batch:
        raise ValueError(f"engine {engine.name}: batch {total} is not a multiple of the engine's {engine.batch}")
    parts = [engine({k: v[i:i + engine.batch] for k, v in feeds.items()}) for i in range(0, total, engine.batch)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
