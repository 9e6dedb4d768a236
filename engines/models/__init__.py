"""The seven LivePortrait networks as plain ``nn.Module``s.

Each network lives in its own file and is constructed with the official configuration
(``src/config/models.yaml`` of the official code) by default. State-dict layouts match the
official checkpoint files key for key, so ``load_state_dict(strict=True)`` works on them.

``build(name)`` is the factory used by the parity kit and by our checkpoint loader.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .appearance_feature_extractor import AppearanceFeatureExtractor
from .motion_extractor import MotionExtractor
from .spade_generator import SPADEGenerator
from .stitching_retargeting import StitchingRetargetingMLP
from .warping_network import WarpingNetwork

NETWORK_NAMES: tuple[str, ...] = (
    "appearance_feature_extractor",
    "motion_extractor",
    "warping_module",
    "spade_generator",
    "retarget_shoulder",
    "retarget_mouth",
    "retarget_eye",
)


_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "appearance_feature_extractor": AppearanceFeatureExtractor,
    "motion_extractor": MotionExtractor,
    "warping_module": WarpingNetwork,
    "spade_generator": SPADEGenerator,
    "retarget_shoulder": StitchingRetargetingMLP.stitching,
    "retarget_mouth": StitchingRetargetingMLP.lip,
    "retarget_eye": StitchingRetargetingMLP.eye,
}


def build(name: str) -> nn.Module:
    """A freshly initialised network (official configuration) by its checkpoint name, in eval mode."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(NETWORK_NAMES)}") from None
    return builder().eval()
