"""Output background modes: the mode value type, each mode on the stub backend with the deterministic
ellipse segmenter (host and device compositing), no-face and held frames, switching live, and the
quality properties on real portraits and the real driving video with MediaPipe."""
from __future__ import annotations

import dataclasses
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.fakes import fake_face, make_animator, run_main

from app.animation.frames import Status
from app.avatar.face import prepare_avatar_face
from app.avatar.prepared import prepare_avatar
from app.compositing.background import EDGE_LOW, BackgroundCompositor, backdrop, cover, output_layout
from app.face.driving import DrivingCropper
from app.face.tracker import MediaPipeFaceMesh
from app.imaging.device_io import fetch_images
from app.imaging.segmentation import EllipseSegmenter, MediaPipeSelfieSegmentation, PersonMaskTracker, segmentation_size
from app.live.capture import read_video_frames
from app.settings import KEY_GREEN, AnimationSettings, BackgroundMode, LiveSettings
from engines.backend import StubBackend

GREEN_BGR = np.array([0, 255, 0], np.uint8)


def keyed(image: np.ndarray, bgr: np.ndarray = GREEN_BGR) -> np.ndarray:
    """H x W bool: pixels exactly the key colour."""
    return (image == bgr).all(axis=2)


def still_outside(face, paste_back: bool = True) -> np.ndarray:
    """H x W bool: pixels the ellipse stand-in calls background in the still picture, outside the
    region a frame changes (there the output is fixed per avatar and mode)."""
    if paste_back:
        outside = EllipseSegmenter().segment(face.image) == 0
        x0, y0, x1, y1 = face.paste.box
        outside[y0:y1, x0:x1] = False
        return outside
    # the crop: background both for the crop's own segmentation and for the still one warped in
    side = face.crop.shape[0]
    warped = cv2.warpAffine(EllipseSegmenter().segment(face.image), face.transform.M_o2c[:2], (side, side))
    outside = ((EllipseSegmenter().segment(face.crop) == 0) & (warped == 0)).astype(np.uint8)
    return cv2.erode(outside, np.ones((5, 5), np.uint8)).astype(bool)


# --------------------------------------------------------------------------- the mode value type
def test_background_mode_parses_and_prints_its_text_form(tmp_path: Path) -> None:
    for text in ("keep", "blur", "color:#00ff00", "color:#12AB9f", f"image:{tmp_path}/x.png"):
        assert str(BackgroundMode.parse(text)) == (text.lower() if text.startswith("color") else text)
    assert BackgroundMode.parse("color:#ff8000").color == (255, 128, 0)
    assert KEY_GREEN == BackgroundMode("color", color=(0, 255, 0))
    for bad in ("", "green", "color:00ff00", "color:#12345", "image:", "keep:1"):
        with pytest.raises(ValueError, match="background"):
            BackgroundMode.parse(bad)
    assert AnimationSettings(background="blur").background == BackgroundMode("blur")
    with pytest.raises(ValueError, match="background image not found"):
        BackgroundMode.parse(f"image:{tmp_path}/missing.png").with_existing_image()
    with pytest.raises(ValueError, match="background colour"):
        LiveSettings().update(background="color:#00ff00zz")


def test_cover_scales_and_centre_crops() -> None:
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, 100:200] = 255                       # a white middle third
    out = cover(image, 50, 50)
    assert out.shape == (50, 50, 3) and out.min() >= 250      # only the middle third covers a square


def test_mask_tracker_smooths_and_runs_at_its_rate() -> None:
    calls = []

    class Counting(EllipseSegmenter):
        def segment(self, image):
            calls.append(image.shape)
            return np.ones(image.shape[:2], np.float32)

    tracker = PersonMaskTracker(Counting(), np.zeros((4, 6), np.float32), every=2, rate=0.5)
    region = np.zeros((4, 6, 3), np.uint8)
    values, dues, masks = [], [], []
    for _ in range(4):
        dues.append(tracker.due)
        tracker.observe(region)
        values.append(float(tracker.probability.mean()))
        masks.append(tracker.as_uint8())
    assert len(calls) == 2 and values == [0.5, 0.5, 0.75, 0.75]
    assert dues == [True, False, True, False]
    # the uint8 map is made once per update and kept until the next
    assert masks[1] is masks[0] and masks[3] is masks[2] and masks[2] is not masks[1]
    assert masks[0].max() == 128 and masks[2].max() == 191 and tracker.version == 2
    assert tracker.due
    with pytest.raises(ValueError, match="expected a 6x4 region, got nothing"):
        tracker.observe(None)
    assert not tracker.due
    tracker.observe(None)                          # not due: no region needed
    assert len(calls) == 2 and tracker.due
    with pytest.raises(ValueError, match="expected a 6x4 region"):
        tracker.observe(np.zeros((5, 6, 3), np.uint8))
    assert PersonMaskTracker(Counting(), np.zeros((4, 6), np.float32)).every == 3     # the documented rate


