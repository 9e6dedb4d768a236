"""Any avatar end to end, on the kit's synthetic weights (issue 19's "done when"): ``main.py
--headless`` animates a cartoon the face mesh misses from its ``--avatar-box``, and a cat photo
(found by the cat-face detector) and a drawn dog (``--avatar-box``) with ``--avatar-kind animal``;
the animals also through ``main.py serve`` (torch engine, the animal set loaded when the first
animal session needs it). Each run records its frames; what they must show follows the output
rules: a human pasted back into the picture, an animal's crop unless ``--animal-paste-back``."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.avatars import cartoon_face, dog_face
from support.fakes import run_main
from support.outcomes import assert_outcome, recorded_frames

from app.avatar.framing import AvatarBox
from app.avatar.loading import DEFAULT_AVATAR
from app.avatar.suggest import cat_crop_box, find_cat_face
from app.face import crop as fc
from app.remote.server.local_server import LocalServer, free_port, serve_command

pytestmark = pytest.mark.integration

FRAMES = 3
TOKEN = "any-avatar-end-to-end-token"
CAT = DEFAULT_AVATAR.parent / "cat.jpg"
CROP_SHAPE = (fc.AVATAR_CROP.dsize, fc.AVATAR_CROP.dsize, 3)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, AvatarBox]]:
    """The drawn cartoon and dog as files, with their face boxes."""
    out = tmp_path_factory.mktemp("drawn_avatars")
    avatars = {}
    for name, (image, box) in (("cartoon", cartoon_face()), ("dog", dog_face())):
        path = out / f"{name}.png"
        cv2.imwrite(str(path), image)
        avatars[name] = (path, AvatarBox(*(round(v) for v in box)))
    return avatars


def engine_flags(weights: Path) -> tuple[str, ...]:
    return ("--backend", "torch", "--device", "cpu", "--weights", str(weights), "--no-download")


def run_avatar(avatar: Path, out: Path, d0: Path, *flags: str, remote: tuple[str, ...] = (),
               weights: Path | None = None) -> list[np.ndarray]:
    """``main.py --headless`` on ``avatar`` driven by d0 for FRAMES frames, locally on ``weights``
    or with ``remote`` flags; its recorded frames, after checking a clean exit."""
    engine = remote if remote else engine_flags(weights)
    proc = run_main("--headless", "--no-virtual-camera", "--avatar", str(avatar), *flags, *engine,
                    "--camera", str(d0), "--max-frames", str(FRAMES), "--record", str(out), timeout=600)
    assert_outcome(proc.returncode, proc.stderr, 0)
    frames = recorded_frames(out)
    assert len(frames) == FRAMES
    return frames


def box_flag(box: AvatarBox) -> str:
    return f"--avatar-box={box}"          # "=": a negative X would read as an option


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_animated_crop(frames: list[np.ndarray], avatar_image: np.ndarray, box: AvatarBox) -> None:
    """Crop output: 512 x 512 frames that are re-rendered (not the still crop)."""
    transform = fc.transform_from_box(box.x, box.y, box.size)
    still = fc.warp_to_crop(avatar_image, transform, precise=True, border="replicate")
    for frame in frames:
        assert frame.shape == CROP_SHAPE
        assert mean_difference(frame, still) > 10        # the synthetic networks' render, not the photo


def assert_pasted_into(frames: list[np.ndarray], avatar_image: np.ndarray, box: AvatarBox) -> None:
    """Full-picture output: the face box re-rendered, the picture outside it untouched."""
    x, y, side = (int(round(v)) for v in (box.x, box.y, box.size))
    inner = (slice(max(y + side // 4, 0), y + 3 * side // 4), slice(max(x + side // 4, 0), x + 3 * side // 4))
    outside = np.ones(avatar_image.shape[:2], bool)
    outside[max(y - 4, 0):y + side + 4, max(x - 4, 0):x + side + 4] = False
    for frame in frames:
        assert frame.shape == avatar_image.shape
        assert mean_difference(frame[inner], avatar_image[inner]) > 10
        # only the video codec touches the rest
        assert np.abs(frame.astype(np.int16) - avatar_image.astype(np.int16))[outside].mean() < 4


# -- locally ---------------------------------------------------------------------------------------
def test_a_cartoon_the_face_mesh_misses_animates_from_its_box(drawn, synthetic_weights_both_sets: Path,
                                                              d0: Path, tmp_path: Path) -> None:
    path, box = drawn["cartoon"]
    refused = run_main("--headless", "--no-virtual-camera", "--avatar", str(path), "--backend", "stub",
                       "--camera", str(d0), "--max-frames", "1")
    assert_outcome(refused.returncode, refused.stderr, 2, "--avatar-box")
    assert "--avatar-kind animal" in refused.stderr
    frames = run_avatar(path, tmp_path / "cartoon.mp4", d0, box_flag(box), weights=synthetic_weights_both_sets)
    assert_pasted_into(frames, cv2.imread(str(path)), box)


def test_a_cat_photo_animates_as_an_animal_from_the_detected_face(synthetic_weights_both_sets: Path, d0: Path,
                                                                  tmp_path: Path) -> None:
    image = cv2.imread(str(CAT))
    detected = AvatarBox(*cat_crop_box(find_cat_face(image)))      # what the app frames without a box
    frames = run_avatar(CAT, tmp_path / "cat.mp4", d0, "--avatar-kind", "animal", weights=synthetic_weights_both_sets)
    assert_animated_crop(frames, image, detected)


def test_a_dog_animates_as_an_animal_from_its_box(drawn, synthetic_weights_both_sets: Path, d0: Path,
                                                  tmp_path: Path) -> None:
    path, box = drawn["dog"]
    crop = run_avatar(path, tmp_path / "dog.mp4", d0, "--avatar-kind", "animal", box_flag(box),
                      weights=synthetic_weights_both_sets)
    assert_animated_crop(crop, cv2.imread(str(path)), box)


# -- through main.py serve -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_server(synthetic_weights_both_sets: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    command = serve_command(port, *engine_flags(synthetic_weights_both_sets), "--token", TOKEN)
    log_path = tmp_path_factory.mktemp("serve") / "console.log"
    with LocalServer(command, f"http://127.0.0.1:{port}", log_path, env={"RAY_USAGE_STATS_ENABLED": "0"}) as server:
        deadline = time.monotonic() + 120
        while "render server ready" not in server.log_tail(100_000):
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        yield server, f"ws://127.0.0.1:{port}"


def test_a_cat_and_a_dog_animate_through_the_render_server(torch_server, drawn, d0: Path, tmp_path: Path) -> None:
    server, url = torch_server
    assert server.health()["weight_sets"] == ["human"]              # the animal set: on first need
    remote = ("--remote", url, "--token", TOKEN, "--remote-format", "raw")
    cat_image = cv2.imread(str(CAT))
    cat = run_avatar(CAT, tmp_path / "cat.mp4", d0, "--avatar-kind", "animal", remote=remote)
    assert_animated_crop(cat, cat_image, AvatarBox(*cat_crop_box(find_cat_face(cat_image))))
    assert server.health()["weight_sets"] == ["human", "animal"]
    path, box = drawn["dog"]
    dog = run_avatar(path, tmp_path / "dog.mp4", d0, "--avatar-kind", "animal", box_flag(box),
                     "--animal-paste-back", remote=remote)
    assert_pasted_into(dog, cv2.imread(str(path)), box)
    assert "animal weight set loaded in" in server.log_tail(100_000)
