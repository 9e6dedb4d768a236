"""``avatarcam::grid_sample_3d``: trilinear 5-D grid sampling as a PyTorch custom op.

Same result as ``F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros",
align_corners=False)`` for ``input`` N x C x D x H x W and ``grid`` N x Do x Ho x Wo x 3 (the last
axis is (x, y, z), indexing W, H, D), which is what the warping module W does with its flow.

Implementations, one per dispatch key:

- every device but CUDA: ``_reference_impl``, plain torch ops (8 corner gathers with explicit
  trilinear weights and zero padding), written independently of ATen's kernel so it can check it;
- CUDA: a Triton kernel (``_triton_grid_sample3d.py``, imported on first use) that computes
  coordinates and weights in fp32 and accumulates in fp32 even for fp16 features; without Triton,
  or for fp64, it falls back to ``F.grid_sample`` (with one logged warning when Triton is missing);
- fake/meta: shape propagation only, so torch.export / torch.compile can trace the op.

ONNX: the op maps to the standard ``GridSample`` node of opset 20 (the first opset whose GridSample
takes 5-D inputs): ``onnx_translation_table()`` for the default dynamo exporter and
``register_torchscript_onnx_symbolic()`` for the legacy TorchScript exporter (``dynamo=False``).
Gradients are not implemented: the op is for inference (export and the live renderer).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "ONNX_OPSET",
    "grid_sample_3d",
    "grid_sample_3d_or_reference",
    "set_custom_grid_sample",
    "custom_grid_sample_enabled",
    "use_custom_grid_sample",
    "onnx_translation_table",
    "register_torchscript_onnx_symbolic",
    "triton_available",
]

logger = logging.getLogger(__name__)

OP_NAME = "avatarcam::grid_sample_3d"
ONNX_OPSET = 20   # GridSample accepts N-D (here 5-D) input from opset 20 on; opset 16 was 4-D only
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# --------------------------------------------------------------------------- checks
def _check_args(input: torch.Tensor, grid: torch.Tensor) -> tuple[int, ...]:
    """Validate shapes and return the output shape N x C x Do x Ho x Wo."""
    if input.dim() != 5:
        raise ValueError(f"grid_sample_3d: input must be N x C x D x H x W, got {tuple(input.shape)}")
    if grid.dim() != 5 or grid.shape[-1] != 3 or grid.shape[0] != input.shape[0]:
        raise ValueError(f"grid_sample_3d: grid must be N x Do x Ho x Wo x 3 with N={input.shape[0]}, "
                         f"got {tuple(grid.shape)}")
    if not (input.is_floating_point() and grid.is_floating_point()):
        raise ValueError(f"grid_sample_3d: input and grid must be floating point, "
                         f"got {input.dtype} and {grid.dtype}")
    n, c = input.shape[:2]
    return (n, c, grid.shape[1], grid.shape[2], grid.shape[3])


def _compute_dtype(input: torch.Tensor, grid: torch.Tensor) -> torch.dtype:
    """fp32 at least (fp16 features get fp32 coordinates and sums), fp64 when either is fp64."""
    return torch.promote_types(torch.promote_types(input.dtype, grid.dtype), torch.float32)


# --------------------------------------------------------------------------- reference (CPU)
def _unnormalize(coord: torch.Tensor, size: int) -> torch.Tensor:
    """[-1, 1] -> voxel index space with align_corners=False (-1 and 1 are the outer faces of the
    edge voxels). Clamping to [-2, size + 1] changes no result (all corners stay outside) but keeps
    the later integer conversion finite for huge coordinates."""
    pos = ((coord + 1) * size - 1) / 2
    return pos.clamp(-2.0, size + 1.0)


Corner = tuple[torch.Tensor, torch.Tensor, torch.Tensor]   # (int64 index, weight, index in range)


def _axis_corners(pos: torch.Tensor, size: int) -> tuple[Corner, Corner]:
    """For one axis: the lower and the upper neighbouring voxel of each position."""
    lower = torch.floor(pos)
    frac = pos - lower
    index = lower.long()          # integer indices: float sums of indices are inexact past 2**24
    return ((index, 1 - frac, (index >= 0) & (index <= size - 1)),
            (index + 1, frac, (index >= -1) & (index <= size - 2)))


def _reference_impl(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    out_shape = _check_args(input, grid)
    n, c, d, h, w = input.shape
    compute = _compute_dtype(input, grid)
    if input.numel() == 0 or grid.numel() == 0:          # nothing to gather from, or nothing asked
        return input.new_zeros(out_shape)
    coords = grid.to(compute).reshape(n, -1, 3)                       # N x P x 3, P output voxels
    xs = _axis_corners(_unnormalize(coords[..., 0], w), w)
    ys = _axis_corners(_unnormalize(coords[..., 1], h), h)
    zs = _axis_corners(_unnormalize(coords[..., 2], d), d)
    # channels-last table: each corner read is one row of C contiguous features
    table = input.to(compute).permute(0, 2, 3, 4, 1).reshape(n * d * h * w, c)
    batch_row = (torch.arange(n, device=input.device) * (d * h * w)).unsqueeze(1)   # N x 1
    out = torch.zeros((n * coords.shape[1], c), dtype=compute, device=input.device)
    for zi, zw, zok in zs:
        for yi, yw, yok in ys:
            for xi, xw, xok in xs:
                inside = zok & yok & xok
                # zero padding: an outside corner gets weight 0 (and reads a dummy row)
                weight = torch.where(inside, zw * yw * xw, torch.zeros_like(xw))
                rows = torch.where(inside, batch_row + (zi * h + yi) * w + xi, torch.zeros_like(xi))
                out.addcmul_(table.index_select(0, rows.reshape(-1)), weight.reshape(-1, 1))
    # back to channels-first; contiguous like ATen's output (and the fake kernel's strides)
    return out.reshape(n, -1, c).permute(0, 2, 1).reshape(out_shape).to(input.dtype).contiguous()


def _native_impl(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """ATen's F.grid_sample in the compute dtype (it needs input and grid of one dtype)."""
    _check_args(input, grid)
    compute = _compute_dtype(input, grid)
    out = F.grid_sample(input.to(compute), grid.to(compute), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.to(input.dtype)


# --------------------------------------------------------------------------- the op
@torch.library.custom_op(OP_NAME, mutates_args=())
def grid_sample_3d(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False) for
    5-D input; this body is the kernel of every device without its own registration."""
    return _reference_impl(input, grid)


@grid_sample_3d.register_fake
def _fake_impl(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return input.new_empty(_check_args(input, grid))


# --------------------------------------------------------------------------- CUDA
class _TritonState:
    """Lazily loaded Triton launcher; ``None`` after a failed import or a failed first launch."""

    launcher: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    loaded: bool = False
    verified: bool = False


def _load_triton_launcher() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    if not _TritonState.loaded:
        _TritonState.loaded = True
        try:
            from ._triton_grid_sample3d import launch_grid_sample_3d
        except Exception as exc:  # noqa: BLE001 - a broken Triton install can raise more than ImportError
            logger.warning("grid_sample_3d: Triton is not available (%s: %s); CUDA falls back to "
                           "F.grid_sample", type(exc).__name__, exc)
        else:
            _TritonState.launcher = launch_grid_sample_3d
    return _TritonState.launcher


def triton_available() -> bool:
    """True when the CUDA kernel of the op is the Triton one (imports Triton on first call)."""
    return torch.cuda.is_available() and _load_triton_launcher() is not None


def _cuda_impl(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    _check_args(input, grid)
    launcher = _load_triton_launcher()
    if launcher is None or input.dtype not in _TRITON_DTYPES or grid.dtype == torch.float64:
        return _native_impl(input, grid)          # fp64 stays exact with ATen's fp64 kernel
    if _TritonState.verified:
        return launcher(input, grid)
    try:
        out = launcher(input, grid)
    except torch.cuda.OutOfMemoryError:
        raise                                     # not the kernel's fault: let the caller see it
    except Exception as exc:  # noqa: BLE001 - Triton's CompilationError is no RuntimeError
        # a Triton version that cannot compile the kernel must not stop the renderer
        logger.warning("grid_sample_3d: Triton kernel failed on first use (%s: %s); CUDA falls back "
                       "to F.grid_sample", type(exc).__name__, exc)
        _TritonState.launcher = None
        return _native_impl(input, grid)
    _TritonState.verified = True
    return out


def _register_cuda_kernel() -> None:
    # Without CUDA no CUDA tensor can reach the op; with it, Triton is imported on the first call.
    if torch.cuda.is_available():
        grid_sample_3d.register_kernel("cuda")(_cuda_impl)


_register_cuda_kernel()


# --------------------------------------------------------------------------- switch for W
_switch = threading.local()   # per thread: a renderer thread's choice does not leak into others


def set_custom_grid_sample(enabled: bool) -> bool:
    """Make ``grid_sample_3d_or_reference(..., use_custom=None)`` use the custom op in this thread;
    returns the previous setting."""
    previous = custom_grid_sample_enabled()
    _switch.enabled = bool(enabled)
    return previous


def custom_grid_sample_enabled() -> bool:
    return getattr(_switch, "enabled", False)


@contextlib.contextmanager
def use_custom_grid_sample(enabled: bool = True) -> Iterator[None]:
    """Context manager around ``set_custom_grid_sample`` that restores the previous setting."""
    previous = set_custom_grid_sample(enabled)
    try:
        yield
    finally:
        set_custom_grid_sample(previous)


def grid_sample_3d_or_reference(input: torch.Tensor, grid: torch.Tensor,
                                use_custom: bool | None = None) -> torch.Tensor:
    """The warp of W: the custom op when ``use_custom`` (``None``: the process-wide switch),
    else ATen's F.grid_sample with the official settings."""
    if custom_grid_sample_enabled() if use_custom is None else use_custom:
        return torch.ops.avatarcam.grid_sample_3d(input, grid)
    return F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------- ONNX
def _onnx_grid_sample_3d(input: Any, grid: Any) -> Any:
    """Dynamo exporter translation: the op is exactly ONNX GridSample (opset 20)."""
    from onnxscript import opset20 as op  # export-only package, needed only while exporting

    return op.GridSample(input, grid, mode="linear", padding_mode="zeros", align_corners=0)


def onnx_translation_table() -> dict[Callable, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True,
    opset_version=ONNX_OPSET)``."""
    return {torch.ops.avatarcam.grid_sample_3d.default: _onnx_grid_sample_3d}


def _torchscript_symbolic(g: Any, input: Any, grid: Any) -> Any:
    return g.op("GridSample", input, grid, mode_s="linear", padding_mode_s="zeros", align_corners_i=0)


def register_torchscript_onnx_symbolic() -> None:
    """For the legacy exporter (``dynamo=False, opset_version=ONNX_OPSET``); idempotent."""
    torch.onnx.register_custom_op_symbolic(OP_NAME, _torchscript_symbolic, ONNX_OPSET)
