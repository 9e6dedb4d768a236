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
import math
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
from .tolerances import PROFILES, Tolerance, parity_errors

log = logging.getLogger(__name__)

Tensors = Mapping[str, torch.Tensor]
Runner = Callable[[str, Tensors], Tensors]
ReferenceFn = Callable[[str, Tensors], Tensors]


# Tolerance profiles by the precision an engine was built in: the parity kit's (engines/tolerances.py).
Profile = str | Tolerance | Mapping[str, str | Tolerance]


class TensorRTBackendError(RuntimeError):
    """The TensorRT backend cannot be used here (no GPU, no TensorRT, no usable engines)."""


# --------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class OutputCheck:
    name: str
    norm_max: float
    rel_l2: float
    finite: bool
    passed: bool


@dataclass(frozen=True)
class EngineCheck:
    engine: str
    tolerance: Tolerance
    passed: bool
    reason: str                 # why it failed, "" when it passed
    outputs: tuple[OutputCheck, ...] = ()

    def line(self) -> str:
        worst = max(self.outputs, key=lambda o: o.norm_max / self.tolerance.norm_max, default=None)
        detail = (f" (worst {worst.name}: norm_max {worst.norm_max:.2e}, rel_l2 {worst.rel_l2:.2e}; "
                  f"tol {self.tolerance.norm_max:g} / {self.tolerance.rel_l2:g})" if worst else "")
        return f"{self.engine}: {'PASS' if self.passed else 'FAIL: ' + self.reason}{detail}"


@dataclass
class ValidationReport:
    checks: dict[str, EngineCheck] = field(default_factory=dict)

    @property
    def accepted(self) -> list[str]:
        return [n for n, c in self.checks.items() if c.passed]

    @property
    def rejected(self) -> dict[str, str]:
        return {n: c.reason for n, c in self.checks.items() if not c.passed}

    def __str__(self) -> str:
        return "\n".join(c.line() for c in self.checks.values())


def compare_output(name: str, out: torch.Tensor, ref: torch.Tensor, tol: Tolerance) -> OutputCheck:
    """The parity kit's metric in float64 (a reference of all zeros compares absolute errors)."""
    o = out.detach().to("cpu", torch.float64).reshape(ref.shape).numpy()
    e = parity_errors(o, ref.detach().to("cpu", torch.float64).numpy())
    return OutputCheck(name, e.norm_max if e.finite else math.inf, e.rel_l2 if e.finite else math.inf, e.finite,
                       e.within(tol))


def _tolerance(profile: Profile, engine: str) -> Tolerance:
    if isinstance(profile, Mapping):
        profile = profile[engine]
    if isinstance(profile, Tolerance):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown tolerance profile {profile!r}; expected one of {', '.join(PROFILES)}") from None


def _as_runner(backend_or_runner: Any) -> Runner:
    run = getattr(backend_or_runner, "run_engine", None)
    return run if callable(run) else backend_or_runner


def check_engine(runner: Runner, reference_fn: ReferenceFn, engine: str, feeds: Tensors,
                 tol: Tolerance) -> EngineCheck:
    """Run one engine and its reference on ``feeds`` and compare every reference output."""
    try:
        outs = runner(engine, feeds)
    except Exception as e:  # noqa: BLE001 - any failure of the engine means "do not use it"
        return EngineCheck(engine, tol, False, f"engine raised {type(e).__name__}: {e}")
    ref = reference_fn(engine, feeds)
    missing = sorted(set(ref) - set(outs))
    if missing:
        return EngineCheck(engine, tol, False, f"missing outputs {', '.join(missing)}")
    wrong = [f"{k} {tuple(outs[k].shape)} != {tuple(r.shape)}" for k, r in ref.items() if outs[k].numel() != r.numel()]
    if wrong:
        return EngineCheck(engine, tol, False, "wrong output shapes " + ", ".join(wrong))
    checks = tuple(compare_output(k, outs[k], r, tol) for k, r in ref.items())
    failed = [c for c in checks if not c.passed]
    if not failed:
        return EngineCheck(engine, tol, True, "", checks)
    reason = "; ".join(f"{c.name} not finite" if not c.finite else
                       f"{c.name} norm_max {c.norm_max:.2e} (tol {tol.norm_max:g}), "
                       f"rel_l2 {c.rel_l2:.2e} (tol {tol.rel_l2:g})" for c in failed)
    return EngineCheck(engine, tol, False, "differs from PyTorch: " + reason, checks)


def validate_engines(backend_or_runner: Any, reference_fn: ReferenceFn, inputs: Mapping[str, Tensors],
                     profile: Profile) -> ValidationReport:
    """Run each engine named in ``inputs`` (engine -> its input tensors) and compare it with
    ``reference_fn`` (the PyTorch modules) at ``profile``'s tolerance ("fp32", "fp16", a
    ``Tolerance`` or a mapping engine -> either). ``backend_or_runner`` is a ``TensorRTBackend``
    (its ``run_engine``) or any callable ``(engine, inputs) -> outputs``. Failures are logged
    with their reason; the report lists which engines may be used."""
    runner = _as_runner(backend_or_runner)
    report = ValidationReport()
    for engine, feeds in inputs.items():
        check = check_engine(runner, reference_fn, engine, feeds, _tolerance(profile, engine))
        report.checks[engine] = check
        if check.passed:
            log.info("engine %s", check.line())
        else:
            log.warning("engine %s; it will not be used", check.line())
    return report


def torch_reference(nets: LivePortraitNetworks) -> ReferenceFn:
    """The PyTorch modules as a reference function with the engines' input and output names."""
    return torch_runner(nets)


@torch.inference_mode()
def reference_inputs(nets: LivePortraitNetworks, device: torch.device | str,
                     seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Deterministic inputs for every engine, realistic where it matters: the renderer gets F's
    feature volume and M's keypoints of the same image (with a small driving offset)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, 256, 256, generator=g).to(device)
    feature = nets.appearance(image)
    x_s = motion.keypoints_from_info(motion.refine_motion_output(nets.motion(image)))
    x_d = x_s + 0.02 * torch.randn(x_s.shape, generator=g).to(device)

    def mlp_input(width: int) -> torch.Tensor:
        # flattened source keypoints, then the ratios / driving keypoints the MLP also takes
        extra = torch.rand(1, width - x_s[0].numel(), generator=g).to(device) * 0.4
        return torch.cat([x_s.reshape(1, -1), extra], dim=1)

    return {
        "appearance_feature_extractor": {"image": image},
        "motion_extractor": {"image": image},
        "warping_spade": {"feature_3d": feature, "kp_source": x_s, "kp_driving": x_d},
        "stitching": {"x": torch.cat([x_s.reshape(1, -1), x_d.reshape(1, -1)], dim=1)},
        "lip": {"x": mlp_input(nets.lip.input_size)},
        "eye": {"x": mlp_input(nets.eye.input_size)},
    }


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
        inputs = {k: v for k, v in reference_inputs(nets, self.device).items() if k in self.engines}
        profile = {name: records[name].get("precision", "fp32") for name in inputs}
        self.report = validate_engines(self, torch_reference(nets), inputs, profile)
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
        return lambda feeds: reference(graph, feeds)          # type: ignore[misc] - checked above

    def _mlp(self, graph: str) -> Callable[[torch.Tensor], torch.Tensor]:
        run = self._run[graph]
        return lambda x: run({"x": x.to(self.device)})["y"]

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
