"""The inference backend on TensorRT engines (``python -m export tensorrt``), and their validation.

``TensorRTBackend(engine_dir)`` deserialises every engine listed in ``engine_dir/engines.json``
as a ``TrtEngine`` (``engines/tensorrt_runtime.py``): one execution context and persistent CUDA
buffers each, run ordered after the caller's current torch stream, outputs handed back as copies
(so a stored avatar feature is never overwritten by the next call). Nothing waits on the host.
The engines have batch 1; larger batches run sample by sample.

Given the PyTorch networks as ``fallback``, every engine is first run on reference inputs and
compared with its PyTorch module using the parity kit's metric (``validate_engines``). An engine
that cannot be loaded on this GPU or fails that check is not used: the reason is logged and the
PyTorch module takes its place. Without a fallback the engines are used unchecked.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import motion, tensorrt_runtime
from .checkpoints import LivePortraitNetworks
from .graphs import GRAPH_SPECS, torch_runner
from .tensorrt_runtime import (
    ENGINES_JSON,
    EngineLoadError,
    TensorRTUnavailable,
    TrtEngine,
    read_engines_json,
    run_batched,
)
from .verification import (
    PROFILES,
    GraphCheck,
    Tolerance,
    compare_graph,
    failed_graph,
    reference_inputs,
    stand_in_image,
)

log = logging.getLogger(__name__)

Tensors = Mapping[str, torch.Tensor]
Runner = Callable[[str, Tensors], Tensors]
# A tolerance profile ("fp32", "fp16" or a Tolerance), or one per engine.
Profile = str | Tolerance | Mapping[str, str | Tolerance]


class TensorRTBackendError(RuntimeError):
    """The TensorRT backend cannot be used here (no GPU, no TensorRT, no usable engines)."""


# --------------------------------------------------------------------------- validation
@dataclass
class ValidationReport:
    checks: dict[str, GraphCheck] = field(default_factory=dict)

    @property
    def accepted(self) -> list[str]:
        return [n for n, c in self.checks.items() if c.passed]

    @property
    def rejected(self) -> dict[str, str]:
        return {n: c.reason for n, c in self.checks.items() if not c.passed}

    def __str__(self) -> str:
        return "\n".join(c.line() for c in self.checks.values())


def _tolerance(profile: Profile, engine: str) -> tuple[str, Tolerance]:
    """The precision label and tolerance of ``engine`` under ``profile``."""
    if isinstance(profile, Mapping):
        profile = profile[engine]
    if isinstance(profile, Tolerance):
        return "custom", profile
    try:
        return profile, PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown tolerance profile {profile!r}; expected one of {', '.join(PROFILES)}") from None


def check_engine(runner: Runner, reference: Runner, engine: str, feeds: Tensors, profile: Profile) -> GraphCheck:
    """Run one engine and its PyTorch reference on ``feeds`` and compare every reference output."""
    precision, tol = _tolerance(profile, engine)
    refs = reference(engine, feeds)
    try:
        outs = runner(engine, feeds)
    except Exception as e:  # noqa: BLE001 - any failure of the engine means "do not use it"
        return failed_graph(engine, precision, tol, refs, f"engine raised {type(e).__name__}: {e}")
    return compare_graph(engine, precision, tol, outs, refs)


def validate_engines(runner: Runner, reference: Runner, inputs: Mapping[str, Tensors],
                     profile: Profile) -> ValidationReport:
    """Run each engine named in ``inputs`` (engine -> its input tensors) with ``runner(engine,
    feeds)`` and compare it with ``reference`` (the PyTorch modules, ``graphs.torch_runner``) at
    ``profile``'s tolerance ("fp32", "fp16", a ``Tolerance`` or a mapping engine -> either).
    Failures are logged with their reason; the report lists which engines may be used."""
    report = ValidationReport()
    for engine, feeds in inputs.items():
        check = check_engine(runner, reference, engine, feeds, profile)
        report.checks[engine] = check
        if check.passed:
            log.info("engine %s", check.line())
        else:
            log.warning("engine %s; it will not be used", check.line())
    return report


# --------------------------------------------------------------------------- the backend
def _require_cuda(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type != "cuda":
        raise TensorRTBackendError(f"TensorRTBackend runs on a CUDA device, not {device}")
    if not torch.cuda.is_available():
        raise TensorRTBackendError(
            "TensorRTBackend needs an NVIDIA GPU with CUDA, and torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}: a CPU-only build, or no usable driver); use the torch backend instead")
    return device


class TensorRTBackend:
    """``InferenceBackend`` on the engines in ``engine_dir`` (see the module docstring)."""

    def __init__(self, engine_dir: str | Path, device: torch.device | str = "cuda", *,
                 fallback: LivePortraitNetworks | None = None, validate: bool = True) -> None:
        self.device = _require_cuda(device)     # before anything else: the clearest error first
        self.engine_dir = Path(engine_dir)
        try:
            self.api = tensorrt_runtime.load()
        except TensorRTUnavailable as e:
            raise TensorRTBackendError(str(e)) from None
        records = read_engines_json(self.engine_dir)["engines"]
        if not records:
            raise TensorRTBackendError(f"no engines in {self.engine_dir / ENGINES_JSON}; build them with "
                                       f"`python -m export tensorrt --out {self.engine_dir}`")
        self.problems: dict[str, str] = {}     # engine -> why it is not used
        self.engines = self._load_engines(records)
        self.report: ValidationReport | None = None
        if fallback is not None:
            fallback = fallback.to(self.device)
            if validate:
                self._validate(fallback, records)
        else:
            log.info("TensorRT engines used without validation (no PyTorch networks given to compare with)")
        self._torch = torch_runner(fallback) if fallback is not None else None
        self._assign_roles()

    # ---------------------------------------------------------------- setup
    def _load_engines(self, records: Mapping[str, Mapping[str, Any]]) -> dict[str, TrtEngine]:
        runtime = self.api.runtime()
        self._runtime = runtime            # engines must not outlive their runtime
        engines = {}
        for name, rec in records.items():
            if name not in GRAPH_SPECS:      # one engine per graph of `python -m export onnx`
                continue
            start = time.perf_counter()
            try:
                engines[name] = TrtEngine(self.api, runtime, self.engine_dir / rec["file"], self.device)
            except (EngineLoadError, OSError) as e:
                self.problems[name] = str(e)
                log.warning("engine %s not used: %s", name, e)
                continue
            log.info("engine %s (%s) loaded in %.1f s", name, rec.get("precision", "?"), time.perf_counter() - start)
        return engines

    def _validate(self, nets: LivePortraitNetworks, records: Mapping[str, Mapping[str, Any]]) -> None:
        image = stand_in_image(self.device)
        inputs = {k: v for k, v in reference_inputs(nets, image).items() if k in self.engines}
        profile = {name: records[name].get("precision", "fp32") for name in inputs}
        self.report = validate_engines(self.run_engine, torch_runner(nets), inputs, profile)
        for name, reason in self.report.rejected.items():
            self.problems[name] = reason
            del self.engines[name]

    def _assign_roles(self) -> None:
        """Bind each graph once: to its engine, or to the PyTorch modules standing in for it."""
        missing = [e for e in GRAPH_SPECS if e not in self.engines]
        if missing and self._torch is None:
            details = "; ".join(f"{e}: {self.problems.get(e, 'not built')}" for e in missing)
            raise TensorRTBackendError(f"engines unusable and no PyTorch fallback given: {details}")
        self.fallbacks = missing
        self.name = self.api.flavour + (f"+torch({','.join(missing)})" if missing else "")
        self._run = {e: self._runner(e) for e in GRAPH_SPECS}
        self.stitching = self._mlp("stitching")
        self.eye = self._mlp("eye")
        self.lip = self._mlp("lip")

    def _runner(self, graph: str) -> Callable[[Tensors], dict[str, torch.Tensor]]:
        if graph in self.engines:
            engine = self.engines[graph]
            return lambda feeds: run_batched(engine, feeds)
        reference = self._torch
        assert reference is not None            # _assign_roles refuses missing engines without it
        return lambda feeds: reference(graph, feeds)

    def _mlp(self, graph: str) -> Callable[[torch.Tensor], torch.Tensor]:
        # looked up per call, as the other graphs are: close() rebinds ``_run``
        return lambda x: self._run[graph]({"x": x.to(self.device)})["y"]

    # ---------------------------------------------------------------- running
    def run_engine(self, engine: str, feeds: Tensors) -> dict[str, torch.Tensor]:
        """Run one loaded engine by name (validation uses this)."""
        return run_batched(self.engines[engine], {k: v.to(self.device) for k, v in feeds.items()})

    def appearance(self, image: torch.Tensor) -> torch.Tensor:
        return self._run["appearance_feature_extractor"]({"image": image.to(self.device)})["feature_3d"]

    def motion(self, image: torch.Tensor) -> motion.KeypointInfo:
        return motion.refine_motion_output(self._run["motion_extractor"]({"image": image.to(self.device)}))

    def render(self, feature: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        return self._run["warping_spade"]({"feature_3d": feature, "kp_source": x_s, "kp_driving": x_d})["image"]

    def close(self) -> None:
        """Release the engines (contexts, CUDA buffers), then their runtime, and drop the PyTorch
        modules standing in for rejected engines (idempotent); a later call raises RuntimeError."""
        engines, self.engines = self.engines, {}
        self._torch = None
        self._run = {e: _closed_runner(e) for e in GRAPH_SPECS}
        for engine in engines.values():
            engine.close()
        self._runtime = None                # after the engines: they must not outlive it


def _closed_runner(graph: str) -> Callable[[Tensors], dict[str, torch.Tensor]]:
    def run(feeds: Tensors) -> dict[str, torch.Tensor]:
        raise RuntimeError(f"TensorRT backend closed: {graph} cannot run")
    return run
