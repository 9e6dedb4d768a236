"""The GPU check, network level: correctness of the networks, the fused grid-sample and the CUDA
graphs on the device, and the per-frame timing of our optimisations against the official
configuration. ``python -m app.diagnostics.gpucheck`` runs these together with the app-level checks (the
on-device chain, the paste-back, the live loop) and writes the report.

Correctness is judged by the parity kit's own rules: its fixtures, its statistics (``stats``) and
its tolerance profiles (``PROFILES``), read from the kit's ``check_parity.py``, never restated
here. The networks carry the kit's synthetic weights, made in memory by its ``weights.py``.

Timing: ``engines.bench.bench_backend`` (medians of CUDA-event times after warm-up) on one
``TorchBackend`` per configuration, from the official one (fp16 autocast, eager, channels-first,
``F.grid_sample``) through each optimisation alone to the full fast path.
"""
from __future__ import annotations

import copy
import gc
import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import motion
from .backend import InferenceBackend, StubBackend, TorchBackend
from .bench import PER_FRAME, bench_backend
from .checkpoints import LivePortraitNetworks
from .models import build
from .ops.bench_grid_sample import bench_case, w_shaped_inputs
from .ops.grid_sample3d import grid_sample_3d, triton_available, use_custom_grid_sample

log = logging.getLogger(__name__)

# our names of the seven networks -> the kit's (checkpoint / submodule) names
KIT_NAMES = {"appearance": "appearance_feature_extractor", "motion": "motion_extractor",
             "warping": "warping_module", "generator": "spade_generator", "stitching": "retarget_shoulder",
             "lip": "retarget_mouth", "eye": "retarget_eye"}
MLPS = ("stitching", "lip", "eye")            # fp32 always, as in the official code
CHANNELS_LAST_NETS = ("appearance", "motion", "generator")   # what TorchBackend turns channels-last
GRAPH_ATOL = {"exp": 1e-3, "yaw": 1e-2, "render": 2e-3}  # graph vs eager, as tests/app/animation/test_device_chain.py
GRID_SAMPLE_FP32_ATOL = 1e-5                                 # tests/engines/test_grid_sample_op.py's
GRID_SAMPLE_FP16_TOL = 2e-3                                  # |d| <= tol + tol |ref|, as its fp16 test


@dataclass
class Check:
    """One correctness check: passed True / False, or None when it cannot run here (skipped)."""

    section: str
    name: str
    passed: bool | None
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkConfig:
    """How the networks run in a parity check: the kit's profile, autocast fp16, and two of
    TorchBackend's optimisations."""

    name: str
    profile: str                  # the kit's tolerance profile
    autocast: bool
    channels_last: bool
    fused_grid_sample: bool


NETWORK_CONFIGS = (
    NetworkConfig("fp32 official", "fp32", autocast=False, channels_last=False, fused_grid_sample=False),
    NetworkConfig("fp32 fast path", "fp32", autocast=False, channels_last=True, fused_grid_sample=True),
    NetworkConfig("fp16 official", "fp16", autocast=True, channels_last=False, fused_grid_sample=False),
    NetworkConfig("fp16 fast path", "fp16", autocast=True, channels_last=True, fused_grid_sample=True),
)

OFFICIAL = dict(cuda_graphs=False, channels_last=False, fused_grid_sample=False, compile=False)
FAST_PATH = dict(cuda_graphs=True, channels_last=True, fused_grid_sample=True, compile=False)
OPTIMISATIONS = {"channels_last": "channels-last", "fused_grid_sample": "fused grid-sample",
                 "cuda_graphs": "CUDA graphs", "compile": "torch.compile"}
BASELINE = "baseline: official configuration (fp16 autocast, eager)"


@dataclass
class TimingRow:
    variant: str
    options: dict[str, Any]
    ms: dict[str, float] = field(default_factory=dict)     # per network, medians
    per_frame_ms: float | None = None                       # M + S + W+G
    vs_baseline: float | None = None                        # per_frame_ms / the baseline's
    peak_gpu_mb: float | None = None
    error: str = ""


