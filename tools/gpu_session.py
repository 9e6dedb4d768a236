"""Prepare the GPU check's one call on a lent GPU machine, here on the CPU.

    python tools/gpu_session.py          # from the repository root

Stages into ``.parity/`` (git-ignored) what the device needs and cannot get there: the parity
kit's checker, weight recipe, manifest and fixtures, the paste mask and the driving video (the kit
lives outside the repository, and only the repository travels), and a landmark file of that video
and the default avatar (MediaPipe is not installed there). Then it prints the device call: the
command, its carry list and its time limit. The machine there has torch with CUDA, Triton, numpy,
OpenCV and pytest, so no wheels are needed.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.avatar.loading import DEFAULT_AVATAR  # noqa: E402
from app.cli.console import native_output_silenced  # noqa: E402
from app.diagnostics.gpucheck import default_parity_dir  # noqa: E402
from app.diagnostics.tracking_bench import frames_720p  # noqa: E402
from app.live.replay import record_landmarks, save_landmarks  # noqa: E402

log = logging.getLogger("tools.gpu_session")

STAGE = ".parity"
LANDMARKS = f"{STAGE}/landmarks_d0.npz"
KIT_FILES = ("check_parity.py", "weights.py", "manifest.json", "fixtures", "data/mask_template.png",
             "data/examples/d0.mp4")
CARRY_LIMIT_MIB = 64
COMMAND_LIMIT_S = 300          # the check's own limit: leaves device time for a rerun; the call's is a minute more
DEVICE_COMMAND = (
    "set -o pipefail; export PYTHONUNBUFFERED=1; nvidia-smi; "
    f"timeout {COMMAND_LIMIT_S} python3 -m app.diagnostics.gpucheck --out $OUT --parity-dir {STAGE} "
    f"--landmarks {LANDMARKS} "
    "2>&1 | tee $OUT/gpucheck.log; rc=$?; "
    "timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/engines 2>&1 | tail -3; "
    "exit $rc")


def stage(kit: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    for rel in KIT_FILES:
        src, dst = kit / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    video = out / "data/examples/d0.mp4"
    save_landmarks(record_landmarks(frames_720p(video), DEFAULT_AVATAR, video=video.name), REPO_ROOT / LANDMARKS)


def travelling_mib() -> float:
    """What the call sends: tracked and untracked-not-ignored files, plus the staged folder."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    tree = sum((REPO_ROOT / f).stat().st_size for f in files if f and (REPO_ROOT / f).is_file())
    staged = sum(p.stat().st_size for p in (REPO_ROOT / STAGE).rglob("*") if p.is_file())
    return (tree + staged) / 2**20


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kit = default_parity_dir()
    if not (kit / "check_parity.py").is_file():
        log.error("parity kit not found at %s (set LIVEPORTRAIT_PARITY_DIR)", kit)
        return 2
    stage(kit, REPO_ROOT / STAGE)
    size = travelling_mib()
    log.info("staged %s/ from %s; the call carries %.1f MiB of %d", STAGE, kit, size, CARRY_LIMIT_MIB)
    if size > CARRY_LIMIT_MIB:
        log.error("too large to travel: leave out what is not needed")
        return 2
    log.info("device call (the run tool), once:\n  command: %s\n  carry: [\"%s\"]\n  timeout_s: %d",
             DEVICE_COMMAND, STAGE, COMMAND_LIMIT_S + 60)
    return 0


if __name__ == "__main__":
    with native_output_silenced():          # MediaPipe's and OpenCV's console chatter
        sys.exit(main())
