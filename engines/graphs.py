"""The graph contract: the graphs ``python -m export onnx`` writes, their exact inputs and outputs
(``GRAPH_SPECS``), and the PyTorch modules each graph stands for. Every part that handles exported
graphs or engines (the exporter, the TensorRT builder, both backends, their verification) takes the
names and shapes from here:

    appearance_feature_extractor   image 1x3x256x256 -> feature_3d 1x32x16x64x64
    motion_extractor               image -> pitch, yaw, roll 1x66, t 1x3, exp 1x63, scale 1x1, kp 1x63
    warping_spade                  feature_3d, kp_source 1x21x3, kp_driving 1x21x3 -> image 1x3x512x512
    stitching / lip / eye          x 1x126 / 1x65 / 1x66 -> y 1x65 / 1x63 / 1x63

All inputs and outputs are float32 with static shapes (batch 1). Each graph is a file
``<name>.onnx`` and, converted to fp16 with fp32 islands, ``<name>.fp16.onnx``; TensorRT engines
take the same names. The three MLPs (``MLP_GRAPHS``) always run in fp32: their outputs go straight
into the keypoint geometry.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from . import motion
from .checkpoints import LivePortraitNetworks
from .models.motion_extractor import OUTPUT_NAMES as MOTION_OUTPUTS

Tensors = Mapping[str, torch.Tensor]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: file stem and its named, static-shape float32 inputs and outputs."""

    name: str
    inputs: tuple[tuple[str, Shape], ...]
    outputs: tuple[tuple[str, Shape], ...]

    def file(self, precision: str = "fp32") -> str:
        return f"{self.name}.onnx" if precision == "fp32" else f"{self.name}.{precision}.onnx"

    @property
    def input_names(self) -> list[str]:
        return [n for n, _ in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [n for n, _ in self.outputs]


_K = motion.NUM_KP
_BINS = motion.NUM_BINS
_IMAGE = ("image", (1, 3, 256, 256))
GRAPH_SPECS: dict[str, GraphSpec] = {s.name: s for s in (
    GraphSpec("appearance_feature_extractor", (_IMAGE,), (("feature_3d", (1, 32, 16, 64, 64)),)),
    GraphSpec("motion_extractor", (_IMAGE,),
              (("pitch", (1, _BINS)), ("yaw", (1, _BINS)), ("roll", (1, _BINS)), ("t", (1, 3)),
               ("exp", (1, 3 * _K)), ("scale", (1, 1)), ("kp", (1, 3 * _K)))),
    GraphSpec("warping_spade",
              (("feature_3d", (1, 32, 16, 64, 64)), ("kp_source", (1, _K, 3)), ("kp_driving", (1, _K, 3))),
              (("image", (1, 3, 512, 512)),)),
    GraphSpec("stitching", (("x", (1, 6 * _K)),), (("y", (1, 3 * _K + 2)),)),
    GraphSpec("lip", (("x", (1, 3 * _K + 2)),), (("y", (1, 3 * _K)),)),
    GraphSpec("eye", (("x", (1, 3 * _K + 3)),), (("y", (1, 3 * _K)),)),
)}
MLP_GRAPHS = ("stitching", "lip", "eye")


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


@torch.inference_mode()
def run_module(graph: str, module: nn.Module, feeds: Tensors) -> dict[str, torch.Tensor]:
    """``module`` (the graph's PyTorch modules) on feeds named like the graph's inputs; outputs
    named like its outputs, in the module's own precision and on its device."""
    spec = GRAPH_SPECS[graph]
    out = module(*(feeds[name] for name in spec.input_names))
    outs = out if isinstance(out, tuple) else (out,)
    return dict(zip(spec.output_names, outs, strict=True))


def torch_runner(nets: LivePortraitNetworks) -> Callable[[str, Tensors], dict[str, torch.Tensor]]:
    """``run(graph, feeds)``: ``run_module`` on the graph's modules of ``nets``."""
    modules = graph_modules(nets)

    def run(graph: str, feeds: Tensors) -> dict[str, torch.Tensor]:
        if graph not in modules:
            raise ValueError(f"no PyTorch modules for graph {graph!r}")
        return run_module(graph, modules[graph], feeds)
    return run
