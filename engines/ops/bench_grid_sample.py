"""Micro-benchmark: ``F.grid_sample`` vs ``avatarcam::grid_sample_3d`` on the shapes of W.

    python -m engines.ops.bench_grid_sample [--iters N] [--warmup N] [--device cpu|cuda|all]

For each available device and dtype it prints the median time of both and the max abs error of
each against an fp64 ``F.grid_sample`` on the same (rounded) inputs, and ours against
``F.grid_sample`` directly. On CPU the op runs its
plain-torch reference, so CPU times only say how slow the reference is; the number that matters
is CUDA (the Triton kernel), where fp16 runs ours with fp16 features and fp32 coordinates against
ATen's all-fp16 kernel. Shapes: ``warp`` is W's final warp (1 x 32 x 16 x 64 x 64), ``deform``
the dense motion network's 22 warps of the compressed feature (22 x 4 x 16 x 64 x 64).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..device import median_ms, synchronize
from .grid_sample3d import grid_sample_3d, triton_available

logger = logging.getLogger("engines.ops.bench_grid_sample")

SHAPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "warp": ((1, 32, 16, 64, 64), (1, 16, 64, 64, 3)),
    "deform": ((22, 4, 16, 64, 64), (22, 16, 64, 64, 3)),
}


@dataclass
class Row:
    device: str
    shape: str
    dtype: str
    aten_ms: float
    ours_ms: float
    aten_err: float
    ours_err: float
    ours_vs_aten: float
    ours_peak_mib: float | None


def w_shaped_inputs(shape: str, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ~ N(0, 1) and a flow like W's: identity-ish grid plus noise, ~5% outside [-1, 1]."""
    in_shape, grid_shape = SHAPES[shape]
    gen = torch.Generator().manual_seed(seed)
    feature = torch.randn(in_shape, generator=gen)
    grid = (torch.rand(grid_shape, generator=gen) * 2 - 1) * 1.05
    return feature.to(device), grid.to(device)


def _peak_extra_mib(fn: Callable[[], torch.Tensor], device: torch.device) -> float | None:
    """CUDA memory allocated beyond what existed before the call (output included)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def bench_case(device: torch.device, shape: str, dtype: torch.dtype, iters: int, warmup: int) -> Row:
    feature32, grid32 = w_shaped_inputs(shape, device)
    feature = feature32.to(dtype)
    # ATen needs one dtype for both; ours keeps fp32 coordinates with fp16 features
    grid_aten = grid32.to(dtype)
    grid_ours = grid32 if dtype == torch.float16 else grid32.to(dtype)
    expected = F.grid_sample(feature.double(), grid32.double(), mode="bilinear", padding_mode="zeros",
                             align_corners=False)

    def aten() -> torch.Tensor:
        return F.grid_sample(feature, grid_aten, mode="bilinear", padding_mode="zeros", align_corners=False)

    def ours() -> torch.Tensor:
        return grid_sample_3d(feature, grid_ours)

    with torch.inference_mode():
        aten_out, ours_out = aten().double(), ours().double()
        return Row(device=str(device), shape=shape, dtype=str(dtype).replace("torch.", ""),
                   aten_ms=median_ms(aten, device, iters, warmup),
                   ours_ms=median_ms(ours, device, iters, warmup),
                   aten_err=(aten_out - expected).abs().max().item(),
                   ours_err=(ours_out - expected).abs().max().item(),
                   ours_vs_aten=(ours_out - aten_out).abs().max().item(),
                   ours_peak_mib=_peak_extra_mib(ours, device))


def _devices(choice: str) -> list[torch.device]:
    wanted = ["cpu", "cuda"] if choice == "all" else [choice]
    found = [torch.device(name) for name in wanted if name == "cpu" or torch.cuda.is_available()]
    if "cuda" in wanted and not torch.cuda.is_available():
        logger.info("CUDA not available: CPU only")
    return found


def _dtypes(device: torch.device) -> Sequence[torch.dtype]:
    # fp16 matters on the GPU only; ATen's CPU fp16 grid_sample is not a useful baseline
    return (torch.float32, torch.float16) if device.type == "cuda" else (torch.float32,)


def _format(row: Row) -> str:
    peak = "" if row.ours_peak_mib is None else f"  ours peak +{row.ours_peak_mib:.1f} MiB"
    return (f"{row.device:5s} {row.shape:6s} {row.dtype:8s} F.grid_sample {row.aten_ms:9.3f} ms "
            f"(err {row.aten_err:.2e})   ours {row.ours_ms:9.3f} ms (err {row.ours_err:.2e}, "
            f"vs F.grid_sample {row.ours_vs_aten:.2e}){peak}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--iters", type=int, default=0, help="timed runs (default: 5 on CPU, 100 on CUDA)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed runs (default: 1 on CPU, 10 on CUDA)")
    parser.add_argument("--shape", choices=("all", *SHAPES), default="all")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    shapes = list(SHAPES) if args.shape == "all" else [args.shape]
    logger.info("torch %s, %d CPU threads, CUDA kernel: %s", torch.__version__, torch.get_num_threads(),
                ("Triton" if triton_available() else "F.grid_sample fallback") if torch.cuda.is_available()
                else "n/a")
    for device in _devices(args.device):
        iters = args.iters or (100 if device.type == "cuda" else 5)
        warmup = args.warmup or (10 if device.type == "cuda" else 1)
        if device.type == "cuda":
            logger.info("GPU: %s", torch.cuda.get_device_name(device))
        for shape in shapes:
            for dtype in _dtypes(device):
                logger.info(_format(bench_case(device, shape, dtype, iters, warmup)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
