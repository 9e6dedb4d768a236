"""Proof of parity: the kit's own checker, run on our networks, glue functions and loader."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT

pytestmark = pytest.mark.integration

ADAPTER = "tests/support/parity_adapter.py:glue"
BROKEN = "tests/support/broken_networks.py:build"
# the kit loads an adapter by file path and puts only that file's folder on the path
KIT_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}


def run_kit(parity_dir: Path, *args: str, timeout: int = 900) -> str:
    cmd = [sys.executable, str(parity_dir / "check_parity.py"), *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=KIT_ENV, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd[1:])} failed:\n{out[-6000:]}"
    summary = [line for line in out.splitlines() if line.startswith("SUMMARY")]
    assert summary and "FAIL" not in summary[-1], out[-6000:]
    return out


def test_networks_match_official(parity_dir: Path) -> None:
    out = run_kit(parity_dir, "--module", "all", "--factory", "engines.models:build")
    for name in ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator",
                 "retarget_shoulder", "retarget_mouth", "retarget_eye"):
        assert f"{name}=PASS" in out


def test_glue_functions_match_official(parity_dir: Path) -> None:
    out = run_kit(parity_dir, "--glue", "all", "--func", ADAPTER,
                  "--factory", "engines.models:build", "--require-all")
    assert "NOT CHECKED" not in out
    for name in ("glue_headpose", "glue_rotation", "glue_transform_keypoint", "glue_stitching_retargeting",
                 "glue_ratios", "glue_crop_paste", "glue_pipeline_motion"):
        assert f"{name}=PASS" in out


def test_animal_motion_matches_official(parity_dir: Path) -> None:
    """The animal pipeline's formula: the kit checks this fixture only when it is named."""
    out = run_kit(parity_dir, "--glue", "glue_animal_motion", "--func", ADAPTER, "--factory", "engines.models:build")
    assert "glue_animal_motion=PASS" in out
    rows = {line.split()[1]: line for line in out.splitlines() if line.strip().startswith("glue_animal_motion ")}
    for name in ("x_d_plain_m1p0", "x_d_plain_m1p75", "x_d_stitched_m1p0", "x_d_stitched_m1p75", "motion_multiplier"):
        assert rows[name].rstrip().endswith("PASS"), rows.get(name)


def test_checkpoint_loader_reads_official_layout(parity_dir: Path) -> None:
    out = run_kit(parity_dir, "--module", "all", "--loader", "engines.checkpoints:load_liveportrait_file")
    assert out.count("weights: loader(") == 7


def test_kit_rejects_a_subtly_wrong_network(parity_dir: Path) -> None:
    """The PASSes above mean something: BatchNorm eps 1e-3 instead of 1e-5 in F must FAIL."""
    proc = subprocess.run([sys.executable, str(parity_dir / "check_parity.py"), "--module",
                           "appearance_feature_extractor", "--factory", BROKEN],
                          cwd=REPO_ROOT, env=KIT_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "appearance_feature_extractor=FAIL" in proc.stdout
