"""Benchmark of rendering on a render server: ``python main.py serve`` in a child process on this
machine, reached over loopback. Parts (``--part``, repeatable; default ``stub``):

  stub        one remote client through the whole live loop (``app.diagnostics.bench.run_loop``) against the
              same loop animating in this process: output frames/s (camera at ``--fps``), and the
              capture-to-output latency that rendering remotely adds (camera at ``--fps`` and at
              ``--live-fps``, a webcam's pace, where no frame waits). Stub engine on both sides.
  concurrent  ``--clients`` remote clients at once, one process each, whole live loop, camera at
              ``--live-fps``: frames/s each.
  networks    real networks on the CPU (``--weights``): ``--frames`` frames animated here and on
              the server with jpeg and with raw transport; how far the remote images are from the
              local ones (max abs difference, PSNR).
  capacity    sessions at ``--target-fps`` one server (``--backend``, ``--device``, ``--weights``)
              holds, without batching (``--max-batch 1``) and with the server's default: light
              protocol clients (one process each, no live loop, so the clients' own work stays out
              of it), ramped up through ``--sessions``.

    python -m app.diagnostics.remote_bench --part stub --part concurrent
    python -m app.diagnostics.remote_bench --part networks --weights DIR --frames 3
    python -m app.diagnostics.remote_bench --part capacity --backend auto --device cuda --weights DIR   # GPU machine

Tracking is replayed (``--landmarks FILE`` from ``python -m app.diagnostics.bench --save-landmarks``, else the
video is tracked once with MediaPipe), so it costs the same locally and remotely. Progress goes to
the log; the figures go to stdout as one table at the end (and to ``--json``).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engines.options import add_engine_arguments
from engines.registry import make_backend

from ..animation.animator import Animator
from ..avatar.framing import AvatarChoice
from ..avatar.loading import DEFAULT_AVATAR, load_avatar, load_avatar_face
from ..cli.console import native_output_silenced
from ..face.driving import DrivingFace
from ..live.replay import LandmarkRecording, load_landmarks, record_landmarks, save_landmarks
from ..remote.client import RemoteAnimator, RemoteServer, ServerLink
from ..remote.server.local_server import LocalServer, free_port, serve_command
from ..settings import AnimationSettings, LiveSettings
from .bench import run_loop
from .tracking_bench import default_video, frames_720p

log = logging.getLogger("app.diagnostics.remote_bench")

PARTS = ("stub", "concurrent", "networks", "capacity")
VIDEO_FPS = 25.0                    # the timestamps given to frames animated one by one (networks part)
ON_PACE = 0.95                      # a session holds the target rate when it renders at least this share of it
SERVER_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


# -- servers and clients -----------------------------------------------------------------------
def start_server(workdir: Path, name: str, options: list[str], ready_timeout_s: float = 120.0) -> LocalServer:
    port = free_port()
    server = LocalServer(serve_command(port, *options), f"http://127.0.0.1:{port}", workdir / f"{name}.log",
                         env=SERVER_ENV, ready_timeout_s=ready_timeout_s)
    server.start()
    log.info("server %s (%s) ready in %.1f s", name, " ".join(options), server.ready_s)
    return server


def session_url(server: LocalServer) -> str:
    return "ws" + server.base_url.removeprefix("http")


def connect_remote(url: str, frame_format: str, path: str | Path, recording: LandmarkRecording) -> RemoteAnimator:
    animator = RemoteAnimator(RemoteServer.parse(url, frame_format=frame_format), LiveSettings(),
                              load_avatar_face(path, recording.source()))
    animator.connect()
    return animator


def link_session(url: str, frame_format: str, path: str, recording: LandmarkRecording, frames: list[np.ndarray],
                 fps: float, seconds: float, start: Callable[[], object]) -> dict[str, Any]:
    """One session of driving crops straight through the protocol, paced at ``fps``: frames
    rendered per second, round trip (median ms), frames answered without a render (held or still),
    frames without a link."""
    faces = [f for f in recording.driving_faces(frames, VIDEO_FPS) if f is not None]
    settings = AnimationSettings()
    link = ServerLink(RemoteServer.parse(url, frame_format=frame_format), load_avatar_face(path, recording.source()),
                      settings)
    link.connect()
    start()
    rendered = unrendered = lost = 0
    round_trips = []
    period = 1.0 / fps
    t0 = time.perf_counter()
    due = t0
    try:
        while (now := time.perf_counter()) - t0 < seconds:
            if now < due:
                time.sleep(due - now)
            due = max(due + period, time.perf_counter() - period)     # late: no burst to catch up
            sent = time.perf_counter()
            answer = link.animate(faces[(rendered + unrendered + lost) % len(faces)], sent, settings)
            round_trips.append((time.perf_counter() - sent) * 1000)
            if answer is None:
                lost += 1
            elif answer.rendered:
                rendered += 1
            else:
                unrendered += 1
        wall = time.perf_counter() - t0
    finally:
        link.close()
    return {"fps": rendered / wall, "round_trip_ms": statistics.median(round_trips), "unrendered": unrendered,
            "lost": lost}


def _client_process(kind: str, index: int, spec: dict[str, Any], barrier: Any, results: Any) -> None:
    """A client in a process of its own (spawned): prepares, waits for the others, runs, reports."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        with native_output_silenced():
            frames = frames_720p(Path(spec["video"]))
            recording = load_landmarks(Path(spec["landmarks"]), expected_frames=len(frames))
            if kind == "pipeline":
                import torch

                torch.set_num_threads(1)
                animator = connect_remote(spec["url"], spec["format"], spec["avatar"], recording)
                try:
                    barrier.wait(timeout=300)
                    report = run_loop(None, None, frames, recording.source(), seconds=spec["seconds"],
                                      fps=spec["fps"], animator=animator)
                finally:
                    animator.close()
                results.put((index, {"fps": report["fps"], "latency_ms": report["latency_ms"]}))
            else:
                results.put((index, link_session(spec["url"], spec["format"], spec["avatar"], recording, frames,
                                                 spec["fps"], spec["seconds"], lambda: barrier.wait(timeout=300))))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the part
        barrier.abort()
        results.put((index, {"error": f"{type(e).__name__}: {e}"}))


