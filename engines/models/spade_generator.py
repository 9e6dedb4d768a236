"""SPADE generator G: decodes the warped 256 x 64 x 64 feature into a 512 x 512 RGB image.

Layout (official config): 3x3 conv 256->512, six SPADE residual blocks at 64x64, nearest x2,
SPADE block 512->256, nearest x2, SPADE block 256->64, LeakyReLU(0.2), 3x3 conv 64->12,
PixelShuffle(2), sigmoid. Every SPADE layer is conditioned on the generator *input* itself,
resized with nearest-neighbour to the current resolution.

The convs inside the residual blocks are spectral-normalised. The official checkpoint stores
them in the layout of the legacy ``torch.nn.utils.spectral_norm`` (``weight_orig``,
``weight_u``, ``weight_v``; no ``weight``), which ``SpectralNormConv2d`` reproduces.
``remap_new_style_spectral_norm_keys`` converts checkpoints saved with the newer
``torch.nn.utils.parametrizations.spectral_norm`` to that layout.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .shapes import check_shape

_T = TypeVar("_T")

# new-style parametrization suffix -> legacy suffix
_NEW_TO_LEGACY_SN: tuple[tuple[str, str], ...] = (
    (".parametrizations.weight.original", ".weight_orig"),
    (".parametrizations.weight.0._u", ".weight_u"),
    (".parametrizations.weight.0._v", ".weight_v"),
)


def remap_new_style_spectral_norm_keys(state_dict: Mapping[str, _T]) -> dict[str, _T]:
    """Rename ``<conv>.parametrizations.weight.{original,0._u,0._v}`` (keys written by
    ``torch.nn.utils.parametrizations.spectral_norm``) to the legacy ``<conv>.weight_orig /
    weight_u / weight_v``. Other keys, and already-legacy checkpoints, pass through unchanged;
    order is preserved. Both conventions hold the same u, v and W, so outputs are identical."""
    out: dict[str, _T] = {}
    for key, value in state_dict.items():
        for new, legacy in _NEW_TO_LEGACY_SN:
            # ".x" suffix inside a model, or the bare name for a state dict of the conv itself
            if key.endswith(new) or key == new[1:]:
                key = key[: len(key) - len(new) + 1] + legacy[1:]
                break
        out[key] = value
    return out


class SpectralNormConv2d(nn.Module):
    """Conv2d whose weight is ``weight_orig / sigma``, ``sigma = u . (W_mat v)``.

    Eval-only semantics of the legacy spectral norm: the stored ``weight_u`` / ``weight_v``
    are used as they are (no power iteration, no re-normalisation), so a checkpoint gives the
    same numbers as the official module. Registration order (bias, weight_orig, weight_u,
    weight_v) matches the state-dict order of the legacy hook."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.padding = padding
        self.dilation = dilation
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.weight_orig = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.register_buffer("weight_u", torch.empty(out_channels))
        self.register_buffer("weight_v", torch.empty(in_channels * kernel_size * kernel_size))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, power_iterations: int = 15) -> None:
        # same weight/bias init as nn.Conv2d; u, v from a few power iterations so that a fresh
        # module already divides by (about) the largest singular value
        w = self.weight_orig
        nn.init.kaiming_uniform_(w, a=5 ** 0.5)
        if self.bias is not None:
            bound = 1.0 / (w[0].numel() ** 0.5)
            nn.init.uniform_(self.bias, -bound, bound)
        w_mat = w.reshape(w.shape[0], -1)
        u = F.normalize(torch.randn_like(self.weight_u), dim=0, eps=1e-12)
        v = F.normalize(torch.randn_like(self.weight_v), dim=0, eps=1e-12)
        for _ in range(power_iterations):
            v = F.normalize(torch.mv(w_mat.t(), u), dim=0, eps=1e-12)
            u = F.normalize(torch.mv(w_mat, v), dim=0, eps=1e-12)
        self.weight_u.copy_(u)
        self.weight_v.copy_(v)

    def weight(self) -> torch.Tensor:
        """The effective (normalised) conv weight."""
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        return w / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding, dilation=self.dilation)


class SPADE(nn.Module):
    """Spatially-adaptive denormalisation: instance-norm ``x`` (no affine), then modulate it
    with per-pixel (1 + gamma) and beta predicted from the segmentation/feature map."""

    def __init__(self, norm_channels: int, label_channels: int, hidden: int = 128, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_channels, hidden, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.mlp_gamma = nn.Conv2d(hidden, norm_channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=self.eps)
        # nearest, not bilinear: the trained weights expect blocky conditioning maps
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResBlock(nn.Module):
    """Pre-activation residual block: SPADE -> LeakyReLU(0.2) -> SN-conv, twice; the shortcut
    is SPADE -> SN 1x1 conv (no activation, no bias) when the channel count changes."""

    def __init__(self, fin: int, fout: int, label_channels: int, spade_hidden: int = 128) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = SpectralNormConv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmiddle, fout, kernel_size=3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, kernel_size=1, bias=False)
        self.norm_0 = SPADE(fin, label_channels, spade_hidden)
        self.norm_1 = SPADE(fmiddle, label_channels, spade_hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_channels, spade_hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx


class SPADEGenerator(nn.Module):
    """LivePortrait decoder G (official ``SPADEDecoder`` with upscale 2, block_expansion 64,
    max_features 512, num_down_blocks 2).

    ``forward(feature)`` takes B x C x S x S (C = 256, S = 64 by default) and returns the image
    B x 3 x (4 * upscale * S) x (4 * upscale * S) in [0, 1]."""

    def __init__(
        self,
        upscale: int = 2,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        out_channels: int = 64,
        num_middle_blocks: int = 6,
        spade_hidden: int = 128,
        feature_size: int = 64,
    ) -> None:
        super().__init__()
        # channel count of the warped feature (the official code derives it the same way)
        in_ch = min(max_features, block_expansion * 2 ** num_down_blocks)
        self.in_channels = in_ch
        self.feature_size = feature_size
        self.upscale = upscale
        self.fc = nn.Conv2d(in_ch, 2 * in_ch, kernel_size=3, padding=1)
        self.num_middle_blocks = num_middle_blocks
        for i in range(num_middle_blocks):
            self.add_module(f"G_middle_{i}", SPADEResBlock(2 * in_ch, 2 * in_ch, in_ch, spade_hidden))
        self.up_0 = SPADEResBlock(2 * in_ch, in_ch, in_ch, spade_hidden)
        self.up_1 = SPADEResBlock(in_ch, out_channels, in_ch, spade_hidden)
        if upscale > 1:
            # sub-pixel conv for the final x upscale (keys conv_img.0.*)
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * upscale * upscale, kernel_size=3, padding=1),
                nn.PixelShuffle(upscale),
            )
        else:
            self.conv_img = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        check_shape("SPADEGenerator feature", feature,
                    (None, self.in_channels, self.feature_size, self.feature_size))
        seg = feature
        x = self.fc(feature)
        for i in range(self.num_middle_blocks):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.up_0(x, seg)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.up_1(x, seg)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.sigmoid(x)
