"""Group photos made at test time from the kit's example portraits, side by side: s0 and s1 (two
faces), or s0, s1, s2 and s0 mirrored (four faces), each scaled to one height. The portraits are
read in place from the examples folder; nothing is copied into the repository."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

GROUP_HEIGHT = 512
PORTRAITS = {2: ("s0", "s1"), 4: ("s0", "s1", "s2", "s0 mirrored")}


def group_photo(examples: Path, faces: int, height: int = GROUP_HEIGHT) -> np.ndarray:
    """The portraits of ``PORTRAITS[faces]`` tiled left to right at ``height`` (H x W x 3 BGR)."""
    tiles = []
    for name in PORTRAITS[faces]:
        image = cv2.imread(str(examples / f"{name.split()[0]}.jpg"))
        if image is None:
            raise FileNotFoundError(examples / f"{name.split()[0]}.jpg")
        if name.endswith("mirrored"):
            image = image[:, ::-1]
        tiles.append(cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height),
                                interpolation=cv2.INTER_AREA))
    return np.ascontiguousarray(np.hstack(tiles))


def close_pair(examples: Path, side: int = 512, width: int = 300) -> np.ndarray:
    """s1 beside its mirror image, each cut to the central ``width`` columns: two faces so close that
    their crops overlap (where the regions' split shows, or would show a seam)."""
    image = cv2.imread(str(examples / "s1.jpg"))
    if image is None:
        raise FileNotFoundError(examples / "s1.jpg")
    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    half = image[:, (side - width) // 2:(side + width) // 2]
    return np.ascontiguousarray(np.hstack([half, half[:, ::-1]]))
