"""Hostile clients of the render server (issue 21's security review, the wire): numbers that break
float conversion, time steps that break the smoothing, sessions that hold their slot without
working, clients that never read their answers or flood, and JPEGs that take long to decode. Over
real WebSockets on loopback (``render_server.running``, the stub backend, no Ray)."""
from __future__ import annotations

import math

import cv2
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


# -- 6. JPEGs that take long to decode ----------------------------------------------------------
def progressive_jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    return data.tobytes()


def with_extra_scans(jpeg: bytes, copies: int) -> bytes:
    """The JPEG with its last scan (a refinement: its start-of-scan segment and entropy-coded
    data, up to the end-of-image marker) repeated ``copies`` more times: still decodable."""
    last = jpeg.rindex(b"\xff\xda")
    assert jpeg.endswith(b"\xff\xd9")
    scan = jpeg[last:-2]
    return jpeg[:-2] + scan * copies + b"\xff\xd9"


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding_and_a_normal_one_decodes():
    img = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, p.DRIVING_SHAPE, np.uint8), (5, 5), 0)
    normal = progressive_jpeg(img)
    assert p.decode_image(normal, "jpeg", p.DRIVING_SHAPE).shape == p.DRIVING_SHAPE
    hostile = with_extra_scans(normal, 300)
    assert cv2.imdecode(np.frombuffer(hostile, np.uint8), cv2.IMREAD_COLOR) is not None   # libjpeg would take it
    with pytest.raises(p.ProtocolError, match="scans"):
        p.decode_image(hostile, "jpeg", p.DRIVING_SHAPE)
    assert 1 < p.jpeg_scans(normal) <= p.MAX_JPEG_SCANS
    assert p.jpeg_scans(p.encode_image(img, "jpeg")) == 1                # baseline
