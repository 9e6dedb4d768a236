"""main.py end to end: the start-up check on the kit's synthetic checkpoints, and clean errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_main(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_start_up_check_runs_all_networks_on_official_layout(synthetic_weights_dir: Path) -> None:
    proc = run_main("--weights", str(synthetic_weights_dir), "--device", "cpu", "--no-download")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("F appearance", "M motion", "S stitching", "W warping", "G decoder"):
        assert stage in proc.stderr
    assert "all seven LivePortrait networks are ready" in proc.stderr


def test_missing_weights_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = run_main("--weights", str(tmp_path / "nothing"), "--no-download")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 5 LivePortrait checkpoint(s) missing")
    assert "Traceback" not in proc.stderr


def test_corrupt_checkpoint_is_one_line_exit_2(synthetic_weights_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "w"
    shutil.copytree(synthetic_weights_dir, broken)
    target = broken / "liveportrait" / "base_models" / "warping_module.pth"
    target.write_bytes(target.read_bytes()[:1000])
    proc = run_main("--weights", str(broken), "--no-download", "--device", "cpu")
    assert proc.returncode == 2
    assert "warping_module.pth: not a readable PyTorch checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