# --------------------------------------------------------------------------- environment
# --------------------------------------------------------------------------- the kit
def load_kit(parity_dir: Path) -> ModuleType:
    """The kit's ``check_parity.py`` as a module (its fixtures, statistics and profiles);
    ``FileNotFoundError`` with one line when the folder has none."""
    script = Path(parity_dir) / "check_parity.py"
    if not script.is_file():
        raise FileNotFoundError(f"parity kit not found: {script} is missing (set LIVEPORTRAIT_PARITY_DIR)")
    spec = importlib.util.spec_from_file_location("avatarcam_parity_kit", script)
    assert spec is not None and spec.loader is not None
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)          # it puts its own folder on sys.path for its weights module
    return kit


def synthetic_networks(kit: ModuleType, names: tuple[str, ...] = tuple(KIT_NAMES)) -> dict[str, torch.nn.Module]:
    """Our networks (``build``) with the kit's synthetic weights, loaded strictly, on the CPU."""
    manifest = kit.load_manifest()
    nets = {}
    for ours in names:
        net = build(KIT_NAMES[ours])
        net.load_state_dict(kit.weights.synthetic_state_dict(kit.entry_of(manifest, KIT_NAMES[ours])), strict=True)
        nets[ours] = net.eval()
    return nets


def as_networks(nets: dict[str, torch.nn.Module]) -> LivePortraitNetworks:
    return LivePortraitNetworks(**nets)


