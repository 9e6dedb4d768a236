"""Start-up check: weights present (downloaded when missing), all seven networks load from the
official files, and one frame's worth of work runs on the chosen device."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from engines import motion
from engines.checkpoints import LivePortraitNetworks, load_networks
from engines.device import resolve_device, synced_ms
from engines.weights import ensure_weights, resolve_weights_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelfCheckReport:
    weights_dir: Path
    device: torch.device
    load_seconds: float
    stage_ms: dict[str, float]


@torch.no_grad()
def time_one_frame(nets: LivePortraitNetworks, device: torch.device) -> dict[str, float]:
    """Milliseconds per stage for one avatar preparation and one animated frame on a grey image."""
    image = torch.full((1, 3, 256, 256), 0.5, device=device)
    stages: dict[str, float] = {}

    def timed(name: str, fn):
        out, stages[name] = synced_ms(fn, device)
        return out

    feature = timed("F appearance (once per avatar)", lambda: nets.appearance(image))
    raw = timed("M motion", lambda: nets.motion(image))
    info = motion.refine_motion_output(raw)
    x_s = motion.keypoints_from_info(info)
    x_d = timed("S stitching", lambda: motion.apply_stitching(nets.stitching, x_s, x_s))
    warped = timed("W warping", lambda: nets.warping(feature, kp_source=x_s, kp_driving=x_d))
    frame = timed("G decoder", lambda: nets.generator(warped["out"]))
    motion.require_finite("decoded frame", frame)
    return stages


def run_selfcheck(weights_dir: Path, device: torch.device, *, download: bool = True) -> SelfCheckReport:
    weights_dir = ensure_weights(weights_dir, download=download)
    t0 = time.perf_counter()
    nets = load_networks(weights_dir, device)
    load_seconds = time.perf_counter() - t0
    return SelfCheckReport(weights_dir=weights_dir, device=device, load_seconds=load_seconds,
                           stage_ms=time_one_frame(nets, device))


def main_selfcheck(args) -> int:
    """``main.py --check``."""
    report = run_selfcheck(resolve_weights_dir(args.weights), resolve_device(args.device),
                           download=not args.no_download)
    log.info("weights: %s (loaded in %.1f s) on %s", report.weights_dir, report.load_seconds, report.device)
    for stage, ms in report.stage_ms.items():
        log.info("  %-32s %8.1f ms", stage, ms)
    log.info("all seven LivePortrait networks are ready")
    return 0
