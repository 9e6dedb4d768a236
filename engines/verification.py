"""Checking a converted graph (ONNX graph, TensorRT engine) against its PyTorch modules: one path
for the exporter and the TensorRT backend.

``reference_inputs`` builds every graph's inputs from the networks and one image;
``compare_graph`` compares a graph's outputs with the PyTorch outputs on those inputs and returns a
``GraphCheck`` of per-output ``OutputCheck`` records (``failed_graph`` records a graph that could
not be run). The metric is the parity kit's: per output, norm_max = max|d| / max|ref| and
rel_l2 = ||d|| / ||ref|| in float64 (a reference of all zeros compares absolute errors), both
within the profile of the precision (the kit's ``check_parity.PROFILES``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import motion
from .checkpoints import LivePortraitNetworks

PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"


@dataclass(frozen=True)
class Tolerance:
    norm_max: float
    rel_l2: float


PROFILES: dict[str, Tolerance] = {"fp32": Tolerance(1e-4, 5e-5), "fp16": Tolerance(3e-2, 2e-2)}


@dataclass(frozen=True)
class ParityErrors:
    max_abs: float
    norm_max: float
    rel_l2: float
    finite: bool

    def within(self, tol: Tolerance) -> bool:
        return self.finite and self.norm_max <= tol.norm_max and self.rel_l2 <= tol.rel_l2


def parity_errors(out: np.ndarray, ref: np.ndarray) -> ParityErrors:
    """The kit's metric in float64. ``out`` and ``ref`` must have the same shape."""
    o, r = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    d = np.abs(o - r)
    amax, nr = float(np.abs(r).max()), float(np.linalg.norm(r))
    max_abs, dl2 = float(d.max()), float(np.linalg.norm(o - r))
    return ParityErrors(max_abs=max_abs, norm_max=max_abs / amax if amax > 0 else max_abs,
                        rel_l2=dl2 / nr if nr > 0 else dl2, finite=bool(np.isfinite(o).all()))


def _float64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, np.float64)


@dataclass(frozen=True)
class OutputCheck:
    """One output of one graph against the PyTorch fp32 reference. ``precision`` is the graph's
    (naming its tolerance profile); ``reason`` says why it failed or was skipped when the figures
    alone do not ("" otherwise); the figures are NaN when the output could not be compared."""

    graph: str
    output: str
    precision: str
    status: str                       # PASS, FAIL or SKIPPED
    max_abs: float = float("nan")
    norm_max: float = float("nan")
    rel_l2: float = float("nan")
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def line(self) -> str:
        head = f"{self.graph:<29} {self.precision:<4} {self.output:<10}"
        if math.isnan(self.max_abs):
            return f"{head} {self.status}: {self.reason}"
        return (f"{head} max_abs={self.max_abs:.3e} norm_max={self.norm_max:.3e} rel_l2={self.rel_l2:.3e} "
                f"{self.status}" + (f" ({self.reason})" if self.reason else ""))


@dataclass(frozen=True)
class GraphCheck:
    """Every output of one graph; ``reason`` says why the graph failed or was skipped ("" when it
    passed)."""

    graph: str
    precision: str
    tolerance: Tolerance
    outputs: tuple[OutputCheck, ...]
    reason: str = ""

    @property
    def status(self) -> str:
        statuses = {o.status for o in self.outputs}
        if FAIL in statuses or not statuses:
            return FAIL
        return SKIPPED if SKIPPED in statuses else PASS

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def line(self) -> str:
        tol = self.tolerance
        compared = [o for o in self.outputs if math.isfinite(o.norm_max)]
        worst = max(compared, key=lambda o: o.norm_max / tol.norm_max, default=None)
        detail = (f" (worst {worst.output}: norm_max {worst.norm_max:.2e}, rel_l2 {worst.rel_l2:.2e}; "
                  f"tol {tol.norm_max:g} / {tol.rel_l2:g})" if worst else "")
        return f"{self.graph}: {self.status}" + (f": {self.reason}" if self.reason else "") + detail