@contextmanager
def _tf32_off(device: torch.device) -> Iterator[None]:
    """As the kit does on CUDA for its fp32 profile: TF32 convolutions would fail it."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@torch.inference_mode()
def check_network(kit: ModuleType, ours: str, net: torch.nn.Module, device: torch.device,
                  config: NetworkConfig) -> Check:
    """One network on ``device`` in ``config`` against the kit's fixture, by the kit's rule."""
    name = KIT_NAMES[ours]
    ins, ref, _ = kit.load_fixture(kit.fixture_of(name), kit.FIXTURES)
    if name in kit.STITCH_SUBS:
        ins, ref = {name: ins[name]}, {name: ref[name]}
    tol = kit.PROFILES[config.profile]
    net = net.to(device)
    if config.channels_last and ours in CHANNELS_LAST_NETS:
        net = net.to(memory_format=torch.channels_last)
    autocast = config.autocast and ours not in MLPS and device.type == "cuda"
    try:
        with _tf32_off(device), torch.autocast(device.type, dtype=torch.float16, enabled=autocast), \
                use_custom_grid_sample(config.fused_grid_sample and device.type == "cuda"):
            out = kit.default_call(name, net, kit.default_inputs(name, ins, torch, device))
    finally:
        net.to(memory_format=torch.contiguous_format)
    worst = {"norm_max": 0.0, "rel_l2": 0.0}
    passed, failures = True, []
    for key, expected in ref.items():
        st = kit.stats(kit.to_np(out[key]) if key in out else np.full(1, np.nan), expected)
        ok = (st is not None and st["finite"] and st["norm_max"] <= tol["norm_max_tol"]
              and st["rel_l2"] <= tol["rel_l2_tol"])
        if st is not None:
            worst = {k: max(worst[k], float(st[k])) for k in worst}
        if not ok:
            passed = False
            failures.append(key)
    detail = (f"worst norm_max {worst['norm_max']:.1e} (tol {tol['norm_max_tol']:g}), rel_l2 "
              f"{worst['rel_l2']:.1e} (tol {tol['rel_l2_tol']:g})" + (f"; FAIL: {', '.join(failures)}" if failures
                                                                       else ""))
    return Check("parity", f"{name} {config.name}", passed, detail, {**worst, "profile": config.profile})


def check_networks(kit: ModuleType, nets: dict[str, torch.nn.Module], device: torch.device,
                   configs: tuple[NetworkConfig, ...] = NETWORK_CONFIGS) -> list[Check]:
    """Every network given in every configuration (fp16 ones on CUDA only: CPU autocast is not
    what the product runs)."""
    checks = []
    for config in configs:
        if config.autocast and device.type != "cuda":
            continue
        for ours, net in nets.items():
            checks.append(check_network(kit, ours, net, device, config))
            log.info("  %-50s %s  %s", checks[-1].name, _verdict(checks[-1].passed), checks[-1].detail)
    for net in nets.values():
        net.to("cpu")
    return checks


# --------------------------------------------------------------------------- the fused grid-sample
@torch.inference_mode()
def check_grid_sample(device: torch.device, runs: int, warmup: int) -> tuple[list[Check], list[dict[str, Any]]]:
    """Ours against ``F.grid_sample`` on W's shapes (fp32; fp16 features with fp32 coordinates),
    and both timed. On a CPU ours is the plain-torch reference, on a small case."""
    checks: list[Check] = []
    timings: list[dict[str, Any]] = []
    if device.type != "cuda":
        gen = torch.Generator().manual_seed(1)
        feature = torch.randn(2, 3, 5, 7, 9, generator=gen)
        grid = (torch.rand(2, 4, 6, 8, 3, generator=gen) * 2 - 1) * 1.1
        d = (grid_sample_3d(feature, grid) - _aten(feature, grid)).abs().max().item()
        checks.append(Check("grid-sample", "CPU reference vs F.grid_sample fp32 (small case)",
                            d <= GRID_SAMPLE_FP32_ATOL, f"max abs diff {d:.1e} (tol {GRID_SAMPLE_FP32_ATOL:g})"))
        return checks, timings
    checks.append(Check("grid-sample", "Triton kernel in use", triton_available(),
                        "Triton imports and its kernel runs" if triton_available() else
                        "no Triton: the op falls back to F.grid_sample"))
    for shape in ("warp", "deform"):
        feature, grid = w_shaped_inputs(shape, device)
        d = (grid_sample_3d(feature, grid) - _aten(feature, grid)).abs().max().item()
        checks.append(Check("grid-sample", f"Triton vs F.grid_sample fp32 ({shape})", d <= GRID_SAMPLE_FP32_ATOL,
                            f"max abs diff {d:.1e} (tol {GRID_SAMPLE_FP32_ATOL:g})", {"max_abs": d}))
    feature, grid = w_shaped_inputs("warp", device, seed=2)
    out = grid_sample_3d(feature.half(), grid).float()
    expected = _aten(feature.half().float(), grid)
    excess = ((out - expected).abs() - GRID_SAMPLE_FP16_TOL * (1 + expected.abs())).max().item()
    checks.append(Check("grid-sample", "Triton fp16 features, fp32 coordinates vs F.grid_sample fp32 (warp)",
                        excess <= 0 and bool(torch.isfinite(out).all()),
                        f"abs diff <= {GRID_SAMPLE_FP16_TOL:g} (1 + abs ref): worst margin {excess:+.1e}"))
    for shape in ("warp", "deform"):
        for dtype in (torch.float32, torch.float16):
            timings.append(asdict(bench_case(device, shape, dtype, runs, warmup)))
    return checks, timings


def _aten(feature: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(feature, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------- CUDA graphs
@torch.inference_mode()
def check_graph_replay(nets: dict[str, torch.nn.Module], device: torch.device) -> list[Check]:
    """The fast path's captured M and W+G against the same backend run eagerly, on crops the
    capture never saw (each replay must see its new inputs)."""
    if device.type != "cuda":
        return [Check("cuda-graphs", "graph replay vs eager on new inputs", None, "skipped: needs CUDA")]
    graphed = TorchBackend(as_networks(copy.deepcopy(nets)), device, precision="fp16", **FAST_PATH)
    eager = TorchBackend(as_networks(copy.deepcopy(nets)), device, precision="fp16",
                         **{**FAST_PATH, "cuda_graphs": False})
    g = torch.Generator().manual_seed(3)
    crops = [torch.rand(1, 3, 256, 256, generator=g).to(device) for _ in range(3)]
    feature = graphed.appearance(crops[0])
    x_s = motion.keypoints_from_info(graphed.motion(crops[0]))
    worst = {"exp": 0.0, "yaw": 0.0, "render": 0.0}
    renders = []
    for crop in crops[1:]:
        a, b = graphed.motion(crop), eager.motion(crop)
        worst["exp"] = max(worst["exp"], (a.exp - b.exp).abs().max().item())
        worst["yaw"] = max(worst["yaw"], (a.yaw - b.yaw).abs().max().item())
        x_d = motion.keypoints_from_info(a)
        r_graph, r_eager = graphed.render(feature, x_s, x_d), eager.render(feature, x_s, x_d)
        worst["render"] = max(worst["render"], (r_graph - r_eager).abs().max().item())
        renders.append(r_graph)
    moved = not torch.allclose(renders[0], renders[1])
    passed = moved and all(worst[k] <= GRAPH_ATOL[k] for k in worst)
    detail = ", ".join(f"{k} max abs diff {v:.1e} (tol {GRAPH_ATOL[k]:g})" for k, v in worst.items())
    graphed.close()
    eager.close()
    del graphed, eager
    _free(device)
    return [Check("cuda-graphs", "graph replay vs eager on new inputs", passed,
                  detail + ("" if moved else "; the second replay gave the first's output"), worst)]


# --------------------------------------------------------------------------- timing
def timing_variants(compile: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """The timing ladder: fp32 for scale, the official configuration (the baseline), each of our
    optimisations alone on top of it, then the fast path (what TorchBackend runs by default), and
    the fast path with ``torch.compile`` (not in the product)."""
    rows: list[tuple[str, dict[str, Any]]] = [("fp32, eager (official, half precision off)",
                                               {"precision": "fp32", **OFFICIAL}),
                                              (BASELINE, {"precision": "fp16", **OFFICIAL})]
    for option, label in OPTIMISATIONS.items():
        if option != "compile" or compile:
            rows.append((f"baseline + {label}", {"precision": "fp16", **OFFICIAL, option: True}))
    rows.append(("fast path: channels-last, fused grid-sample, CUDA graphs", {"precision": "fp16", **FAST_PATH}))
    if compile:
        rows.append(("fast path + torch.compile", {"precision": "fp16", **FAST_PATH, "compile": True}))
    return rows


def time_variants(nets: dict[str, torch.nn.Module], device: torch.device, runs: int, warmup: int, *,
                  compile: bool = True, on_row: Callable[[list[TimingRow]], None] | None = None) -> list[TimingRow]:
    """``bench_backend`` on a fresh ``TorchBackend`` of every variant; a variant that fails is
    reported with its error and the others go on. ``on_row`` sees the rows so far after each."""
    rows: list[TimingRow] = []
    for variant, options in timing_variants(compile):
        row = TimingRow(variant, options)
        try:
            backend = TorchBackend(as_networks(copy.deepcopy(nets)), device, **options)
            try:
                _fill(row, bench_backend(backend, options["precision"], runs, warmup))
            finally:
                backend.close()         # its CUDA graphs' memory, before the next variant is captured
            del backend
        except Exception as e:  # noqa: BLE001 - one variant's failure (e.g. torch.compile) is a finding
            row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            log.warning("  %s: failed: %s", variant, row.error)
        _free(device)
        rows.append(row)
        add_ratios(rows)
        if row.per_frame_ms is not None:
            log.info("  %-60s per frame %8.3f ms", variant, row.per_frame_ms)
        if on_row is not None:
            on_row(rows)
    return rows


def time_stub(device: torch.device, runs: int, warmup: int) -> list[TimingRow]:
    """The timing table's plumbing with no networks (``--quick``)."""
    row = TimingRow("stub backend (no networks: --quick)", {})
    _fill(row, bench_backend(StubBackend(device), "fp32", runs, warmup))
    return [row]


