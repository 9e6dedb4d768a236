"""Triton kernel of ``avatarcam::grid_sample_3d`` (CUDA). Imported only on first use by
``grid_sample3d.py``: Triton ships with CUDA builds of torch only.

One program handles a block of output voxels of one batch item and a group of channels: it loads
the block's coordinates once, computes the 8 corner offsets, in-range masks and trilinear weights
in fp32, then loops over its channels, gathering 8 values per voxel and accumulating in fp32.
Nothing but the output is allocated. Splitting the channels into groups gives enough programs
to fill the GPU for the real shape (1 x 32 x 16 x 64 x 64, 65536 output voxels).
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

__all__ = ["launch_grid_sample_3d"]

BLOCK_VOXELS = 128          # output voxels per program (one per thread with 4 warps)
MAX_CHANNELS_PER_PROGRAM = 8   # 32 channels -> 4 programs per voxel block
NUM_WARPS = 4


def _channels_per_program(channels: int) -> int:
    """The largest power of two <= MAX_CHANNELS_PER_PROGRAM dividing ``channels``: every program
    then has a full channel group and the loop needs no channel mask."""
    group = MAX_CHANNELS_PER_PROGRAM
    while channels % group:
        group //= 2
    return group


@triton.jit
def _unnormalize(coord, size_f):
    # align_corners=False; the clamp keeps every outside corner outside and the int cast finite
    pos = ((coord + 1.0) * size_f - 1.0) * 0.5
    return tl.minimum(tl.maximum(pos, -2.0), size_f + 1.0)


@triton.jit
def _grid_sample_3d_kernel(
    inp_ptr, grid_ptr, out_ptr,
    C, D, H, W, P,                      # P = Do * Ho * Wo output voxels per batch item; CPG divides C
    D_f, H_f, W_f,                      # the sizes as floats for the coordinate maths
    BLOCK: tl.constexpr, CPG: tl.constexpr,
):
    pid_p = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    c_start = tl.program_id(2) * CPG

    offs = pid_p * BLOCK + tl.arange(0, BLOCK)
    live = offs < P
    g = grid_ptr + (n * P + offs) * 3
    x = _unnormalize(tl.load(g, mask=live, other=0.0).to(tl.float32), W_f)
    y = _unnormalize(tl.load(g + 1, mask=live, other=0.0).to(tl.float32), H_f)
    z = _unnormalize(tl.load(g + 2, mask=live, other=0.0).to(tl.float32), D_f)

    x0f = tl.floor(x)
    y0f = tl.floor(y)
    z0f = tl.floor(z)
    fx = x - x0f
    fy = y - y0f
    fz = z - z0f
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    z0 = z0f.to(tl.int32)

    # per-axis range checks of the lower (0) and upper (1) neighbour
    mx0 = (x0 >= 0) & (x0 < W)
    mx1 = (x0 >= -1) & (x0 < W - 1)
    my0 = (y0 >= 0) & (y0 < H)
    my1 = (y0 >= -1) & (y0 < H - 1)
    mz0 = (z0 >= 0) & (z0 < D) & live
    mz1 = (z0 >= -1) & (z0 < D - 1) & live

    wx0 = 1.0 - fx
    wy0 = 1.0 - fy
    wz0 = 1.0 - fz

    # corner offsets inside one channel (D*H*W < 2**31 per channel)
    o000 = (z0 * H + y0) * W + x0
    o001 = o000 + 1
    o010 = o000 + W
    o011 = o010 + 1
    o100 = o000 + H * W
    o101 = o100 + 1
    o110 = o100 + W
    o111 = o110 + 1

    m000 = mz0 & my0 & mx0
    m001 = mz0 & my0 & mx1
    m010 = mz0 & my1 & mx0
    m011 = mz0 & my1 & mx1
    m100 = mz1 & my0 & mx0
    m101 = mz1 & my0 & mx1
    m110 = mz1 & my1 & mx0
    m111 = mz1 & my1 & mx1

    w000 = wz0 * wy0 * wx0
    w001 = wz0 * wy0 * fx
    w010 = wz0 * fy * wx0
    w011 = wz0 * fy * fx
    w100 = fz * wy0 * wx0
    w101 = fz * wy0 * fx
    w110 = fz * fy * wx0
    w111 = fz * fy * fx

    dhw = D * H * W
    src = inp_ptr + (n * C + c_start) * dhw          # int64 base: batch * channels may be large
    dst = out_ptr + (n * C + c_start) * P + offs
    for _ in range(CPG):
        acc = tl.load(src + o000, mask=m000, other=0.0).to(tl.float32) * w000
        acc += tl.load(src + o001, mask=m001, other=0.0).to(tl.float32) * w001
        acc += tl.load(src + o010, mask=m010, other=0.0).to(tl.float32) * w010
        acc += tl.load(src + o011, mask=m011, other=0.0).to(tl.float32) * w011
        acc += tl.load(src + o100, mask=m100, other=0.0).to(tl.float32) * w100
        acc += tl.load(src + o101, mask=m101, other=0.0).to(tl.float32) * w101
        acc += tl.load(src + o110, mask=m110, other=0.0).to(tl.float32) * w110
        acc += tl.load(src + o111, mask=m111, other=0.0).to(tl.float32) * w111
        tl.store(dst, acc.to(out_ptr.dtype.element_ty), mask=live)
        src += dhw
        dst += P


def launch_grid_sample_3d(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Run the kernel; ``input`` fp16/bf16/fp32, ``grid`` any float dtype (read as fp32).
    Shapes are validated by the caller."""
    n, c, d, h, w = input.shape
    do, ho, wo = grid.shape[1:4]
    out = torch.empty((n, c, do, ho, wo), dtype=input.dtype, device=input.device)
    p = do * ho * wo
    if out.numel() == 0:
        return out
    if input.numel() == 0:              # nothing to sample from: zero padding everywhere
        return out.zero_()
    inp = input.contiguous()
    grd = grid.contiguous()
    group = _channels_per_program(c)
    launch = (triton.cdiv(p, BLOCK_VOXELS), n, c // group)
    # the device guard matters on multi-GPU machines; CPU tensors only occur in Triton's interpreter
    guard = torch.cuda.device(input.device) if input.is_cuda else contextlib.nullcontext()
    with guard:
        _grid_sample_3d_kernel[launch](
            inp, grd, out, c, d, h, w, p, float(d), float(h), float(w),
            BLOCK=BLOCK_VOXELS, CPG=group, num_warps=NUM_WARPS,
        )
    return out
