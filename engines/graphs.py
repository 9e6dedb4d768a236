"""The PyTorch side of each exported graph: which modules a graph name stands for, and running
them by the graph's input and output names. The ONNX exporter exports these modules; the TensorRT
backend validates its engines against them and runs them in place of any engine it cannot use."""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from .backend_onnx import GRAPH_SPECS
from .checkpoints import LivePortraitNetworks
from .models.motion_extractor import OUTPUT_NAMES as MOTION_OUTPUTS

Tensors = Mapping[str, torch.Tensor]


class MotionGraph(nn.Module):
    """M with its dict output as a tuple in the graph's output order."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.m(image)
        return tuple(out[k] for k in MOTION_OUTPUTS)


class RenderGraph(nn.Module):
    """W then G, as ``TorchBackend.render`` runs them."""

    def __init__(self, w: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.w, self.g = w, g

    def forward(self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        return self.g(self.w(feature_3d, kp_source=kp_source, kp_driving=kp_driving)["out"])


def graph_modules(nets: LivePortraitNetworks) -> dict[str, nn.Module]:
    """Graph name -> the module exported as that graph (eval mode)."""
    mods = {
        "appearance_feature_extractor": nets.appearance,
        "motion_extractor": MotionGraph(nets.motion),
        "warping_spade": RenderGraph(nets.warping, nets.generator),
        "stitching": nets.stitching,
        "lip": nets.lip,
        "eye": nets.eye,
    }
    if set(mods) != set(GRAPH_SPECS):
        raise AssertionError("graph_modules and GRAPH_SPECS disagree")
    return {k: m.eval() for k, m in mods.items()}


def torch_runner(nets: LivePortraitNetworks) -> Callable[[str, Tensors], dict[str, torch.Tensor]]:
    """``run(graph, feeds)``: the graph's PyTorch modules on feeds named like the graph's inputs,
    outputs named like its outputs (inference mode, the modules' own precision and device)."""
    modules = graph_modules(nets)

    @torch.inference_mode()
    def run(graph: str, feeds: Tensors) -> dict[str, torch.Tensor]:
        if graph not in modules:
            raise ValueError(f"no PyTorch modules for graph {graph!r}")
        spec = GRAPH_SPECS[graph]
        out = modules[graph](*(feeds[name] for name in spec.input_names))
        outs = out if isinstance(out, tuple) else (out,)
        return dict(zip(spec.output_names, outs, strict=True))
    return run