def run_clients(kind: str, count: int, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """``count`` clients of ``kind`` (``pipeline`` or ``link``) at once, one process each; their reports."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    processes = [ctx.Process(target=_client_process, args=(kind, i, spec, barrier, results), daemon=True)
                 for i in range(count)]
    for process in processes:
        process.start()
    try:
        reports = dict(results.get(timeout=600 + spec["seconds"]) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    errors = [r["error"] for r in reports.values() if "error" in r]
    if errors:
        raise RuntimeError(f"{len(errors)} of {count} clients failed: {errors[0]}")
    return [reports[i] for i in range(count)]


# -- parts -------------------------------------------------------------------------------------
def part_stub(a: argparse.Namespace, frames: list[np.ndarray], recording: LandmarkRecording,
              workdir: Path) -> dict[str, Any]:
    """Per repeat, local then remote: at ``--fps`` (throughput; a frame may wait in a queue behind
    the one being animated) and at ``--live-fps`` (a webcam's pace: the latency of the work alone)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # as app.diagnostics.bench with the stub: tiny tensor operations only
    backend = make_backend("stub", device="cpu")
    avatar = load_avatar(AvatarChoice(Path(a.avatar)), backend, recording.source())
    paces = {"full": a.fps, "live": a.live_fps}
    runs: dict[tuple[str, str], list[dict]] = {(where, pace): [] for where in ("local", "remote") for pace in paces}
    server = start_server(workdir, "stub", ["--backend", "stub", "--device", "cpu"])
    try:
        for repeat in range(a.repeats):
            for pace, fps in paces.items():
                runs["local", pace].append(run_loop(backend, avatar, frames, recording.source(), seconds=a.seconds,
                                                    fps=fps))
                animator = connect_remote(session_url(server), a.format, a.avatar, recording)
                try:
                    runs["remote", pace].append(run_loop(None, None, frames, recording.source(), seconds=a.seconds,
                                                         fps=fps, animator=animator))
                finally:
                    animator.close()
                for where in ("local", "remote"):
                    r = runs[where, pace][-1]
                    log.info("run %d %-6s camera at %g fps: %6.1f frames/s, latency %5.1f ms (median), stages %s",
                             repeat + 1, where, fps, r["fps"], r["latency_ms"],
                             ", ".join(f"{k} {v:.1f}" for k, v in r["stage_ms"].items()))
    finally:
        server.stop()
        backend.close()
        torch.set_num_threads(threads)
    figures: dict[str, Any] = {"format": a.format, "fps": a.fps, "live_fps": a.live_fps}
    for pace in paces:
        for where in ("local", "remote"):
            figures[f"{where}_{pace}_fps"] = [r["fps"] for r in runs[where, pace]]
            figures[f"{where}_{pace}_latency_ms"] = [r["latency_ms"] for r in runs[where, pace]]
        figures[f"added_{pace}_latency_ms"] = (statistics.median(figures[f"remote_{pace}_latency_ms"])
                                               - statistics.median(figures[f"local_{pace}_latency_ms"]))
    return figures


def part_concurrent(a: argparse.Namespace, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    server = start_server(workdir, "concurrent", ["--backend", "stub", "--device", "cpu",
                                                  "--max-sessions", str(max(8, a.clients))])
    try:
        # each camera at a webcam's pace: clients that race would measure this machine's cores instead
        reports = run_clients("pipeline", a.clients, {**spec, "url": session_url(server), "fps": a.live_fps})
    finally:
        server.stop()
    for i, r in enumerate(reports):
        log.info("client %d: %.1f frames/s, latency %.1f ms", i + 1, r["fps"], r["latency_ms"])
    return {"clients": a.clients, "format": a.format, "camera_fps": a.live_fps, "fps": [r["fps"] for r in reports],
            "latency_ms": [r["latency_ms"] for r in reports]}


def animate_frames(animator: Animator | RemoteAnimator, faces: list[DrivingFace | None], count: int
                   ) -> tuple[list[np.ndarray], float]:
    """The output images of the first ``count`` frames with a face (one by one, at the video's
    timestamps, so the smoothing sees the same times everywhere) and the seconds per frame."""
    images = []
    t0 = time.perf_counter()
    for i, face in enumerate(faces):
        out = animator.process(face, i / VIDEO_FPS)
        if face is not None:
            images.append(out.image)
            if len(images) == count:
                break
    return images, (time.perf_counter() - t0) / max(1, len(images))


def compare(local: list[np.ndarray], remote: list[np.ndarray]) -> dict[str, Any]:
    """Max abs difference and PSNR (dB; inf where identical) of the remote images to the local ones."""
    if len(local) != len(remote):
        raise RuntimeError(f"{len(local)} local images but {len(remote)} remote ones")
    diffs = [np.abs(x.astype(np.int16) - y.astype(np.int16)) for x, y in zip(local, remote, strict=True)]
    mses = [float(np.mean(d.astype(np.float64) ** 2)) for d in diffs]
    psnr = [math.inf if m == 0 else 10 * math.log10(255.0 ** 2 / m) for m in mses]
    return {"max_abs_diff": int(max(int(d.max()) for d in diffs)), "psnr_db": psnr, "min_psnr_db": min(psnr),
            "identical": all(m == 0 for m in mses)}


def part_networks(a: argparse.Namespace, frames: list[np.ndarray], recording: LandmarkRecording,
                  workdir: Path) -> dict[str, Any]:
    if not a.weights:
        raise SystemExit("--part networks needs --weights DIR")
    import torch

    faces = list(recording.driving_faces(frames, VIDEO_FPS))
    if a.threads:
        torch.set_num_threads(a.threads)
    backend = make_backend("torch", weights=a.weights, device="cpu")
    animator = Animator(backend, LiveSettings(), load_avatar(AvatarChoice(Path(a.avatar)), backend, recording.source()))
    try:
        local, local_s = animate_frames(animator, faces, a.frames)
    finally:
        animator.close()
        backend.close()
    log.info("local: %d frames, %.2f s per frame", len(local), local_s)
    result: dict[str, Any] = {"frames": len(local), "local_s_per_frame": local_s,
                              "local_torch_threads": torch.get_num_threads()}
    server = start_server(workdir, "networks", ["--backend", "torch", "--device", "cpu", "--weights", a.weights],
                          ready_timeout_s=600)
    try:
        for fmt in ("jpeg", "raw"):
            remote_animator = connect_remote(session_url(server), fmt, a.avatar, recording)
            try:
                remote, remote_s = animate_frames(remote_animator, faces, a.frames)
            finally:
                remote_animator.close()
            result[fmt] = {**compare(local, remote), "remote_s_per_frame": remote_s}
            log.info("remote %s: %.2f s per frame, max abs difference %d, PSNR %s dB", fmt, remote_s,
                     result[fmt]["max_abs_diff"], ", ".join(f"{p:.1f}" for p in result[fmt]["psnr_db"]))
    finally:
        server.stop()
    return result


def part_capacity(a: argparse.Namespace, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    engine = ["--backend", a.backend, "--device", a.device] + (["--weights", a.weights] if a.weights else [])
    result: dict[str, Any] = {"target_fps": a.target_fps, "engine": " ".join(engine)}
    for label, batching in (("no batching", ["--max-batch", "1"]), ("batching", [])):
        server = start_server(workdir, label.replace(" ", "-"),
                              engine + ["--max-sessions", str(max(a.sessions))] + batching, ready_timeout_s=600)
        levels = []
        try:
            for count in a.sessions:
                reports = run_clients("link", count, {**spec, "url": session_url(server), "fps": a.target_fps})
                fps = [r["fps"] for r in reports]
                held = min(fps) >= ON_PACE * a.target_fps
                levels.append({"sessions": count, "min_fps": min(fps), "median_fps": statistics.median(fps),
                               "round_trip_ms": statistics.median(r["round_trip_ms"] for r in reports),
                               "unrendered": sum(r["unrendered"] for r in reports), "held": held})
                log.info("%s, %d sessions: %.1f frames/s each at least (median %.1f), round trip %.1f ms%s",
                         label, count, min(fps), statistics.median(fps), levels[-1]["round_trip_ms"],
                         "" if held else ": not held")
                if not held:
                    break
            batches = (server.health() or {}).get("batches", {})
        finally:
            server.stop()
        result[label] = {"sessions_held": max((lv["sessions"] for lv in levels if lv["held"]), default=0),
                         "levels": levels, "batch_sizes": batches}
    return result


# -- report ------------------------------------------------------------------------------------
def table(figures: dict[str, Any]) -> str:
    """The figures as an aligned text table: part, figure, value."""
    rows: list[tuple[str, str, str]] = []

    def runs(values: list[float], unit: str) -> str:
        return ", ".join(f"{v:.1f}" for v in values) + f" {unit}"

    if "stub" in figures:
        s = figures["stub"]
        rows += [("stub", f"remote frames/s ({s['format']}, camera at {s['fps']:g}; target >= 60)",
                  runs(s["remote_full_fps"], "fps")),
                 ("stub", "local frames/s (same loop)", runs(s["local_full_fps"], "fps"))]
        for pace in ("full", "live"):
            rate = s["fps"] if pace == "full" else s["live_fps"]
            rows += [("stub", f"camera at {rate:g}: latency remote / local (median)",
                      f"{runs(s[f'remote_{pace}_latency_ms'], 'ms')} / {runs(s[f'local_{pace}_latency_ms'], 'ms')}"),
                     ("stub", f"camera at {rate:g}: latency added by remote (target <= 15)",
                      f"{s[f'added_{pace}_latency_ms']:.1f} ms")]
    if "concurrent" in figures:
        c = figures["concurrent"]
        rows += [("concurrent", f"{c['clients']} clients, camera at {c['camera_fps']:g}, frames/s each (target >= 25)",
                  runs(c["fps"], "fps")),
                 ("concurrent", "latency each (median)", runs(c["latency_ms"], "ms"))]
    if "networks" in figures:
        n = figures["networks"]
        rows.append(("networks", f"{n['frames']} frames, local s/frame ({n['local_torch_threads']} torch threads)",
                     f"{n['local_s_per_frame']:.2f} s"))
        for fmt in ("jpeg", "raw"):
            r = n[fmt]
            rows.append(("networks", f"{fmt}: max abs diff / min PSNR / s per frame",
                         f"{r['max_abs_diff']} / {r['min_psnr_db']:.1f} dB / {r['remote_s_per_frame']:.2f} s"
                         + (" (identical)" if r["identical"] else "")))
    if "capacity" in figures:
        c = figures["capacity"]
        for label in ("no batching", "batching"):
            r = c[label]
            rows.append(("capacity", f"sessions at {c['target_fps']:g} fps, {label}",
                         f"{r['sessions_held']} (batches {r['batch_sizes']})"))
    width = [max(len(row[i]) for row in rows) for i in range(2)] if rows else [0, 0]
    return "".join(f"{p:<{width[0]}}  {f:<{width[1]}}  {v}\n" for p, f, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.diagnostics.remote_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", action="append", choices=PARTS, help="what to measure (repeatable; default stub)")
    # the engine of the networks part (--weights) and of the capacity part's server
    add_engine_arguments(ap, backend="stub", device="cpu",
                         weights="none; --part networks needs it, --part capacity: the server's default")
    ap.add_argument("--avatar", default=str(DEFAULT_AVATAR))
    ap.add_argument("--video", type=Path, default=default_video())
    ap.add_argument("--landmarks", type=Path, metavar="FILE",
                    help="replay these landmarks (python -m app.diagnostics.bench --save-landmarks)")
    ap.add_argument("--format", choices=("jpeg", "raw"), default="jpeg", help="transport of stub and concurrent")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each live run")
    ap.add_argument("--fps", type=float, default=300.0,
                    help="camera pace of the throughput runs (default 300, as app.diagnostics.bench's figures: "
                         "above what the loop sustains, without a capture thread that spins; 0: unpaced)")
    ap.add_argument("--live-fps", type=float, default=30.0,
                    help="camera pace of the stub part's latency runs and of the concurrent clients")
    ap.add_argument("--repeats", type=int, default=1, help="stub: local and remote runs, interleaved")
    ap.add_argument("--clients", type=int, default=4, help="concurrent: clients at once")
    ap.add_argument("--frames", type=int, default=3, help="networks: frames compared")
    ap.add_argument("--threads", type=int, default=0,
                    help="networks: torch threads of the local run (0: torch's default, which is also what "
                         "main.py serve gives its replica). A CPU's results depend on the thread count")
    ap.add_argument("--target-fps", type=float, default=30.0, help="capacity: each session's frame rate")
    ap.add_argument("--sessions", type=lambda s: [int(n) for n in s.split(",")], default=[1, 2, 4, 8, 12, 16],
                    help="capacity: session counts to try, in order (comma-separated)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--logs", type=Path, metavar="DIR", help="keep the servers' logs in DIR (default: dropped)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parts = a.part or ["stub"]

    frames = frames_720p(a.video)
    with tempfile.TemporaryDirectory(prefix="avatarcam-remote-bench-") as tmp:
        workdir = a.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        landmarks = a.landmarks
        if landmarks is None:
            landmarks = workdir / "landmarks.npz"
            save_landmarks(record_landmarks(frames, Path(a.avatar), video=a.video.name), landmarks)
            log.info("tracked %d frames of %s once; replayed from now on", len(frames), a.video)
        recording = load_landmarks(landmarks, expected_frames=len(frames))
        spec = {"video": str(a.video), "landmarks": str(landmarks), "avatar": a.avatar, "format": a.format,
                "seconds": a.seconds, "fps": a.fps}
        figures: dict[str, Any] = {"video": a.video.name, "frames_in_video": len(frames)}
        for part in parts:
            log.info("part %s", part)
            if part == "stub":
                figures[part] = part_stub(a, frames, recording, workdir)
            elif part == "concurrent":
                figures[part] = part_concurrent(a, spec, workdir)
            elif part == "networks":
                figures[part] = part_networks(a, frames, recording, workdir)
            else:
                figures[part] = part_capacity(a, spec, workdir)
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2))
    sys.stdout.write(table(figures))
    return 0


if __name__ == "__main__":
    with native_output_silenced():          # MediaPipe's and OpenCV's console chatter
        sys.exit(main())
