"""Appearance feature extractor F of LivePortrait.

A 256x256 RGB image is encoded by a small 2D CNN (stride 4), lifted to a 3D feature volume by
reshaping channels into (channels, depth), and refined by 3D residual blocks:

    B x 3 x 256 x 256  ->  B x 512 x 64 x 64  ->  B x 32 x 16 x 64 x 64
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks3d import DownBlock2d, ResBlock3d, SameBlock2d
from .shapes import check_shape

__all__ = ["AppearanceFeatureExtractor"]

INPUT_SIZE = 256


class AppearanceFeatureExtractor(nn.Module):
    """F: image in [0, 1] (no mean/std normalisation) -> 3D appearance feature volume f_s."""

    def __init__(
        self,
        image_channel: int = 3,
        block_expansion: int = 64,
        num_down_blocks: int = 2,
        max_features: int = 512,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
    ) -> None:
        super().__init__()
        if reshape_channel * reshape_depth != max_features:
            raise ValueError(f"reshape_channel*reshape_depth ({reshape_channel}*{reshape_depth}) "
                             f"must equal max_features ({max_features})")
        self.image_channel = image_channel
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth

        self.first = SameBlock2d(image_channel, block_expansion, kernel_size=3, padding=1)
        blocks = []
        width = block_expansion
        for i in range(num_down_blocks):
            out_width = min(max_features, block_expansion * (2 ** (i + 1)))
            blocks.append(DownBlock2d(min(max_features, block_expansion * (2 ** i)), out_width))
            width = out_width
        self.down_blocks = nn.ModuleList(blocks)
        # 1x1 projection to reshape_channel*reshape_depth channels; no norm/activation after it
        self.second = nn.Conv2d(width, max_features, kernel_size=1)
        # Sequential with names "3dr0".."3dr{n-1}", as in the checkpoint keys
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel, kernel_size=3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape("AppearanceFeatureExtractor input", x, (None, self.image_channel, INPUT_SIZE, INPUT_SIZE))
        out = self.first(x)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        b, _, h, w = out.shape
        # channel-major split: channel c*depth + d of the 2D map becomes (c, d) of the volume
        out = out.view(b, self.reshape_channel, self.reshape_depth, h, w)
        return self.resblocks_3d(out)
