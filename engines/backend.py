"""Inference backends behind one small interface.

The live app needs four things from the networks, and nothing else:

* ``appearance(image)``: F, once per avatar -> feature volume;
* ``motion(image)``: M on a face crop -> refined ``KeypointInfo``;
* ``stitching`` / ``eye`` / ``lip``: the three MLPs as callables on flat inputs;
* ``render(feature, x_s, x_d)``: W then G -> the animated 512x512 crop.

Images go in as B x 3 x 256 x 256 float tensors in [0, 1] (RGB) on ``backend.device``; the
rendered crop comes back the same way at 512. ``close()`` releases what the backend holds.
``TorchBackend`` runs our PyTorch modules; ``StubBackend`` is a cheap stand-in for threading tests
and benchmarks of everything around the networks (its render is an identity warp of the avatar
crop). ``InferenceBackend`` says which calls may come from several threads at once.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Protocol

import torch
import torch.nn.functional as F

from . import motion
from .checkpoints import LivePortraitNetworks
from .models.shapes import check_shape
from .mps import describe_fallback
from .ops.grid_sample3d import use_custom_grid_sample

log = logging.getLogger(__name__)


class InferenceBackend(Protocol):
    """What the app uses of the networks (see the module docstring).

    Threads: ``appearance``, ``motion``, ``render`` and the three MLPs may be called from several
    threads at once, and every backend must allow it. In the app, the live loop's animation thread
    calls ``motion``, the MLPs and ``render`` while a worker thread prepares an avatar
    (``appearance``, ``motion``, ``lip``); on the render server, each session's worker thread calls
    all but ``render`` on the one shared backend while the batching thread calls ``render``. State
    that calls share is guarded by the backend (``TorchBackend``'s CUDA graphs and each TensorRT
    engine take turns on a lock); eager PyTorch modules and ONNX Runtime sessions may be shared.

    ``close()`` releases what the backend holds (CUDA graphs, ONNX Runtime sessions, TensorRT
    engines and their buffers); it is idempotent, and its owner (whoever made the backend) calls it
    once the backend is no longer used. No call may follow it; one still in flight on another
    thread (a server replica shutting down does not wait for its sessions) completes or raises
    ``RuntimeError``."""

    @property
    def name(self) -> str: ...
    @property
    def device(self) -> torch.device: ...

    def appearance(self, image: torch.Tensor) -> torch.Tensor: ...
    def motion(self, image: torch.Tensor) -> motion.KeypointInfo: ...
    def render(self, feature: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor: ...

    # the MLPs, called positionally (often passed around as plain callables)
    def stitching(self, x: torch.Tensor, /) -> torch.Tensor: ...
    def eye(self, x: torch.Tensor, /) -> torch.Tensor: ...
    def lip(self, x: torch.Tensor, /) -> torch.Tensor: ...

    def close(self) -> None: ...


class TorchBackend:
    """The PyTorch modules on one device, inference mode.

    On CUDA: ``precision="fp16"`` runs F, M, W and G under autocast (the official GPU default; the
    MLPs stay fp32), and by default each of our optimisations is on: the 2-D networks use
    channels-last memory (``channels_last``), W's 3-D warps use our fused grid-sample
    (``fused_grid_sample``), and W+G run as a captured CUDA graph, and so does M on the one-crop
    batch of the live loop (``cuda_graphs``; fixed shapes: one launch each per frame instead of
    hundreds of kernels). ``compile`` also runs M and W+G through ``torch.compile`` (off by
    default). With all four off, this is the official configuration. The options change nothing
    on other devices. The backend changes ``nets`` in place (device, memory format)."""

    def __init__(self, nets: LivePortraitNetworks, device: torch.device | str = "cpu", *,
                 precision: str = "fp32", cuda_graphs: bool = True, channels_last: bool = True,
                 fused_grid_sample: bool = True, compile: bool = False) -> None:
        self.device = torch.device(device)
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision: expected fp32 or fp16, got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device (CPU half kernels are missing or slow)")
        self.precision = precision
        self.nets = nets.to(self.device)
        self.name = f"torch-{self.device.type}" + ("-fp16" if precision == "fp16" else "")
        cuda = self.device.type == "cuda"
        if self.device.type == "mps":
            log.info("%s: %s", self.name, describe_fallback(os.environ))
        self.channels_last = channels_last and cuda
        if self.channels_last:
            for net in (self.nets.generator, self.nets.motion, self.nets.appearance):
                # Module.to takes memory_format at run time; torch's overloads do not list it
                net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.fused_grid_sample = fused_grid_sample and cuda
        self.compile = compile and cuda
        self._motion_fn = torch.compile(self._motion_eager, dynamic=False) if self.compile else self._motion_eager
        self._render_fn = torch.compile(self._render_eager, dynamic=False) if self.compile else self._render_eager
        self.cuda_graphs = cuda_graphs and cuda
        self._motion_graph: _CudaGraph | None = None
        self._render_graph: _CudaGraph | None = None
        self.stitching = self._no_grad(self.nets.stitching)
        self.eye = self._no_grad(self.nets.eye)
        self.lip = self._no_grad(self.nets.lip)
        if self.cuda_graphs:
            self._capture_graphs()

    @staticmethod
    def _no_grad(net: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        def call(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return net(x)
        return call

    def _autocast(self) -> torch.autocast:
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16", cache_enabled=False)

    @torch.inference_mode()
    def appearance(self, image: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.nets.appearance(image.to(self.device)).float()

    @torch.inference_mode()
    def _capture_graphs(self) -> None:
        """Capture M and W+G now, on inputs of the live loop's shapes, while no other thread uses
        the GPU (a capture fails if another thread queues work meanwhile, as an avatar being
        prepared would)."""
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(0)
        image = torch.rand(1, 3, 256, 256, generator=g).to(self.device)
        feature = self.appearance(image)
        kp = (torch.rand(1, motion.NUM_KP, 3, generator=g) - 0.5).to(self.device)
        self._motion_graph = _CudaGraph(self._motion_fn, image)
        self._render_graph = _CudaGraph(self._render_fn, feature, kp, kp * 0.9)
        log.info("%s: M and W+G captured as CUDA graphs in %.1f s", self.name, time.perf_counter() - t0)

    @torch.inference_mode()
    def motion(self, image: torch.Tensor) -> motion.KeypointInfo:
        image = image.to(self.device)
        if self._motion_graph is not None and image.shape == self._motion_graph.inputs[0].shape:
            return motion.KeypointInfo(*self._motion_graph(image))
        return motion.KeypointInfo(*self._motion_fn(image))

    def _motion_eager(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self._autocast():
            raw = self.nets.motion(image)
        info = motion.refine_motion_output({k: v.float() for k, v in raw.items()})
        return tuple(getattr(info, f.name) for f in fields(info))

    @torch.inference_mode()
    def render(self, feature: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        graph = self._render_graph
        if graph is not None and [t.shape for t in (feature, x_s, x_d)] == [t.shape for t in graph.inputs]:
            return graph(feature, x_s, x_d)[0]
        return self._render_fn(feature, x_s, x_d)[0]

    def _render_eager(self, feature: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> tuple[torch.Tensor]:
        # the fused grid-sample keeps fp32 coordinates even under fp16
        with self._autocast(), use_custom_grid_sample(self.fused_grid_sample):
            warped = self.nets.warping(feature, kp_source=x_s, kp_driving=x_d)
            return (self.nets.generator(warped["out"]).float(),)

    def close(self) -> None:
        """Release the CUDA graphs (their static buffers and memory pools). The networks stay:
        they are the caller's, and go with the last reference to them."""
        graphs = (self._motion_graph, self._render_graph)
        self._motion_graph = self._render_graph = None
        for graph in graphs:
            if graph is not None:
                graph.close()


