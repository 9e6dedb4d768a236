"""Input-shape checks shared by the networks: a wrong shape is a clear ``ValueError``, not a
cryptic error from deep inside a convolution."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def check_shape(what: str, x: torch.Tensor, expected: Sequence[int | None]) -> None:
    """Raise ``ValueError`` unless ``x`` has ``len(expected)`` dims matching ``expected``
    (``None`` matches any size, typically the batch)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    shape = tuple(x.shape)
    ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape, strict=False))
    if not ok:
        want = "x".join("B" if e is None else str(e) for e in expected)
        raise ValueError(f"{what}: expected shape {want}, got {'x'.join(map(str, shape)) or 'scalar'}")
