"""The GPU check (python -m app.diagnostics.gpucheck): its --quick form end to end on the CPU, the timing
ladder's definition, that its checks can fail, the landmark files it replays, and that it imports
where MediaPipe, PySide6 and pyvirtualcam are not installed (the lent GPU machine)."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import REPO_ROOT

from app.avatar.loading import DEFAULT_AVATAR
from app.diagnostics import gpucheck
from app.diagnostics.tracking_bench import frames_720p
from app.live.replay import load_landmarks, record_landmarks, save_landmarks
from engines import gpucheck as eg
from engines.backend import TorchBackend
from engines.device import device_waits


@pytest.fixture(scope="module")
def d0_frames(d0: Path) -> list[np.ndarray]:
    return frames_720p(d0)


@pytest.fixture(scope="module")
def landmark_file(d0_frames, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("landmarks") / "d0.npz"
    save_landmarks(record_landmarks(d0_frames, DEFAULT_AVATAR, video="d0.mp4"), path)
    return path


@pytest.mark.integration
def test_quick_check_runs_every_section_and_writes_the_report(parity_dir: Path, d0: Path, landmark_file: Path,
                                                              tmp_path: Path) -> None:
    rc = gpucheck.main(["--out", str(tmp_path), "--quick", "--parity-dir", str(parity_dir), "--video", str(d0),
                        "--landmarks", str(landmark_file), "--seconds", "1"])
    assert rc == 0
    report = json.loads((tmp_path / "gpucheck.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    for name in ("motion_extractor fp32 official", "retarget_eye fp32 official",
                 "CPU reference vs F.grid_sample fp32 (small case)", "device paste-back on cpu vs the kit",
                 "one wait per steady frame (cpu)"):
        assert checks[name]["passed"] is True, checks[name]
    assert checks["graph replay vs eager on new inputs"]["passed"] is None          # needs CUDA: skipped
    assert report["failed"] == []
    assert report["timing"] and report["timing"][0]["per_frame_ms"] > 0
    loop = report["live_loop"]
    assert loop["frames_out"] > 0 and loop["fps"] > 0 and set(loop["stage_ms"]) >= {"tracking", "animation"}
    markdown = (tmp_path / "gpucheck.md").read_text()
    assert "| parity | motion_extractor fp32 official | PASS |" in markdown
    assert "| live loop | frames/s |" in markdown and "all 7 checks passed (1 skipped)" in markdown
    # the render server's batching: W+G of 1, 2, 4 and 8 sessions' frames as one batch
    batches = report["batching"]
    assert [b["sessions"] for b in batches] == [1, 2, 4, 8]
    assert all(b["batch_ms"] > 0 and b["ms_per_session"] == pytest.approx(b["batch_ms"] / b["sessions"])
               for b in batches)
    assert "| sessions in one W+G batch |" in markdown


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_without_cuda_the_full_check_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    assert gpucheck.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no CUDA device" in err and "--quick" in err
    assert not (tmp_path / "gpucheck.json").exists()


def test_missing_kit_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert gpucheck.main(["--out", str(tmp_path), "--quick", "--parity-dir", str(tmp_path)]) == 2
    assert "parity kit not found" in capsys.readouterr().err


def test_the_timing_ladder_adds_one_optimisation_at_a_time_to_the_official_configuration() -> None:
    rows = dict(eg.timing_variants(compile=True))
    baseline = rows[eg.BASELINE]
    assert baseline == {"precision": "fp16", "cuda_graphs": False, "channels_last": False,
                        "fused_grid_sample": False, "compile": False}
    singles = {k: v for k, v in rows.items() if k.startswith("baseline + ")}
    assert len(singles) == len(eg.OPTIMISATIONS)
    for options in singles.values():
        assert sum(options[k] != baseline[k] for k in baseline) == 1
    # the fast path is what TorchBackend runs by default on CUDA
    defaults = {k: p.default for k, p in inspect.signature(TorchBackend).parameters.items()
                if k in eg.OPTIMISATIONS}
    fast = next(v for k, v in rows.items() if k.startswith("fast path:"))
    assert {k: fast[k] for k in defaults} == defaults
    assert not any(v["compile"] for v in dict(eg.timing_variants(compile=False)).values())


@pytest.mark.integration
def test_a_wrong_network_fails_its_parity_check(parity_dir: Path) -> None:
    from support.broken_networks import build as build_broken

    kit = eg.load_kit(parity_dir)
    net = build_broken("appearance_feature_extractor")
    net.load_state_dict(kit.weights.synthetic_state_dict(kit.entry_of(kit.load_manifest(),
                                                                      "appearance_feature_extractor")))
    check = eg.check_network(kit, "appearance", net.eval(), torch.device("cpu"), eg.NETWORK_CONFIGS[0])
    assert check.passed is False and "FAIL: feature_3d" in check.detail


def test_a_failed_check_shows_in_the_report() -> None:
    report = eg.Report(environment={"torch": "x"})
    report.checks = [eg.Check("s", "good", True, "ok"), eg.Check("s", "bad", False, "off by 3"),
                     eg.Check("s", "later", None, "skipped: needs CUDA")]
    report.timing = [eg.TimingRow(eg.BASELINE, {}, {"M motion": 2.0, "S stitching": 0.5, "W+G render": 7.5}, 10.0),
                     eg.TimingRow("fast path: all", {}, {"M motion": 1.0, "S stitching": 0.5, "W+G render": 2.5}, 4.0)]
    eg.add_ratios(report.timing)
    assert [c.name for c in report.failed] == ["bad"]
    assert report.headline().startswith("fast path / baseline = 0.40")
    markdown = report.to_markdown()
    assert "| s | bad | FAIL | off by 3 |" in markdown and "1 check(s) FAILED" in markdown
    assert json.loads(report.to_json())["failed"] == ["bad"]


def test_device_waits_counts_host_reads_on_the_cpu() -> None:
    x = torch.arange(4.0)
    _, waits = device_waits(lambda: (x * 2 + 1).sum(), torch.device("cpu"))
    assert waits == []
    value, waits = device_waits(lambda: float(x.sum()) + bool(x[1] > 0), torch.device("cpu"))
    assert value == 7.0 and len(waits) == 2


def test_landmark_files_round_trip_and_refuse_other_videos(landmark_file: Path, d0_frames, tmp_path: Path) -> None:
    rec = load_landmarks(landmark_file, expected_frames=len(d0_frames))
    assert len(rec.frames) == len(d0_frames) and rec.avatar.shape == (478, 2)
    tracked = [f for f in rec.frames if f is not None]
    assert len(tracked) > len(d0_frames) // 2 and tracked[0].shape == (478, 2)
    source = rec.source()
    first = source.track(d0_frames[0])
    assert first is rec.frames[0] and source.detect_faces(d0_frames[0])[0] is rec.avatar
    with pytest.raises(ValueError, match="frames, but the video has 5"):
        load_landmarks(landmark_file, expected_frames=5)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a landmark file"):
        load_landmarks(junk)


@pytest.mark.integration
def test_the_check_imports_without_mediapipe_pyside_or_pyvirtualcam() -> None:
    code = ("import sys\n"
            "for name in ('mediapipe', 'PySide6', 'pyvirtualcam'): sys.modules[name] = None\n"
            "import app.diagnostics.gpucheck, app.diagnostics.bench\n"
            "assert type(app.diagnostics.bench.null_camera_sink()).__name__ == 'LetterboxSink'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.integration
def test_the_loop_benchmark_replays_a_landmark_file_without_mediapipe(landmark_file: Path, d0: Path,
                                                                      tmp_path: Path) -> None:
    # What the GPU machine runs: avatar preparation and the loop with MediaPipe absent.
    report = tmp_path / "bench.json"
    code = ("import sys\n"
            "for name in ('mediapipe', 'PySide6', 'pyvirtualcam'): sys.modules[name] = None\n"
            "import app.diagnostics.bench\n"
            f"sys.exit(app.diagnostics.bench.main(['--backend', 'stub', '--tracking', 'replay',"
            f" '--landmarks', {str(landmark_file)!r}, '--video', {str(d0)!r}, '--frames', '4',"
            f" '--json', {str(report)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(report.read_text())["frames_out"] == 4