def add_ratios(rows: list[TimingRow]) -> None:
    base = next((r.per_frame_ms for r in rows if r.variant == BASELINE), None)
    for r in rows:
        if base and r.per_frame_ms is not None:
            r.vs_baseline = r.per_frame_ms / base


def _fill(row: TimingRow, result: Any) -> None:
    row.ms, row.peak_gpu_mb = dict(result.ms), result.peak_gpu_mb
    row.per_frame_ms = result.per_frame_ms


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- report
def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "skipped"}[passed]


@dataclass
class Report:
    environment: dict[str, str]
    checks: list[Check] = field(default_factory=list)
    timing: list[TimingRow] = field(default_factory=list)
    grid_sample_timing: list[dict[str, Any]] = field(default_factory=list)
    live_loop: dict[str, Any] = field(default_factory=dict)
    # W+G of N sessions' frames as one batch (the render server's batching), one row per N
    batching: list[dict[str, float]] = field(default_factory=list)
    quick: bool = False

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    def headline(self) -> str:
        fast = next((r for r in self.timing if r.variant.startswith("fast path:")), None)
        if fast is None or fast.vs_baseline is None:
            return "fast path / baseline: not measured"
        return (f"fast path / baseline = {fast.vs_baseline:.2f} per frame (M + S + W+G: {fast.per_frame_ms:.2f} ms "
                f"vs {fast.per_frame_ms / fast.vs_baseline:.2f} ms)")

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "headline": self.headline(), "failed": [c.name for c in self.failed]},
                          indent=2, default=str)

    def to_markdown(self) -> str:
        env = self.environment
        lines = [f"# GPU check{' (--quick: CPU-checkable parts only)' if self.quick else ''}", "",
                 " | ".join(f"{k} {v}" for k, v in env.items()), ""]
        if self.timing:
            names = list(next((r.ms for r in self.timing if r.ms), dict.fromkeys(PER_FRAME)))
            lines += ["| variant | " + " | ".join(names) + " | per frame (M+S+W+G) | vs baseline |",
                      "|---|" + "---|" * (len(names) + 2)]
            for r in self.timing:
                if r.error:
                    lines.append(f"| {r.variant} | failed: {r.error} |" + " |" * (len(names) + 1))
                    continue
                cells = [f"{r.ms.get(n, float('nan')):.3f} ms" for n in names]
                ratio = f"{r.vs_baseline:.2f}" if r.vs_baseline is not None else ""
                lines.append(f"| {r.variant} | " + " | ".join(cells) + f" | **{r.per_frame_ms:.3f} ms** | {ratio} |")
            lines += ["", self.headline(), ""]
        if self.live_loop:
            ll = self.live_loop
            stages = ", ".join(f"{k} {v:.2f} ms" for k, v in ll.get("stage_ms", {}).items())
            lines += ["| live loop | frames/s | capture-to-output latency (median) | per-stage ms (medians) |",
                      "|---|---|---|---|",
                      f"| {ll.get('label', '')} | {ll.get('fps', 0):.1f} | {ll.get('latency_ms', 0):.1f} ms "
                      f"| {stages} |",
                      ""]
        if self.batching:
            lines += ["| sessions in one W+G batch | batch ms | ms per session | sessions at 30 fps, W+G only |",
                      "|---|---|---|---|"]
            lines += [f"| {int(b['sessions'])} | {b['batch_ms']:.3f} | {b['ms_per_session']:.3f} | "
                      f"{int(b['sessions_at_30fps'])} |" for b in self.batching]
            lines += [""]
        lines += ["| section | check | result | detail |", "|---|---|---|---|"]
        lines += [f"| {c.section} | {c.name} | {_verdict(c.passed)} | {c.detail} |" for c in self.checks]
        verdict = (f"{len(self.failed)} check(s) FAILED" if self.failed
                   else f"all {sum(c.passed is True for c in self.checks)} checks passed")
        skipped = sum(c.passed is None for c in self.checks)
        lines += ["", verdict + (f" ({skipped} skipped)" if skipped else "")]
        return "\n".join(lines) + "\n"


