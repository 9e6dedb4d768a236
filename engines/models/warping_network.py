"""Warping module W of LivePortrait (with its dense motion network).

The dense motion network turns the implicit keypoints of source and driving into a dense 3D
backward flow (``deformation``, in grid_sample coordinates) and an occlusion map. W then warps
the source feature volume with that flow, flattens depth into channels and applies two 2D convs:

    f_s  B x 32 x 16 x 64 x 64,  kp  B x 21 x 3  ->  out  B x 256 x 64 x 64
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.grid_sample3d import grid_sample_3d_or_reference
from .blocks3d import Hourglass, SameBlock2d, kp2gaussian, make_coordinate_grid
from .shapes import check_shape

__all__ = ["DenseMotionNetwork", "WarpingNetwork", "DEFAULT_DENSE_MOTION_PARAMS"]

# official models.yaml -> warping_module_params.dense_motion_params
DEFAULT_DENSE_MOTION_PARAMS: Mapping[str, int] = {
    "block_expansion": 32,
    "max_features": 1024,
    "num_blocks": 5,
    "reshape_depth": 16,
    "compress": 4,
}

FEATURE_SIZE = 64      # H = W of the feature volume produced by F from a 256x256 image
KP_VARIANCE = 0.01     # variance of the keypoint Gaussians, in normalised grid units


class DenseMotionNetwork(nn.Module):
    """Predicts a soft assignment of every voxel to one of K+1 motions (identity + one per
    keypoint), blends them into a dense flow, and predicts an occlusion map."""

    def __init__(
        self,
        num_kp: int = 21,
        feature_channel: int = 32,
        block_expansion: int = 32,
        max_features: int = 1024,
        num_blocks: int = 5,
        reshape_depth: int = 16,
        compress: int = 4,
        estimate_occlusion_map: bool = True,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        # per motion: 1 heatmap channel + `compress` warped feature channels -> (K+1)*(compress+1) = 110
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        hg_out = self.hourglass.out_channels
        self.mask = nn.Conv3d(hg_out, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        # occlusion is a 2D conv over the hourglass output with depth folded into channels
        self.occlusion: nn.Conv2d | None = (
            nn.Conv2d(hg_out * reshape_depth, 1, kernel_size=7, padding=3) if estimate_occlusion_map else None
        )

    def _sparse_motions(self, d: int, h: int, w: int, kp_source: torch.Tensor,
                        kp_driving: torch.Tensor) -> torch.Tensor:
        """B x (K+1) x D x H x W x 3 sampling grids: identity, then grid - kp_driving_k + kp_source_k
        (zero-order motion only: the official model has no Jacobians)."""
        b = kp_source.shape[0]
        identity = make_coordinate_grid((d, h, w), kp_source).unsqueeze(0).unsqueeze(0)   # 1 x 1 x D x H x W x 3
        per_kp = (identity - kp_driving[:, :, None, None, None, :]) + kp_source[:, :, None, None, None, :]
        return torch.cat([identity.expand(b, 1, d, h, w, 3), per_kp], dim=1)

    def _deform(self, feature: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
        """Warp the (compressed) feature with each of the K+1 grids: B x (K+1) x C x D x H x W."""
        b, c, d, h, w = feature.shape
        k1 = motions.shape[1]
        feats = feature.unsqueeze(1).expand(b, k1, c, d, h, w).reshape(b * k1, c, d, h, w)
        grids = motions.reshape(b * k1, d, h, w, 3)
        # trilinear, zeros padding, align_corners=False (the official settings); our fused CUDA op
        # when enabled (engines.ops.grid_sample3d), ATen's grid_sample otherwise
        out = grid_sample_3d_or_reference(feats, grids)
        return out.view(b, k1, c, d, h, w)

    def _heatmaps(self, d: int, h: int, w: int, kp_source: torch.Tensor,
                  kp_driving: torch.Tensor) -> torch.Tensor:
        """B x (K+1) x 1 x D x H x W: G(kp_driving) - G(kp_source), with a zero background channel."""
        heat = kp2gaussian(kp_driving, (d, h, w), KP_VARIANCE) - kp2gaussian(kp_source, (d, h, w), KP_VARIANCE)
        background = torch.zeros_like(heat[:, :1])
        return torch.cat([background, heat], dim=1).unsqueeze(2)

    def forward(self, feature: torch.Tensor, kp_source: torch.Tensor,
                kp_driving: torch.Tensor) -> dict[str, torch.Tensor | None]:
        b, _, d, h, w = feature.shape
        feature = F.relu(self.norm(self.compress(feature)))

        motions = self._sparse_motions(d, h, w, kp_source, kp_driving)
        deformed = self._deform(feature, motions)
        heat = self._heatmaps(d, h, w, kp_source, kp_driving)
        # channels grouped per motion: [heatmap, warped feature channels] for motion 0, 1, ..., K
        x = torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w)

        prediction = self.hourglass(x)
        mask = F.softmax(self.mask(prediction), dim=1)                      # B x (K+1) x D x H x W
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)             # B x D x H x W x 3

        occlusion_map = None
        if self.occlusion is not None:
            pb, pc, pd, ph, pw = prediction.shape
            occlusion_map = torch.sigmoid(self.occlusion(prediction.reshape(pb, pc * pd, ph, pw)))
        return {"mask": mask, "deformation": deformation, "occlusion_map": occlusion_map}


class WarpingNetwork(nn.Module):
    """W: warp the source feature volume from source to driving keypoints and decode to 2D."""

    def __init__(
        self,
        num_kp: int = 21,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        estimate_occlusion_map: bool = True,
        dense_motion_params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        params = dict(DEFAULT_DENSE_MOTION_PARAMS if dense_motion_params is None else dense_motion_params)
        self.num_kp = num_kp
        self.reshape_channel = reshape_channel
        self.reshape_depth = int(params["reshape_depth"])
        if reshape_channel * self.reshape_depth != max_features:
            raise ValueError(f"reshape_channel*reshape_depth ({reshape_channel}*{self.reshape_depth}) "
                             f"must equal max_features ({max_features})")
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp, feature_channel=reshape_channel,
            estimate_occlusion_map=estimate_occlusion_map, **params)
        out_channels = block_expansion * (2 ** num_down_blocks)
        # LeakyReLU(0.01) here, unlike the ReLU blocks of F
        self.third = SameBlock2d(max_features, out_channels, kernel_size=3, padding=1, leaky=True)
        self.fourth = nn.Conv2d(out_channels, out_channels, kernel_size=1)

    def forward(self, feature_3d: torch.Tensor, kp_source: torch.Tensor,
                kp_driving: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Returns ``occlusion_map`` (B x 1 x 64 x 64, None if disabled), ``deformation``
        (B x 16 x 64 x 64 x 3, grid_sample coordinates) and ``out`` (B x 256 x 64 x 64)."""
        check_shape("WarpingNetwork feature_3d", feature_3d,
                    (None, self.reshape_channel, self.reshape_depth, FEATURE_SIZE, FEATURE_SIZE))
        b = feature_3d.shape[0]
        check_shape("WarpingNetwork kp_source", kp_source, (b, self.num_kp, 3))
        check_shape("WarpingNetwork kp_driving", kp_driving, (b, self.num_kp, 3))

        motion = self.dense_motion_network(feature_3d, kp_source=kp_source, kp_driving=kp_driving)
        deformation = motion["deformation"]
        occlusion_map = motion["occlusion_map"]

        warped = grid_sample_3d_or_reference(feature_3d, deformation)
        wb, wc, wd, wh, ww = warped.shape
        out = self.fourth(self.third(warped.reshape(wb, wc * wd, wh, ww)))
        if occlusion_map is not None:
            out = out * occlusion_map
        return {"occlusion_map": occlusion_map, "deformation": deformation, "out": out}
