"""The parity kit's comparison, shared by every check of a converted network (ONNX graphs,
TensorRT engines): per output, norm_max = max|d| / max|ref| and rel_l2 = ||d|| / ||ref||, both
within the profile of the precision (the kit's ``check_parity.PROFILES``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    """The kit's metric in float64 (a reference of all zeros compares absolute errors).
    ``out`` and ``ref`` must have the same shape."""
    o, r = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    d = np.abs(o - r)
    amax, nr = float(np.abs(r).max()), float(np.linalg.norm(r))
    max_abs, dl2 = float(d.max()), float(np.linalg.norm(o - r))
    return ParityErrors(max_abs=max_abs, norm_max=max_abs / amax if amax > 0 else max_abs,
                        rel_l2=dl2 / nr if nr > 0 else dl2, finite=bool(np.isfinite(o).all()))