def run_engine_checks(report: Report, kit: ModuleType, device: torch.device, *, quick: bool, runs: int,
                      warmup: int, step: Callable[[str], None] = log.info) -> dict[str, torch.nn.Module]:
    """The network-level correctness sections into ``report``; returns the networks (on the CPU),
    for the app level and the timing."""
    names = ("motion", *MLPS) if quick else tuple(KIT_NAMES)
    step(f"networks with the kit's synthetic weights: {', '.join(names)}")
    nets = synthetic_networks(kit, names)
    step("parity on " + str(device))
    report.checks += check_networks(kit, nets, device, NETWORK_CONFIGS[:1] if quick else NETWORK_CONFIGS)
    step("fused grid-sample")
    checks, report.grid_sample_timing = check_grid_sample(device, runs, warmup)
    report.checks += checks
    step("CUDA graphs")
    report.checks += check_graph_replay(nets, device)
    return nets


def backend_fast_path(nets: dict[str, torch.nn.Module], device: torch.device) -> InferenceBackend:
    """What the product runs on this device: TorchBackend's defaults (fp16 on CUDA)."""
    return TorchBackend(as_networks(copy.deepcopy(nets)), device, precision="fp16" if device.type == "cuda" else "fp32")


if __name__ == "__main__":
    print("the GPU check is `python -m app.diagnostics.gpucheck --out DIR` (it adds the app-level checks to these)",
          file=sys.stderr)
    sys.exit(2)