@pytest.mark.parametrize("on_device", [False, True], ids=["host", "device"])
def test_the_region_is_segmented_when_due_and_its_mask_kept_until_it_changes(avatar_face, on_device) -> None:
    seen = []

    class Nobody(EllipseSegmenter):               # the region never shows a person
        def segment(self, image):
            seen.append(image.shape[:2])
            return np.zeros(image.shape[:2], np.float32)

    # the still picture is all person, so the region's mask starts at 1 and halves per segmentation
    face = dataclasses.replace(avatar_face, person_mask=np.ones(avatar_face.image.shape[:2], np.float32))
    compositor = BackgroundCompositor(Nobody)
    s = AnimationSettings(background="color:#00ff00")
    x0, y0, x1, y1 = face.paste.box
    region = face.image[y0:y1, x0:x1]
    uploads, smalls, outputs = [], [], []

    def upload(name: str, array: np.ndarray) -> torch.Tensor:
        uploads.append(name)
        return torch.from_numpy(np.ascontiguousarray(array))

    for _ in range(7):
        if on_device:
            planes = torch.from_numpy(np.ascontiguousarray(region[..., ::-1])).permute(2, 0, 1)
            composited, small = compositor.compose_on_device(planes, face, s, upload)
            smalls.append(small is not None)
            fetched, _ = fetch_images([p for p in (composited, small) if p is not None])
            outputs.append(compositor.finish(fetched[0], fetched[1] if small is not None else None, face, s))
        else:
            outputs.append(compositor.compose(face.image, face, s))
    width, height = segmentation_size(x1 - x0, y1 - y0)
    assert seen == [(height, width)] * 3                     # frames 0, 3 and 6
    assert np.array_equal(outputs[0], face.image)                # mask 1: all person
    same = [np.array_equal(a, b) for a, b in pairwise(outputs)]
    assert same == [False, True, True, False, True, True]        # changes only after a segmentation
    distance = [np.abs(o.astype(int) - GREEN_BGR).mean() for o in outputs[::3]]
    assert distance[0] > distance[1] > distance[2]               # the region turns to background
    if on_device:
        assert smalls == [True, False, False, True, False, False, True]
        assert len(uploads) == 3                                  # frames 0, 1 and 4: the mask changed


def test_the_full_picture_layout_uses_the_paste_masks_own_weights(avatar_face) -> None:
    probability = EllipseSegmenter().segment(avatar_face.image)
    layout = output_layout(avatar_face, True, probability)
    assert layout.weight is avatar_face.paste.box_weights and layout.complement is avatar_face.paste.box_complement
    # exactly what the mask's box gives without them
    bare = dataclasses.replace(avatar_face, paste=dataclasses.replace(avatar_face.paste, box_weights=None,
                                                                      box_complement=None))
    fallback = output_layout(bare, True, probability)
    assert fallback.weight.dtype == layout.weight.dtype == np.float32
    assert np.array_equal(fallback.weight, layout.weight) and np.array_equal(fallback.complement, layout.complement)
    crop = output_layout(avatar_face, False, probability)
    assert np.array_equal(crop.complement, 1.0 - crop.weight) and crop.weight.shape == avatar_face.crop.shape[:2]


