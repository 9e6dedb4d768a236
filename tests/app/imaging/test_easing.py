"""The one smoothstep: the same curve on floats, numpy arrays and torch tensors."""
from __future__ import annotations

import numpy as np
import torch

from app.imaging.easing import smoothstep


def test_smoothstep_is_one_curve_on_floats_arrays_and_tensors() -> None:
    xs = np.linspace(-0.5, 1.5, 41)
    floats = np.array([smoothstep(float(x)) for x in xs])
    array = smoothstep(xs)
    tensor = smoothstep(torch.from_numpy(xs))
    assert array.dtype == np.float64 and tensor.dtype == torch.float64
    assert np.array_equal(floats, array) and np.array_equal(array, tensor.numpy())
    assert smoothstep(torch.tensor([0.5], dtype=torch.float32)).dtype == torch.float32
    # exactly 0 and 1 beyond the ends, symmetric about the middle, rising in between
    assert (array[xs <= 0] == 0).all() and (array[xs >= 1] == 1).all()
    assert smoothstep(0.5) == 0.5 and smoothstep(0.25) == 1 - smoothstep(0.75)
    assert (np.diff(array[(xs > 0) & (xs < 1)]) > 0).all()
