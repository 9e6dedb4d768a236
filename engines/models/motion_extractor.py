"""Motion extractor M: a ConvNeXt-V2-Tiny backbone with seven linear heads.

From one 256x256 RGB face crop it predicts the canonical implicit keypoints ``kp``, the head
pose as 66-bin logits (``pitch``, ``yaw``, ``roll``), the translation ``t``, the expression
offsets ``exp`` and the ``scale``. Parameter names match the official checkpoint
``motion_extractor.pth`` (everything lives under ``detector.``), so it loads with
``load_state_dict(strict=True)``.

Numerics follow the official network: exact (erf) GELU, LayerNorm eps 1e-6 with a
hand-written channels-first variant (biased variance, eps inside the square root), GRN with a
1e-6 guard, and no mean/std normalisation of the input.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .shapes import check_shape

OUTPUT_NAMES: tuple[str, ...] = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor.

    Written out by hand (rather than permuting and calling ``F.layer_norm``) because that is
    how the checkpoint was trained: biased variance, ``eps`` added before the square root."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class LayerNormLast(nn.Module):
    """LayerNorm over the last axis (channels-last tensors)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.num_channels,), self.weight, self.bias, self.eps)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN on a channels-last tensor (B, H, W, C).

    Each channel's spatial L2 norm is divided by the mean of those norms over the channels;
    the result rescales the input, and a residual keeps the identity path."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        # (1, 1, 1, C) to broadcast over channels-last tensors, as stored in the checkpoint
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, num_channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + self.eps)
        return self.gamma * (x * n) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Depthwise 7x7 conv -> LN -> Linear(4x) -> GELU -> GRN -> Linear, plus the residual.

    The pointwise layers are ``nn.Linear`` on channels-last data (checkpoint stores 2-D weights)."""

    def __init__(self, dim: int, mlp_ratio: int = 4, ln_eps: float = 1e-6) -> None:
        super().__init__()
        hidden = mlp_ratio * dim
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNormLast(dim, eps=ln_eps)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf form; the tanh approximation is measurably off
        self.grn = GlobalResponseNorm(hidden)
        self.pwconv2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2Detector(nn.Module):
    """ConvNeXt-V2 trunk, global average pool, final LayerNorm and the LivePortrait heads."""

    def __init__(
        self,
        in_channels: int,
        depths: Sequence[int],
        dims: Sequence[int],
        num_kp: int,
        num_bins: int,
        ln_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"depths {tuple(depths)} and dims {tuple(dims)} must have the same length")
        # stem: 4x4 patchify conv then LN; later stages: LN then 2x2 stride-2 conv
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4),
            LayerNorm2d(dims[0], eps=ln_eps),
        ))
        for i in range(len(dims) - 1):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(dims[i], eps=ln_eps),
                nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
            ))
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtV2Block(dim, ln_eps=ln_eps) for _ in range(depth)])
            for depth, dim in zip(depths, dims, strict=False)
        )
        width = dims[-1]
        self.norm = nn.LayerNorm(width, eps=ln_eps)
        # registration order of the heads matters only for the state-dict order (kept as official)
        self.fc_kp = nn.Linear(width, 3 * num_kp)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, num_bins)
        self.fc_yaw = nn.Linear(width, num_bins)
        self.fc_roll = nn.Linear(width, num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, 3 * num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages, strict=False):
            x = stage(down(x))
        f = self.norm(x.mean(dim=(-2, -1)))
        return {
            "pitch": self.fc_pitch(f),
            "yaw": self.fc_yaw(f),
            "roll": self.fc_roll(f),
            "t": self.fc_t(f),
            "exp": self.fc_exp(f),
            "scale": self.fc_scale(f),
            "kp": self.fc_kp(f),
        }


class MotionExtractor(nn.Module):
    """LivePortrait motion extractor M (official config: ConvNeXt-V2-Tiny, 21 keypoints, 66 bins).

    ``forward(x)`` takes B x 3 x 256 x 256 RGB in [0, 1] (no normalisation) and returns a dict
    with ``pitch``, ``yaw``, ``roll`` (B x num_bins logits), ``t`` (B x 3), ``exp`` (B x 3K),
    ``scale`` (B x 1, raw) and ``kp`` (B x 3K)."""

    def __init__(
        self,
        num_kp: int = 21,
        num_bins: int = 66,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        in_channels: int = 3,
        image_size: int = 256,
        ln_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.num_bins = num_bins
        self.in_channels = in_channels
        self.image_size = image_size
        self.detector = ConvNeXtV2Detector(in_channels, depths, dims, num_kp, num_bins, ln_eps)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_shape("MotionExtractor input", x, (None, self.in_channels, self.image_size, self.image_size))
        return self.detector(x)