class _CudaGraph:
    """A function of fixed-shape tensors captured once as a CUDA graph on static input buffers
    (M on the driving crop; W+G). Each call copies the inputs in (the feature volume too: a cheap
    device copy, and no stale-avatar risk), replays, and returns copies of the
    outputs, so a caller may keep them across frames. Calls from several threads (the live loop
    and an avatar being prepared) take turns: they share the static buffers."""

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, ...]], *example: torch.Tensor) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self.inputs = [t.detach().clone() for t in example]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):                  # warm-up outside the graph (allocator, cuDNN choice)
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self._lock:
            if self._closed:
                raise RuntimeError("CUDA graph used after its backend was closed")
            for buffer, value in zip(self.inputs, inputs, strict=True):
                buffer.copy_(value)
            self.graph.replay()
            return tuple(out.clone() for out in self.outputs)

    def close(self) -> None:
        """Free the graph and its outputs' pool; a replay in flight finishes first (the lock)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.graph.reset()
                self.outputs = ()


class StubBackend:
    """Stand-in with the backend's shapes and no real networks: ``appearance`` keeps the avatar
    crop, ``render`` returns it at 512 (identity warp), ``motion`` derives a plausible pose from the
    crop's brightness moments and the MLPs return zeros. Microseconds instead of seconds, so tests
    and benchmarks can exercise everything around the networks (on any device)."""

    name = "stub"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        g = torch.Generator().manual_seed(0)
        self._kp = ((torch.rand(1, motion.NUM_KP, 3, generator=g) - 0.5) * 0.6).to(self.device)
        self._ys = torch.linspace(-1, 1, 32, device=self.device).view(1, 32, 1)
        self._xs = torch.linspace(-1, 1, 32, device=self.device).view(1, 1, 32)

    def appearance(self, image: torch.Tensor) -> torch.Tensor:
        check_shape("image", image, (None, 3, 256, 256))
        # the "feature" is the crop itself, upsampled once so that render is free
        return F.interpolate(image.to(self.device), size=(512, 512), mode="nearest")

    def motion(self, image: torch.Tensor) -> motion.KeypointInfo:
        check_shape("image", image, (None, 3, 256, 256))
        b = image.shape[0]
        gray = image.to(self.device)[:, :, 4::8, 4::8].mean(dim=1)     # every 8th pixel: 32 x 32 is plenty
        mass = gray.sum(dim=(1, 2)).clamp_min(1e-6)
        cx = (gray * self._xs).sum(dim=(1, 2)) / mass
        cy = (gray * self._ys).sum(dim=(1, 2)) / mass
        z = torch.zeros(b, 1, device=self.device)
        return motion.KeypointInfo(pitch=(cy * 30).view(b, 1), yaw=(cx * 30).view(b, 1), roll=z,
                                   t=torch.cat([cx.view(b, 1) * 0.1, cy.view(b, 1) * 0.1, z], dim=1),
                                   exp=torch.zeros(b, motion.NUM_KP, 3, device=self.device), scale=z + 1.5,
                                   kp=self._kp.expand(b, -1, -1).clone())

    def render(self, feature: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        return feature

    @staticmethod
    def stitching(x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 3 * motion.NUM_KP + 2)

    @staticmethod
    def eye(x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 3 * motion.NUM_KP)

    @staticmethod
    def lip(x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 3 * motion.NUM_KP)

    def close(self) -> None:
        """Nothing to release: a few small tensors."""
