"""The seven LivePortrait networks as plain ``nn.Module``s.

Each network lives in its own file and is constructed with the official configuration
(``src/config/models.yaml`` of the official code) by default. State-dict layouts match the
official checkpoint files key for key, so ``load_state_dict(strict=True)`` works on them.

``build(name)`` is the factory used by the parity kit and by our checkpoint loader.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

NETWORK_NAMES: tuple[str, ...] = (
    "appearance_feature_extractor",
    "motion_extractor",
    "warping_module",
    "spade_generator",
    "retarget_shoulder",
    "retarget_mouth",
    "retarget_eye",
)


def _appearance_feature_extractor() -> nn.Module:
    from .appearance_feature_extractor import AppearanceFeatureExtractor
    return AppearanceFeatureExtractor()


def _motion_extractor() -> nn.Module:
    from .motion_extractor import MotionExtractor
    return MotionExtractor()


def _warping_module() -> nn.Module:
    from .warping_network import WarpingNetwork
    return WarpingNetwork()


def _spade_generator() -> nn.Module:
    from .spade_generator import SPADEGenerator
    return SPADEGenerator()


def _retarget_shoulder() -> nn.Module:
    from .stitching_retargeting import StitchingRetargetingMLP
    return StitchingRetargetingMLP.stitching()


def _retarget_mouth() -> nn.Module:
    from .stitching_retargeting import StitchingRetargetingMLP
    return StitchingRetargetingMLP.lip()


def _retarget_eye() -> nn.Module:
    from .stitching_retargeting import StitchingRetargetingMLP
    return StitchingRetargetingMLP.eye()


_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "appearance_feature_extractor": _appearance_feature_extractor,
    "motion_extractor": _motion_extractor,
    "warping_module": _warping_module,
    "spade_generator": _spade_generator,
    "retarget_shoulder": _retarget_shoulder,
    "retarget_mouth": _retarget_mouth,
    "retarget_eye": _retarget_eye,
}


def build(name: str) -> nn.Module:
    """A freshly initialised network (official configuration) by its checkpoint name, in eval mode."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(NETWORK_NAMES)}") from None
    return builder().eval()
