"""Stitching (S) and retargeting (R_lip, R_eye) networks: small ReLU MLPs.

The official checkpoint ``stitching_retargeting_module.pth`` holds three state dicts
(``retarget_shoulder`` -> S, ``retarget_mouth`` -> R_lip, ``retarget_eye`` -> R_eye) whose keys
carry a DDP ``module.`` prefix; ``strip_ddp_prefix`` removes it the way the official loader does.
Linear layers sit at ``mlp.0, mlp.2, ...`` with a ReLU at every odd index.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
from torch import nn

from .shapes import check_shape

_T = TypeVar("_T")


def strip_ddp_prefix(state_dict: Mapping[str, _T]) -> dict[str, _T]:
    """Remove every occurrence of ``'module.'`` from the keys (not only a leading one), exactly
    like the official ``remove_ddp_dumplicate_key``; keys without it pass through unchanged.
    Key order is preserved."""
    return {key.replace("module.", ""): value for key, value in state_dict.items()}


class StitchingRetargetingMLP(nn.Module):
    """``input_size -> hidden_sizes... -> output_size`` with ReLU between the Linear layers."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_sizes = tuple(hidden_sizes)
        self.output_size = output_size
        sizes = (input_size, *self.hidden_sizes, output_size)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
            if i > 0:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(fan_in, fan_out))
        self.mlp = nn.Sequential(*layers)

    @classmethod
    def stitching(cls) -> StitchingRetargetingMLP:
        """S: [x_s, x_d] flattened (2 x 63) -> 63 keypoint offsets + (tx, ty)."""
        return cls(126, (128, 128, 64), 65)

    @classmethod
    def lip(cls) -> StitchingRetargetingMLP:
        """R_lip: x_s flattened (63) + [c_s_lip, c_d_lip] -> 63 keypoint offsets."""
        return cls(65, (128, 128, 64), 63)

    @classmethod
    def eye(cls) -> StitchingRetargetingMLP:
        """R_eye: x_s flattened (63) + [c_s_left, c_s_right, c_d_eye] -> 63 keypoint offsets."""
        return cls(66, (256, 256, 128, 128, 64), 63)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape("StitchingRetargetingMLP input", x, (None, self.input_size))
        return self.mlp(x)