# --------------------------------------------------------------------------- each mode, host and device
@pytest.mark.parametrize("paste_on_device", [False, True], ids=["opencv-paste", "device-paste"])
@pytest.mark.parametrize("paste_back", [True, False], ids=["full", "crop-only"])
def test_each_mode_replaces_the_background_only(avatar_face, tmp_path: Path, paste_on_device, paste_back) -> None:
    picture = np.zeros((60, 80, 3), np.uint8)
    picture[..., 2] = 200                              # a red picture
    cv2.imwrite(str(tmp_path / "bg.png"), picture)
    keep, _ = make_animator(avatar_face, paste_on_device=paste_on_device, reference_frames=1, paste_back=paste_back)
    base = [keep.process(fake_face(), i / 30).image for i in range(3)]
    still = avatar_face.image if paste_back else avatar_face.crop
    outside = still_outside(avatar_face, paste_back)
    inside = EllipseSegmenter().segment(still) == 1
    inside = cv2.erode(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    x0, y0, x1, y1 = avatar_face.paste.box
    inside[y0:y1, x0:x1] = False                       # the region follows the frame's own mask
    for mode in ("color:#00ff00", "blur", f"image:{tmp_path / 'bg.png'}"):
        anim, _ = make_animator(avatar_face, paste_on_device=paste_on_device, reference_frames=1,
                                paste_back=paste_back, background=mode)
        frames = [anim.process(fake_face(), i / 30) for i in range(3)]
        expected = backdrop(BackgroundMode.parse(mode), still)
        for frame, kept in zip(frames, base, strict=True):
            assert frame.rendered and frame.image.shape == kept.shape
            assert np.array_equal(frame.image[outside], expected[outside]), mode
            if paste_back:                             # the still person is the avatar's own pixels
                assert inside.any() and np.array_equal(frame.image[inside], kept[inside]), mode
            assert not np.array_equal(frame.image, kept)
    assert outside.mean() > 0.2


def test_device_and_opencv_compositing_agree(avatar_face) -> None:
    for paste_back in (True, False):
        a, _ = make_animator(avatar_face, paste_on_device=True, reference_frames=1, paste_back=paste_back,
                             background="color:#00ff00")
        b, _ = make_animator(avatar_face, paste_on_device=False, reference_frames=1, paste_back=paste_back,
                             background="color:#00ff00")
        for i in range(4):
            x, y = a.process(fake_face(), i / 30).image, b.process(fake_face(), i / 30).image
            assert np.abs(x.astype(int) - y.astype(int)).max() <= 3
            assert np.mean(keyed(x) != keyed(y)) < 0.002


# --------------------------------------------------------------------------- no face, held, live switch
def test_no_face_and_held_frames_get_the_background(avatar_face) -> None:
    anim, _ = make_animator(avatar_face, reference_frames=1, background="color:#00ff00", hold_seconds=0.5)
    outside = still_outside(avatar_face)
    first = anim.process(None, 0.0)
    assert first.status == Status.NO_FACE_YET and not first.rendered
    assert keyed(first.image)[outside].all()
    live = anim.process(fake_face(), 0.1)
    held = anim.process(None, 0.2)
    assert held.status == Status.HOLDING and held.image is live.image and keyed(held.image)[outside].all()


def test_switching_modes_live(avatar_face) -> None:
    anim, live = make_animator(avatar_face, reference_frames=1, hold_seconds=0.5)
    outside = still_outside(avatar_face)
    kept = anim.process(fake_face(), 0.0).image
    assert not keyed(kept).any()
    live.update(background="color:#00ff00")
    assert keyed(anim.process(fake_face(), 1 / 30).image)[outside].all()          # the next frame
    held = anim.process(None, 2 / 30)
    assert held.status == Status.HOLDING and keyed(held.image)[outside].all()
    live.update(background="color:#0000ff")                                      # while holding
    held = anim.process(None, 3 / 30)
    assert held.rendered and keyed(held.image, np.array([255, 0, 0], np.uint8))[outside].all()
    live.update(background="keep")
    assert np.array_equal(anim.process(fake_face(), 4 / 30).image, kept)


def test_the_segmenter_is_closed_where_the_animator_s_life_ends(avatar_face, d0: Path, monkeypatch) -> None:
    import main
    from app.animation.animator import Animator
    from app.run import headless, renderer
    from app.run.live_session import LiveSession
    from app.run.renderer import LocalRenderer

    made, closed = [], []

    class Recording(EllipseSegmenter):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

        def close(self) -> None:
            closed.append(self)

    # the window's session: closing it closes its animator's segmenter
    backend = StubBackend()
    session = LiveSession(LocalRenderer(backend), Animator(backend, LiveSettings(),
                                                           prepare_avatar(avatar_face, backend)))
    session.animator, live = make_animator(avatar_face, backend, segmenter=Recording)
    live.update(background="color:#00ff00")
    session.animator.process(None, 0.0)
    assert len(made) == 1 and closed == []
    session.close()
    assert closed == made
    # the headless runner: at the end of the run
    monkeypatch.setattr(renderer, "Animator", lambda *a, **k: Animator(*a, segmenter=Recording, **k))
    args = main.parse_args(["--headless", "--backend", "stub", "--device", "cpu", "--camera", str(d0),
                            "--max-frames", "2", "--background", "color:#00ff00", "--no-virtual-camera"])
    assert headless.run_headless(args, main.settings_from_args(args)) == 0
    assert len(made) == 2 and closed == made


# --------------------------------------------------------------------------- quality on real data
class FollowingStub(StubBackend):
    """The stub whose render moves: the avatar crop shifted by the driving keypoints' mean offset,
    so the output follows the driving video's head like an animated face would (roughly)."""

    def render(self, feature: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        shift = (x_d - x_s).mean(dim=1)[:, :2]                       # normalised units, ~ +-0.1
        theta = torch.zeros(feature.shape[0], 2, 3, device=feature.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = -shift
        grid = F.affine_grid(theta, list(feature.shape), align_corners=False)
        return F.grid_sample(feature, grid, padding_mode="border", align_corners=False)


@pytest.fixture(scope="module")
def d0_faces(d0: Path):
    """d0's frames as driving faces (MediaPipe tracking), with their raw landmarks."""
    mesh = MediaPipeFaceMesh()
    try:
        cropper = DrivingCropper(mesh)
        faces = [cropper.process(frame, i / 25) for i, frame in enumerate(read_video_frames(d0))]
    finally:
        mesh.close()
    assert all(f is not None for f in faces)
    return faces


@pytest.fixture(scope="module")
def segmenter():
    seg = MediaPipeSelfieSegmentation()
    yield seg
    seg.close()


def drive(face, faces, background: str):
    backend = FollowingStub()
    anim, _ = make_animator(face, backend, reference_frames=3, background=background,
                            segmenter=MediaPipeSelfieSegmentation)
    return [anim.process(f, i / 25).image for i, f in enumerate(faces)]


@pytest.mark.parametrize("name", ["s0.jpg", "s1.jpg", "s2.jpg"])
@pytest.mark.integration
def test_key_mode_on_real_portraits_and_video(examples: Path, d0_faces, segmenter, name: str) -> None:
    mesh = MediaPipeFaceMesh()
    try:
        face = prepare_avatar_face(examples / name, mesh)
    finally:
        mesh.close()
    faces = d0_faces[::3]
    kept, key = drive(face, faces, "keep"), drive(face, faces, "color:#00ff00")
    hull = np.zeros(face.image.shape[:2], np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(face.landmarks.astype(np.int32)), 1)
    margin = max(face.image.shape[:2]) // 20
    for k, g in zip(kept, key, strict=True):
        # far from the person: beyond a margin around what a fresh, independent segmentation of the
        # unkeyed output calls the person (any probability above the edge's low end)
        person = (segmenter.segment(k) > EDGE_LOW).astype(np.uint8)
        far = cv2.dilate(person, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) == 0
        assert far.mean() > 0.05
        assert keyed(g)[far].all()
        # the face is never keyed: inside the landmarks' hull the output is the unkeyed one
        assert np.array_equal(g[hull == 1], k[hull == 1])
    assert np.mean([keyed(g).mean() for g in key]) > 0.1


def test_the_mask_is_still_on_a_still_stretch_of_d0(avatar_face, d0_faces) -> None:
    # the stillest 12 consecutive frames of d0: least landmark movement between frames
    moves = np.array([np.abs(b.landmarks - a.landmarks).max() for a, b in pairwise(d0_faces)])
    start = int(np.argmin(np.convolve(moves, np.ones(11), mode="valid")))
    frames = drive(avatar_face, d0_faces[:start + 12], "color:#00ff00")[start:]
    masks = [~keyed(f) for f in frames]
    changes = [float(np.mean(a != b)) for a, b in pairwise(masks)]
    assert max(changes) < 0.01, changes


# --------------------------------------------------------------------------- the command line
@pytest.mark.integration
def test_cli_rejects_a_bad_background(tmp_path: Path) -> None:
    bad = run_main("--headless", "--background", "green", timeout=60)
    assert bad.returncode == 2 and "--background" in bad.stderr
    missing = run_main("--headless", "--backend", "stub", "--background", f"image:{tmp_path}/none.png",
                       "--camera", str(tmp_path / "none.mp4"), timeout=120)
    assert missing.returncode == 2
    assert "background image not found" in missing.stderr.strip().splitlines()[-1]


@pytest.mark.integration
def test_headless_records_the_key_background(d0: Path, tmp_path: Path) -> None:
    out = tmp_path / "key.mp4"
    run = run_main("--headless", "--backend", "stub", "--device", "cpu", "--camera", str(d0), "--record", str(out),
                   "--max-frames", "3", "--background", "color:#00ff00", timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    frames = read_video_frames(out)
    assert len(frames) == 3
    for frame in frames:                  # the default avatar's top corners are background (video-coded)
        for corner in (frame[:8, :8], frame[:8, -8:]):
            assert np.abs(corner.astype(int) - GREEN_BGR).max() <= 12


def test_a_background_image_that_goes_away_does_not_block_other_settings(tmp_path: Path) -> None:
    picture = tmp_path / "backdrop.png"
    cv2.imwrite(str(picture), np.full((8, 8, 3), 200, np.uint8))
    live = LiveSettings(AnimationSettings(background=f"image:{picture}"))
    picture.unlink()                                     # moved or deleted while the app runs
    assert live.update(mirror=True).mirror
    assert live.update(eye_mode="fixed", background="blur").background == BackgroundMode("blur")