def compare_output(graph: str, output: str, precision: str, out: Any, ref: Any, tol: Tolerance) -> OutputCheck:
    """``out`` against ``ref`` (numpy arrays or torch tensors of the same shape) with the kit's
    metric and criterion."""
    o, r = _float64(out), _float64(ref)
    if o.shape != r.shape:
        return OutputCheck(graph, output, precision, FAIL, reason=f"shape {o.shape} != {r.shape}")
    e = parity_errors(o, r)
    return OutputCheck(graph, output, precision, PASS if e.within(tol) else FAIL, e.max_abs, e.norm_max, e.rel_l2,
                       "" if e.finite else "not finite")


def failed_graph(graph: str, precision: str, tol: Tolerance, outputs: Iterable[str], reason: str,
                 status: str = FAIL) -> GraphCheck:
    """A graph that could not be run or compared: every output ``status`` with ``reason``."""
    return GraphCheck(graph, precision, tol,
                      tuple(OutputCheck(graph, name, precision, status, reason=reason) for name in outputs), reason)


def compare_graph(graph: str, precision: str, tol: Tolerance, outs: Mapping[str, Any],
                  refs: Mapping[str, Any]) -> GraphCheck:
    """Every output named in ``refs`` (the PyTorch outputs) against ``outs`` (the graph's)."""
    missing = sorted(set(refs) - set(outs))
    if missing:
        return failed_graph(graph, precision, tol, refs, f"missing outputs {', '.join(missing)}")
    wrong = [f"{k} {tuple(outs[k].shape)} != {tuple(r.shape)}" for k, r in refs.items()
             if tuple(outs[k].shape) != tuple(r.shape)]
    if wrong:
        return failed_graph(graph, precision, tol, refs, "wrong output shapes " + ", ".join(wrong))
    checks = tuple(compare_output(graph, k, precision, outs[k], r, tol) for k, r in refs.items())
    failed = [c for c in checks if c.status == FAIL]
    reason = "differs from PyTorch: " + "; ".join(
        f"{c.output} {c.reason}" if c.reason else
        f"{c.output} norm_max {c.norm_max:.2e} (tol {tol.norm_max:g}), rel_l2 {c.rel_l2:.2e} (tol {tol.rel_l2:g})"
        for c in failed) if failed else ""
    return GraphCheck(graph, precision, tol, checks, reason)


def stand_in_image(device: torch.device | str, seed: int = 0) -> torch.Tensor:
    """A deterministic 1x3x256x256 image in [0, 1] on ``device``, for ``reference_inputs`` where no
    face crop is at hand."""
    return torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(seed)).to(device)


@torch.inference_mode()
def reference_inputs(nets: LivePortraitNetworks, image: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """Inputs per graph (named as in ``GRAPH_SPECS``), as the app produces them, on ``image``'s
    device: ``image`` (1x3x256x256 RGB in [0, 1]) for F and M; F's feature volume, the source
    keypoints x_s and a driving set x_d (the same face turned by a few degrees, with some
    expression) for W+G; [x_s, x_d] for S and x_s with eye / lip ratios for R_eyes / R_lip."""
    feature = nets.appearance(image)
    info = motion.refine_motion_output(nets.motion(image))
    x_s = motion.keypoints_from_info(info)
    rot = motion.rotation_matrix(info.pitch + 6.0, info.yaw - 12.0, info.roll + 4.0)
    x_d = motion.transform_keypoints(info.kp, rot, info.exp * 1.2, info.scale, info.t)
    flat_s, flat_d = x_s.reshape(1, -1), x_d.reshape(1, -1)

    def with_ratios(*ratios: float) -> torch.Tensor:
        return torch.cat([flat_s, torch.tensor([ratios], dtype=flat_s.dtype, device=flat_s.device)], dim=1)

    return {
        "appearance_feature_extractor": {"image": image},
        "motion_extractor": {"image": image},
        "warping_spade": {"feature_3d": feature, "kp_source": x_s, "kp_driving": x_d},
        "stitching": {"x": torch.cat([flat_s, flat_d], dim=1)},
        "lip": {"x": with_ratios(0.12, 0.0)},
        "eye": {"x": with_ratios(0.31, 0.30, 0.05)},
    }
