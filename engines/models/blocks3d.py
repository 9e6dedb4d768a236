"""Small building blocks shared by the appearance feature extractor (F) and the warping
module (W): conv+BN+activation blocks in 2D and 3D, the pre-activation 3D residual block,
the 3D hourglass, and the coordinate-grid / keypoint-heatmap helpers.

Attribute names (``conv``, ``norm``, ``conv1``, ``norm2``, ``down_blocks``, ``up_blocks`` ...)
are part of the checkpoint format: they give the state-dict keys of the official files.
All BatchNorms use the PyTorch defaults (eps 1e-5, momentum 0.1, affine).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SameBlock2d",
    "DownBlock2d",
    "DownBlock3d",
    "UpBlock3d",
    "ResBlock3d",
    "HourglassEncoder",
    "HourglassDecoder",
    "Hourglass",
    "make_coordinate_grid",
    "kp2gaussian",
]


# --------------------------------------------------------------------------- 2D blocks
class SameBlock2d(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU (or LeakyReLU(0.01)); keeps the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1,
                 leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_channels)
        # the official W block uses nn.LeakyReLU() with its default slope 0.01 (not 0.2)
        self.act = nn.LeakyReLU(0.01) if leaky else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU -> 2x2 average pooling (halves H and W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_channels)
        self.pool = nn.AvgPool2d(kernel_size=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


# --------------------------------------------------------------------------- 3D blocks
class DownBlock3d(nn.Module):
    """Conv3d -> BatchNorm3d -> ReLU -> average pooling over (H, W) only; depth is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm3d(out_channels)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock3d(nn.Module):
    """Nearest x2 upsampling of (H, W) (depth kept) -> Conv3d -> BatchNorm3d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nearest (F.interpolate's default mode), not trilinear: that is what the weights were trained with
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(bn2(conv1(relu(bn1(x))))))."""

    def __init__(self, channels: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        # registration order conv1, conv2, norm1, norm2 mirrors the checkpoint's key order
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


# --------------------------------------------------------------------------- hourglass
def _width(block_expansion: int, max_features: int, level: int) -> int:
    """Channel count at hourglass level ``level`` (level 0 = full resolution)."""
    return min(max_features, block_expansion * (2 ** level))


class HourglassEncoder(nn.Module):
    """``num_blocks`` DownBlock3d; returns the input and every intermediate output (for skips)."""

    def __init__(self, block_expansion: int, in_channels: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = in_channels if i == 0 else _width(block_expansion, max_features, i)
            blocks.append(DownBlock3d(cin, _width(block_expansion, max_features, i + 1)))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x]
        for block in self.down_blocks:
            feats.append(block(feats[-1]))
        return feats


class HourglassDecoder(nn.Module):
    """Mirror of the encoder: each UpBlock3d output is concatenated with the matching skip
    (the last skip is the hourglass input itself), then a final Conv3d+BN+ReLU."""

    def __init__(self, block_expansion: int, in_channels: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            # the deepest block sees only the bottleneck; the others see [upsampled, skip]
            mult = 1 if i == num_blocks - 1 else 2
            blocks.append(UpBlock3d(mult * _width(block_expansion, max_features, i + 1),
                                    _width(block_expansion, max_features, i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_channels = block_expansion + in_channels
        self.conv = nn.Conv3d(self.out_channels, self.out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        skips = list(feats)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3D U-Net that halves/doubles only H and W; output has ``block_expansion + in_channels`` channels."""

    def __init__(self, block_expansion: int, in_channels: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_channels, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_channels, num_blocks, max_features)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


# --------------------------------------------------------------------------- geometry helpers
def make_coordinate_grid(spatial_size: Sequence[int], ref: torch.Tensor) -> torch.Tensor:
    """D x H x W x 3 grid of normalised (x, y, z) coordinates in [-1, 1] ("right-down-in").

    The normalisation divides by (N - 1), i.e. the align_corners=True convention, while all
    grid_sample calls use align_corners=False. The half-texel mismatch is what the official
    weights were trained with, so it is reproduced on purpose.
    """
    d, h, w = (int(s) for s in spatial_size)
    opts = dict(dtype=ref.dtype, device=ref.device)
    x = 2 * (torch.arange(w, **opts) / (w - 1)) - 1
    y = 2 * (torch.arange(h, **opts) / (h - 1)) - 1
    z = 2 * (torch.arange(d, **opts) / (d - 1)) - 1
    xx = x.view(1, 1, w, 1).expand(d, h, w, 1)
    yy = y.view(1, h, 1, 1).expand(d, h, w, 1)
    zz = z.view(d, 1, 1, 1).expand(d, h, w, 1)
    return torch.cat([xx, yy, zz], dim=3)


def kp2gaussian(kp: torch.Tensor, spatial_size: Sequence[int], kp_variance: float) -> torch.Tensor:
    """Unnormalised isotropic Gaussian around each keypoint: B x K x 3 -> B x K x D x H x W."""
    grid = make_coordinate_grid(spatial_size, kp)                   # D x H x W x 3
    diff = grid.unsqueeze(0).unsqueeze(0) - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / kp_variance)
