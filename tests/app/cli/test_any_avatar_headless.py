"""main.py --headless with any avatar, end to end on the kit's synthetic weights: an avatar animated
as an animal from a manual face box (``--avatar-kind animal --avatar-box``) with the animal weight
set in the repository's own layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.fakes import run_main

from app.avatar.loading import DEFAULT_AVATAR
from engines.weights import ANIMAL_CHECKPOINT_FILES, CHECKPOINT_FILES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def animal_layout_weights(synthetic_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic checkpoints linked into both layouts: the human files and the animal F, M, W,
    G under ``liveportrait_animals/base_models_v1.1/`` (the animal set uses the human S)."""
    out = tmp_path_factory.mktemp("animal_layout")
    for name, rel in {**{f"human {k}": v for k, v in CHECKPOINT_FILES.items()}, **ANIMAL_CHECKPOINT_FILES}.items():
        source = synthetic_weights_dir / CHECKPOINT_FILES[name.removeprefix("human ")]
        target = out / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    return out


def test_an_avatar_animates_as_an_animal_from_its_face_box(animal_layout_weights: Path, d0: Path,
                                                           tmp_path: Path) -> None:
    import cv2

    out = tmp_path / "out.mp4"
    box = (140, 40, 180)        # around the astronaut's face, in its 512 x 512 pixels
    proc = run_main("--headless", "--avatar", str(DEFAULT_AVATAR), "--avatar-kind", "animal",
                    "--avatar-box", ",".join(map(str, box)), "--camera", str(d0), "--backend", "torch",
                    "--weights", str(animal_layout_weights), "--no-download", "--device", "cpu",
                    "--record", str(out), "--max-frames", "3", "--no-virtual-camera", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    avatar = cv2.imread(str(DEFAULT_AVATAR))
    ok, frame = cap.read()
    assert ok and frame.shape == avatar.shape                # pasted back into the avatar image
    diff = np.abs(frame.astype(int) - avatar.astype(int)).mean(axis=2)
    x, y, side = box
    # the box is re-rendered; far from it the picture is the avatar itself
    assert diff[y + side // 4:y + 3 * side // 4, x + side // 4:x + 3 * side // 4].mean() > 20
    assert diff[y + side + 60:].mean() < 8
