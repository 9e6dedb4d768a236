"""Paste-back on the inference device (the GPU path keeps the whole frame there).

The avatar and its crop transform are fixed, so the image pixels that receive the crop (the paste
mask's box), where each of them samples the crop, and the avatar pixels under the box are all
computed once per avatar. A frame then costs one 2-D bilinear sample of the rendered crop into the
box and one blend; only the box travels to the host, where it is written into a copy of the avatar
image. The result equals ``crop.paste_back`` (OpenCV) within a grey level or two: OpenCV samples
on a 1/32-pixel lattice and rounds the blend, this samples exactly and truncates like the
official code.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..face.crop import PasteMask, transform_points


class DevicePasteBack:
    """``paste_back`` of crops rendered on ``device`` into one avatar image.

    ``__call__`` takes the crop as 3 x S x S planes with values 0..255 (uint8 or float, RGB, the
    renderer's channel order) and returns the box as 3 x h x w uint8 RGB planes on the device;
    ``compose`` puts the box, fetched to the host as h x w x 3 BGR, into a copy of the image."""

    def __init__(self, image: np.ndarray, M_c2o: np.ndarray, paste: PasteMask, crop_size: int,
                 device: torch.device | str) -> None:
        if paste.mask.shape[:2] != image.shape[:2]:
            raise ValueError(f"paste mask: expected {image.shape[0]}x{image.shape[1]} to match the image, "
                             f"got {paste.mask.shape[0]}x{paste.mask.shape[1]}")
        self.image = image
        self.box = paste.box
        self.device = torch.device(device)
        x0, y0, x1, y1 = self.box
        self.empty = x1 <= x0 or y1 <= y0
        if self.empty:
            return
        # image pixel (x, y) samples the crop at M_o2c (x, y, 1); grid_sample wants [-1, 1] with
        # align_corners=True (crop pixel centres 0 and S-1 at the ends), as cv2.warpAffine sees them
        M_o2c = np.linalg.inv(np.vstack([np.asarray(M_c2o, np.float64)[:2], [0.0, 0.0, 1.0]]))
        pixels = np.stack(np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64)), -1)
        grid = transform_points(pixels, M_o2c) * np.float32(2.0 / (crop_size - 1)) - np.float32(1.0)
        self.grid = torch.from_numpy(grid)[None].to(self.device)                           # 1 x h x w x 2
        mask = paste.mask[y0:y1, x0:x1].reshape(y1 - y0, x1 - x0, -1)[..., ::-1]            # BGR -> RGB order
        self.mask = torch.from_numpy(np.ascontiguousarray(mask)).permute(2, 0, 1)[None].to(self.device)
        under = image[y0:y1, x0:x1, ::-1].astype(np.float32)                                 # RGB
        self.under = torch.from_numpy(np.ascontiguousarray(under)).permute(2, 0, 1)[None].to(self.device)

    def __call__(self, crop: torch.Tensor) -> torch.Tensor:
        if self.empty:
            return torch.empty(3, 0, 0, dtype=torch.uint8, device=self.device)
        warped = F.grid_sample(crop[None].float(), self.grid, mode="bilinear", padding_mode="zeros",
                               align_corners=True)
        blended = torch.lerp(self.under, warped, self.mask)            # mask * warped + (1 - mask) * under
        return blended[0].clamp_(0, 255).to(torch.uint8)               # truncated, like the official code

    def compose(self, box: np.ndarray) -> np.ndarray:
        """A copy of the avatar image with ``box`` (h x w x 3 uint8, from ``__call__``) in place."""
        result = self.image.copy()
        if not self.empty:
            x0, y0, x1, y1 = self.box
            result[y0:y1, x0:x1] = box
        return result
