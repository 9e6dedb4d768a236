"""Easing curves shared by the masks, the output background and the face-lost blends."""
from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Eased = TypeVar("Eased", float, np.ndarray, "torch.Tensor")


def smoothstep(x: Eased) -> Eased:
    """0 at and below 0, 1 at and above 1, ``3x^2 - 2x^3`` in between: an S-curve with no kink at
    either end. Elementwise on numpy arrays and torch tensors (dtype kept), or one float."""
    if isinstance(x, np.ndarray):
        t = np.clip(x, 0.0, 1.0)
    elif isinstance(x, float | int):
        t = min(1.0, max(0.0, x))
    else:                                   # a torch tensor (torch is not imported for the others)
        t = x.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
