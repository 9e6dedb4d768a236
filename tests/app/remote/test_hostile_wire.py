"""Hostile clients of the render server (issue 21's security review, the wire): numbers that break
float conversion, time steps that break the smoothing, sessions that hold their slot without
working, clients that never read their answers or flood, and JPEGs that take long to decode. Over
real WebSockets on loopback (``render_server.running``, the stub backend, no Ray)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from app.face.smoothing import OneEuroFilter
from app.remote import protocol as p

AVATAR = np.full(p.CROP_SHAPE, 120, np.uint8)
CROP = np.full(p.DRIVING_SHAPE, 90, np.uint8)
HUGE = 10 ** 400            # a JSON integer hundreds of digits long: beyond float range


# -- 2. time steps ------------------------------------------------------------------------------
@pytest.mark.parametrize("step", [1e-300, 1e-9, 0.0, -1.0, -1e300, 1e300, math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_no_time_step_makes_the_one_euro_filter_non_finite(step, kind):
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    if kind == "torch":         # as the animator uses it: float32 on the device, per-element cutoffs
        f.min_cutoff = torch.tensor([1.0, 2.0, math.inf])
        sample = lambda k: torch.tensor([0.1 * k, 1.0, -0.5 * k], dtype=torch.float32)   # noqa: E731
    else:
        f.min_cutoff = np.array([1.0, 2.0, np.inf])
        sample = lambda k: np.array([0.1 * k, 1.0, -0.5 * k])                            # noqa: E731
    f(sample(0), 0.0)
    f(sample(1), step)                 # from t = 0: a step of 1e-300 is not lost to rounding
    outs = [f(sample(k), k / 25) for k in range(2, 30)]
    for out in outs:
        assert bool(np.isfinite(np.asarray(out)).all()), (step, out)
    # and it still follows the signal (the last element passes through: an infinite cutoff), unless
    # the step went far ahead: later times are then older, and the state stays as it was
    if step > 1e6:
        return
    assert float(outs[-1][2]) == pytest.approx(-0.5 * 29) and float(outs[-1][0]) > float(outs[0][0])
