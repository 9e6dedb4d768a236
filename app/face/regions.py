"""Per-face regions of a group photo: a feathered split of the image between face centres.

Each animated face's crop is about 2.3 times its face, so neighbouring crops overlap and a later
paste would overwrite a face pasted before. Each face therefore gets its own region, multiplied
with its paste mask: region_i(p) in [0, 1], 1 around centre c_i, exactly 0 at (and well around)
every other centre, the regions summing to 1 everywhere (a smooth partition, so no seam shows).

The split is along the perpendicular bisector of each pair of centres, feathered with a smoothstep
over ``2 * feather * d_min`` pixels across it (``d_min``: the smallest distance between two
centres): face i's raw weight is the product over the other faces j of
``smoothstep(1/2 + s_ij / (2 w))``, with ``s_ij`` the signed distance of p from the bisector of
(c_i, c_j), positive on c_i's side, and ``w = feather * d_min``; the weights are then normalised.
The face whose centre is nearest to p has every factor >= 1/2, so the sum never vanishes. Pure
numpy; float64 inside, float32 out.
"""
from __future__ import annotations

import numpy as np

from ..imaging.easing import smoothstep

# half-width of the feathered band, as a fraction of the smallest distance between two centres:
# wide enough that no seam shows, narrow enough that a neighbour's inner face lies outside it
REGION_FEATHER = 0.15


def region_weights(points: np.ndarray, centres: np.ndarray, feather: float = REGION_FEATHER) -> np.ndarray:
    """The partition at ``points`` (... x 2, image pixels x, y) for face ``centres`` (K x 2):
    ... x K float64 weights in [0, 1] summing to 1 over K. One centre: all ones. Raises
    ``ValueError`` for fewer than one centre, two equal centres or a ``feather`` outside (0, 0.5)."""
    c = np.asarray(centres, np.float64).reshape(-1, 2)
    p = np.asarray(points, np.float64)
    if p.shape[-1] != 2:
        raise ValueError(f"region points: expected ...x2, got {'x'.join(map(str, p.shape))}")
    k = c.shape[0]
    if k == 0:
        raise ValueError("regions: expected at least one face centre")
    if k == 1:
        return np.ones(p.shape[:-1] + (1,), np.float64)
    if not 0.0 < feather < 0.5:
        raise ValueError(f"region feather: expected a fraction in (0, 0.5), got {feather}")
    gaps = np.linalg.norm(c[:, None] - c[None, :], axis=2)[~np.eye(k, dtype=bool)]
    if gaps.min() <= 1e-6:
        raise ValueError("regions: two faces share a centre")
    width = feather * gaps.min()
    raw = np.ones(p.shape[:-1] + (k,), np.float64)
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            axis = (c[i] - c[j]) / np.linalg.norm(c[i] - c[j])
            signed = (p - (c[i] + c[j]) / 2) @ axis
            raw[..., i] *= smoothstep(0.5 + signed / (2 * width))
    return raw / raw.sum(axis=-1, keepdims=True)


def region_in_box(centres: np.ndarray, index: int, box: tuple[int, int, int, int],
                  feather: float = REGION_FEATHER) -> np.ndarray:
    """Face ``index``'s region over the pixel centres of ``box`` (x0, y0, x1, y1; image pixels):
    (y1 - y0) x (x1 - x0) float32. Computed only in the box, where its paste mask is nonzero."""
    x0, y0, x1, y1 = box
    xs = np.arange(x0, x1, dtype=np.float64)
    ys = np.arange(y0, y1, dtype=np.float64)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)
    return region_weights(grid, centres, feather)[..., index].astype(np.float32)


def face_centre(landmarks: np.ndarray) -> np.ndarray:
    """A face's centre: the middle of its landmarks' bounding box (2, float64, image pixels)."""
    pts = np.asarray(landmarks, np.float64)[:, :2]
    return (pts.min(axis=0) + pts.max(axis=0)) / 2
