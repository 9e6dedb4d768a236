"""tools/make_readme_avatars.py: the README's group photo has the four faces the avatar loading finds,
the clips have their sizes and lengths, and a screenshot becomes a JPEG no wider than asked."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import REPO_ROOT


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("make_readme_avatars", REPO_ROOT / "tools" / "make_readme_avatars.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_the_group_photo_has_four_faces(tool) -> None:
    group = tool.group_photo()
    assert group.shape == (512, 4 * tool.TILE_WIDTH, 3)
    assert tool.count_faces(group) == 4


def test_the_clips_and_the_jpeg(tool, tmp_path: Path) -> None:
    clip = tool.clip_frames(seconds=0.4)
    driving = tool.driving_frames(seconds=0.4)
    assert len(clip) == len(driving) == 10
    assert clip[0].shape == (tool.CLIP_SIZE[1], tool.CLIP_SIZE[0], 3)
    assert driving[0].shape == (tool.DRIVING_SIZE[1], tool.DRIVING_SIZE[0], 3)
    assert not np.array_equal(clip[0], clip[5]) and not np.array_equal(driving[0], driving[3])   # they move
    shot = tmp_path / "shot.png"
    cv2.imwrite(str(shot), np.full((800, 1280, 3), 128, np.uint8))
    tool.to_jpeg(shot, tmp_path / "shot.jpg", width=1100)
    assert cv2.imread(str(tmp_path / "shot.jpg")).shape == (688, 1100, 3)
