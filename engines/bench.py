"""Benchmark of the networks per backend and device.

    python -m engines.bench                        # torch on every available device
    python -m engines.bench --backends torch --devices cuda --precisions fp32,fp16 --json out.json
    python -m engines.bench --backends onnxruntime --onnx-dir build/onnx
    python -m engines.bench --weights DIR --weight-set animal   # the animal networks' own files

For each backend / device / precision: milliseconds per network (median over ``--runs`` after
``--warmup``), the per-frame total (M + S + W+G, what every webcam frame costs), frames/s from that
total and the peak GPU memory. Weights do not change the timings, so the networks are freshly
initialised unless ``--weights`` is given (then ``--weight-set`` picks the set; its ONNX graphs and
engines are read from ``--onnx-dir`` / ``--engine-dir`` per ``engines.select.weight_set_dir``).
Load time and memory per set: ``python -m engines.load_bench``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import motion
from .backend import InferenceBackend, TorchBackend
from .backend_onnx import OnnxRuntimeBackend
from .backend_tensorrt import TensorRTBackend
from .checkpoints import LivePortraitNetworks, load_networks
from .device import median_ms
from .models import build
from .options import add_engine_arguments
from .select import weight_set_dir

log = logging.getLogger("engines.bench")

PER_FRAME = ("M motion", "S stitching", "W+G render")


@dataclass
class BenchResult:
    backend: str
    device: str
    precision: str
    ms: dict[str, float] = field(default_factory=dict)
    per_frame_ms: float = 0.0
    fps: float = 0.0
    peak_gpu_mb: float | None = None
    note: str = ""


def bench_backend(backend: InferenceBackend, precision: str, runs: int, warmup: int) -> BenchResult:
    dev = backend.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 256, 256, generator=g).to(dev)
    with torch.inference_mode():
        feature = backend.appearance(image)
        info = backend.motion(image)
        x_s = motion.keypoints_from_info(info)
        x_d = x_s + 0.01 * torch.randn(x_s.shape, generator=g).to(dev)
        res = BenchResult(backend.name, str(dev), precision)
        res.ms["F appearance (once per avatar)"] = median_ms(lambda: backend.appearance(image), dev, runs, warmup)
        res.ms["M motion"] = median_ms(lambda: backend.motion(image), dev, runs, warmup)
        res.ms["S stitching"] = median_ms(lambda: motion.apply_stitching(backend.stitching, x_s, x_d), dev,
                                          runs, warmup)
        res.ms["W+G render"] = median_ms(lambda: backend.render(feature, x_s, x_d), dev, runs, warmup)
    res.per_frame_ms = sum(res.ms[k] for k in PER_FRAME)
    res.fps = 1000.0 / res.per_frame_ms if res.per_frame_ms > 0 else 0.0
    if dev.type == "cuda":
        res.peak_gpu_mb = torch.cuda.max_memory_allocated(dev) / 2**20
    return res


def make_torch_backend(device: str, precision: str, weights: str | None, weight_set: str = "human") -> TorchBackend:
    if weights:
        nets = load_networks(weights, weight_set=weight_set)
    else:
        nets = LivePortraitNetworks(appearance=build("appearance_feature_extractor"), motion=build("motion_extractor"),
                                    warping=build("warping_module"), generator=build("spade_generator"),
                                    stitching=build("retarget_shoulder"), lip=build("retarget_mouth"),
                                    eye=build("retarget_eye"))
    return TorchBackend(nets, device, precision=precision)


def available_devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def environment(device: torch.device | None = None) -> dict[str, str]:
    """What the figures were measured on: GPU (``device``, default the first CUDA device if any),
    compute capability, driver, clocks, software."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "machine": platform.machine(), "cpu_threads": str(torch.get_num_threads())}
    spec = importlib.util.find_spec("triton")
    if spec is not None:
        import triton
        env["triton"] = triton.__version__
    if device.type != "cuda":
        return env
    props = torch.cuda.get_device_properties(device)
    env.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}",
               multiprocessors=str(props.multi_processor_count), memory_gib=f"{props.total_memory / 2**30:.1f}",
               cuda=str(torch.version.cuda), cudnn=str(torch.backends.cudnn.version()))
    query = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,temperature.gpu"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError) as e:
        env["nvidia_smi"] = f"unavailable ({e})"
        return env
    if out:
        env.update(zip(("driver", "sm_clock", "sm_clock_max", "mem_clock", "mem_clock_max", "power_limit",
                        "temperature_c"), (v.strip() for v in out[0].split(",")), strict=False))
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="torch", help="comma list of torch, onnxruntime, tensorrt")
    ap.add_argument("--devices", default=",".join(available_devices()), help="comma list of cpu, cuda")
    ap.add_argument("--precisions", default="fp32", help="comma list of fp32, fp16 (fp16 on CUDA only)")
    add_engine_arguments(ap, backend=None, device=None, weights="freshly initialised networks",
                         onnx_dir="onnxruntime backend", engine_dir=True, weight_set=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = environment()
    log.info("environment: %s", ", ".join(f"{k} {v}" for k, v in env.items()))
    results: list[BenchResult] = []
    for name in args.backends.split(","):
        for device in args.devices.split(","):
            for precision in args.precisions.split(","):
                if precision == "fp16" and device != "cuda":
                    continue
                try:
                    backend = make_backend_for_bench(name, device, precision, args)
                except (ImportError, RuntimeError, ValueError, FileNotFoundError) as e:
                    log.info("%s on %s (%s): not available: %s", name, device, precision, e)
                    continue
                try:
                    r = bench_backend(backend, precision, args.runs, args.warmup)
                finally:
                    backend.close()         # before the next one loads: one backend on the GPU at a time
                results.append(r)
                log.info("%s on %s, %s:", r.backend, r.device, precision)
                for k, v in r.ms.items():
                    log.info("  %-32s %9.2f ms", k, v)
                log.info("  per frame (M + S + W+G)           %9.2f ms  -> %.1f frames/s%s", r.per_frame_ms, r.fps,
                         f", peak GPU memory {r.peak_gpu_mb:.0f} MB" if r.peak_gpu_mb is not None else "")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": [asdict(r) for r in results]}, indent=2))
    return 0 if results else 1


def make_backend_for_bench(name: str, device: str, precision: str, args: argparse.Namespace) -> InferenceBackend:
    if name == "torch":
        return make_torch_backend(device, precision, args.weights, args.weight_set)
    if name == "onnxruntime":
        if not args.onnx_dir:
            raise ValueError("--onnx-dir is required")
        return OnnxRuntimeBackend(weight_set_dir(args.onnx_dir, args.weight_set), device=device, precision=precision)
    if name == "tensorrt":
        if not args.engine_dir:
            raise ValueError("--engine-dir is required")
        return TensorRTBackend(weight_set_dir(args.engine_dir, args.weight_set))
    raise ValueError(f"unknown backend {name!r}")


if __name__ == "__main__":
    sys.exit(main())
