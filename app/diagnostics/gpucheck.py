"""The GPU check: one command that proves and times the GPU path on a CUDA machine.

    python -m app.diagnostics.gpucheck --out DIR --landmarks FILE      # on a CUDA machine, with the parity kit
    python -m app.diagnostics.gpucheck --out DIR --quick               # the CPU-checkable parts (the test suite)

It runs the network-level checks of ``engines.gpucheck`` (the environment; every network against the
parity kit at its fp32 and fp16 profiles, official and fast-path configurations; the Triton
grid-sample against ``F.grid_sample``; CUDA-graph replay against eager on new inputs; the timing
ladder from the official configuration to the fast path) and adds the app-level ones, which need
``app/``: the device paste-back against the kit, one wait for the device per steady frame in the
animator, and the whole live loop for ``--seconds`` on the video's frames, unpaced, with landmarks
replayed from a file made beforehand where MediaPipe is installed (``python -m app.diagnostics.bench
--save-landmarks FILE``), and the render server's batching (W+G of 1 to 8 sessions' frames as one
batch, with the sessions at 30 frames/s that W+G leaves room for). It writes ``gpucheck.json`` and
``gpucheck.md`` to ``--out``, prints the markdown table last, and exits 1 if a correctness check
failed. Without a CUDA device (and without ``--quick``) it exits 2 with one line. ``--quick`` runs
every section on the CPU at low cost: the small networks against the kit, the CPU grid-sample
reference, the paste-back, the waits (host reads) and a short live loop on the stub backend; what
needs CUDA is reported as skipped.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import torch

from engines import gpucheck as eg
from engines.backend import InferenceBackend, StubBackend
from engines.bench import environment
from engines.device import device_waits, median_ms, synchronize

from ..animation.animator import Animator
from ..avatar.face import prepare_avatar_face
from ..avatar.loading import DEFAULT_AVATAR
from ..avatar.prepared import PreparedAvatar, prepare_avatar
from ..compositing.paste_device import DevicePasteBack
from ..face import crop as fc
from ..face.driving import DrivingFace
from ..imaging.device_io import fetch_image
from ..live.replay import LandmarkRecording, load_landmarks, record_landmarks
from ..remote.server.batching import render_batch
from ..settings import AnimationSettings, LiveSettings
from .bench import run_loop
from .tracking_bench import default_video, frames_720p

log = logging.getLogger("app.diagnostics.gpucheck")

REPO_ROOT = Path(__file__).resolve().parents[2]
STEADY_FRAMES = 8
BATCH_SIZES = (1, 2, 4, 8)


def default_parity_dir() -> Path:
    return Path(os.environ.get("LIVEPORTRAIT_PARITY_DIR", REPO_ROOT.parent / "shared" / "parity"))


# --------------------------------------------------------------------------- app-level checks
def check_device_paste(kit: ModuleType, device: torch.device) -> eg.Check:
    """``DevicePasteBack`` on ``device`` against the kit's paste-back fixture, at the kit's tolerance."""
    kit_dir = Path(kit.HERE)
    fixture = np.load(Path(kit.FIXTURES) / "glue_crop_paste.npz")
    orig, crop, M_c2o = fixture["in__paste_orig_u8"], fixture["in__paste_crop_u8"], fixture["in__paste_M_c2o"]
    mask = cv2.imread(str(kit_dir / "data" / "mask_template.png"))
    paste = fc.prepare_paste_mask(mask, M_c2o, (orig.shape[1], orig.shape[0]))
    pasted = DevicePasteBack(orig, M_c2o, paste, crop.shape[0], device)
    planes = torch.from_numpy(np.ascontiguousarray(crop[..., ::-1])).permute(2, 0, 1).to(device)   # RGB planes
    box, ok = fetch_image(pasted(planes))
    out = pasted.compose(box)
    tol = kit.GLUE_ABS_OVERRIDE["paste_result_u8"]
    d = float(np.abs(out.astype(int) - fixture["out__paste_result_u8"]).max())
    return eg.Check("app", f"device paste-back on {device.type} vs the kit", ok and d <= tol,
                    f"max abs diff {d:g} grey levels (the kit's tolerance {tol:g})", {"max_abs": d})


def driving_faces(recording: LandmarkRecording, frames: list[np.ndarray], count: int) -> list[DrivingFace]:
    """The first ``count`` tracked driving faces of the recording, cropped as the tracking stage does."""
    faces = list(itertools.islice((f for f in recording.driving_faces(frames) if f is not None), count))
    if len(faces) < count:
        raise ValueError(f"the landmark file has {len(faces)} tracked frames, {count} needed")
    return faces


def check_waits(backend: InferenceBackend, avatar: PreparedAvatar, faces: list[DrivingFace]) -> eg.Check:
    """Steady frames of the animator (after its neutral reference) wait for the device once each,
    for the image fetch (on CUDA: synchronising calls; on a CPU: reads of tensor values, none)."""
    device = backend.device
    reference_frames = 2
    animator = Animator(backend, LiveSettings(AnimationSettings(reference_frames=reference_frames)), avatar)
    warm = faces[:reference_frames + 2]          # calibration, and the first frames that set buffers up
    for i, face in enumerate(warm):
        animator.process(face, i / 30)
    synchronize(device)
    steady = faces[len(warm):]
    frames, waits = device_waits(lambda: [animator.process(f, (len(warm) + i) / 30) for i, f in enumerate(steady)],
                                 device)
    expected = len(steady) if device.type == "cuda" else 0
    rendered = all(f.rendered for f in frames)
    what = "synchronising CUDA calls" if device.type == "cuda" else "host reads of tensor values"
    detail = f"{len(waits)} {what} in {len(steady)} steady frames (expected {expected})"
    if not rendered:
        detail += "; not every frame was rendered"
    return eg.Check("app", f"one wait per steady frame ({device.type})", rendered and len(waits) == expected,
                    detail + (f"; first: {waits[0][:160]}" if waits and len(waits) != expected else ""),
                    {"waits": len(waits), "frames": len(steady)})


def time_batches(backend: InferenceBackend, avatar: PreparedAvatar, runs: int, warmup: int,
                 sizes: tuple[int, ...] = BATCH_SIZES) -> list[dict[str, float]]:
    """Median milliseconds of W+G for N sessions' frames as one batch (``render_batch``, as the
    render server runs them), each with the avatar and a driving pose of its own. Sessions at 30
    frames/s, counting W+G only: N when a batch of N fits in a 30 fps frame, and for N = 1 how many
    single renders fit one after the other (no batching)."""
    budget_ms = 1000.0 / 30
    rows = []
    with torch.inference_mode():
        for n in sizes:
            requests = [(avatar.feature, avatar.x_s, avatar.x_s + 0.01 * k) for k in range(n)]
            ms = median_ms(lambda requests=requests: render_batch(backend, requests), backend.device, runs, warmup)
            fits = int(budget_ms // ms) if n == 1 else (n if ms <= budget_ms else 0)
            rows.append({"sessions": n, "batch_ms": ms, "ms_per_session": ms / n, "sessions_at_30fps": fits})
    return rows


# --------------------------------------------------------------------------- the command
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m app.diagnostics.gpucheck", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for gpucheck.json and gpucheck.md")
    ap.add_argument("--quick", action="store_true", help="the CPU-checkable parts only, at low cost")
    ap.add_argument("--parity-dir", type=Path, default=default_parity_dir(),
                    help="the parity kit (default: $LIVEPORTRAIT_PARITY_DIR, else ../shared/parity)")
    ap.add_argument("--landmarks", type=Path,
                    help="landmark file of --video and --avatar "
                         "(python -m app.diagnostics.bench --save-landmarks FILE); "
                         "default: track them now with MediaPipe")
    ap.add_argument("--video", type=Path, help="driving video (default: the kit's d0.mp4)")
    ap.add_argument("--avatar", type=Path, default=DEFAULT_AVATAR)
    ap.add_argument("--seconds", type=float, help="live loop duration (default 20; --quick 1.5)")
    ap.add_argument("--runs", type=int, help="timed runs per median (default 50; --quick 3)")
    ap.add_argument("--warmup", type=int, help="untimed runs first (default 10; --quick 1)")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="leave the torch.compile rows out of the timing ladder")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if not args.quick and not torch.cuda.is_available():
        print("gpucheck: no CUDA device here (torch " + torch.__version__ + "); run it on a CUDA machine, "
              "or use --quick for the CPU-checkable parts", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.quick else "cuda")
    seconds = args.seconds if args.seconds is not None else (1.5 if args.quick else 20.0)
    runs = args.runs or (3 if args.quick else 50)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 10)
    video = args.video or default_video()
    try:
        kit = eg.load_kit(args.parity_dir)
        frames = frames_720p(video)
        recording = (load_landmarks(args.landmarks, expected_frames=len(frames)) if args.landmarks
                     else record_landmarks(frames, args.avatar, video=video.name))
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"gpucheck: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def step(what: str) -> None:
        log.info("[%6.1f s] %s", time.perf_counter() - t_start, what)

    report = eg.Report(environment=environment(device), quick=args.quick)
    step("environment: " + ", ".join(f"{k} {v}" for k, v in report.environment.items()))
    nets = eg.run_engine_checks(report, kit, device, quick=args.quick, runs=runs, warmup=warmup, step=step)
    step("device paste-back")
    report.checks.append(check_device_paste(kit, device))
    backend = StubBackend(device) if args.quick else eg.backend_fast_path(nets, device)
    with torch.inference_mode():
        avatar = prepare_avatar(prepare_avatar_face(args.avatar, recording.source()), backend)
    step(f"waits per steady frame ({backend.name})")
    report.checks.append(check_waits(backend, avatar, driving_faces(recording, frames, STEADY_FRAMES + 4)))
    write_report(report, args.out)
    step(f"live loop, {seconds:g} s unpaced, landmarks replayed ({backend.name})")
    loop = run_loop(backend, avatar, frames, recording.source(), seconds=seconds, fps=0.0)
    report.live_loop = {"label": f"{backend.name}, {seconds:g} s, unpaced, landmarks replayed", **loop}
    write_report(report, args.out)
    step(f"render server batching: W+G of N sessions' frames as one batch ({backend.name})")
    report.batching = time_batches(backend, avatar, runs, warmup)
    backend.close()                 # its CUDA graphs' memory is free for the timing ladder
    del backend, avatar
    write_report(report, args.out)
    step("per-frame timing, official configuration to fast path")
    if args.quick:
        report.timing = eg.time_stub(device, runs, warmup)
    else:
        def partial(rows: list[eg.TimingRow]) -> None:
            report.timing = rows
            write_report(report, args.out)

        report.timing = eg.time_variants(nets, device, runs, warmup, compile=args.compile, on_row=partial)
    step("done")
    report.environment["gpucheck_seconds"] = f"{time.perf_counter() - t_start:.0f}"
    log.info("\n%s", write_report(report, args.out))
    return 1 if report.failed else 0


def write_report(report: eg.Report, out: Path) -> str:
    """``gpucheck.json`` and ``gpucheck.md`` as they stand (written after each section, so a run
    cut short by its time limit still leaves what it measured); returns the markdown."""
    (out / "gpucheck.json").write_text(report.to_json())
    markdown = report.to_markdown()
    (out / "gpucheck.md").write_text(markdown)
    return markdown


if __name__ == "__main__":
    sys.exit(main())
