"""Our own paste-back mask: the crop square with a soft, rounded border, so the pasted crop fades
into the avatar image without a visible seam."""
from __future__ import annotations

import numpy as np

from ..imaging.easing import smoothstep


def feathered_square_mask(size: int = 512, feather: int = 24, corner_radius: int | None = None,
                          channels: int = 3) -> np.ndarray:
    """uint8 mask (size x size x channels): 255 inside, easing to 0 over ``feather`` pixels at the
    border with a smoothstep profile, corners rounded by ``corner_radius`` (default: feather)."""
    if not 0 < feather < size // 2:
        raise ValueError(f"feather must be between 1 and {size // 2 - 1} px, got {feather}")
    radius = feather if corner_radius is None else corner_radius
    c = np.arange(size, dtype=np.float64) + 0.5
    # distance of every pixel centre to the border, with the corners rounded: distance to an
    # inner rectangle inset by `radius`, subtracted from `radius`
    dx = np.minimum(c, size - c)[None, :]
    dy = np.minimum(c, size - c)[:, None]
    inner_x = np.maximum(radius - dx, 0.0)
    inner_y = np.maximum(radius - dy, 0.0)
    dist = radius - np.sqrt(inner_x ** 2 + inner_y ** 2)
    dist = np.where((dx >= radius) | (dy >= radius), np.minimum(dx, dy), dist)
    weight = smoothstep(dist / feather)        # no visible kink at either end
    mask = np.round(weight * 255.0).astype(np.uint8)
    return np.repeat(mask[..., None], channels, axis=2) if channels > 1 else mask
