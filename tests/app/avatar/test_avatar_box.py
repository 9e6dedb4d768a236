"""Avatars framed by a face box (cartoons, animals), the cat-face detector and the box suggestion:
on drawn faces (tests/support/avatars.py), the shipped cat photo, a raccoon photo and our default
avatar."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from support import REPO_ROOT
from support.avatars import cartoon_face, dog_face, mascot_face

from app.avatar.face import NoFaceError, avatar_face_from_crop, prepare_avatar_face
from app.avatar.framing import AvatarBox, AvatarChoice, check_avatar_kind
from app.avatar.loading import DEFAULT_AVATAR, load_avatar_face
from app.avatar.suggest import find_cat_face, suggest_avatar_box
from app.face import crop as fc
from app.face.tracker import MediaPipeFaceMesh

CAT = REPO_ROOT / "assets" / "avatars" / "cat.jpg"
RACCOON = REPO_ROOT / "tests" / "data" / "raccoon.jpg"
# hand-marked on the cat photo (451 x 300): its eyes and the tip of its nose
CAT_EYES = np.array([[170.0, 115.0], [318.0, 137.0]])
CAT_NOSE = np.array([262.0, 245.0])


@pytest.fixture(scope="module")
def mesh():
    m = MediaPipeFaceMesh()
    yield m
    m.close()


class NoMesh:
    """A landmark source that fails the test if it is asked for faces."""

    layout = MediaPipeFaceMesh.layout

    def detect_faces(self, image_bgr: np.ndarray) -> list[np.ndarray]:
        raise AssertionError("the face mesh must not run for an animal avatar")


def box_of(rect: tuple[float, float, float]) -> AvatarBox:
    return AvatarBox(*rect)


def inside(points: np.ndarray, box: AvatarBox) -> bool:
    pts = np.atleast_2d(points)
    return bool(((pts >= [box.x, box.y]) & (pts <= [box.x + box.size, box.y + box.size])).all())


def test_box_and_kind_parse_and_validate() -> None:
    box = AvatarBox.parse(" 10, -20.5,300 ")
    assert box == AvatarBox(10, -20.5, 300) and str(box) == "10,-20.5,300"
    assert AvatarBox.parse(str(box)) == box and box.center == (160, 129.5)
    for bad, why in (("10,20", "X,Y,SIZE"), ("a,b,c", "X,Y,SIZE"), ("1,2,3,4", "X,Y,SIZE"),
                     ("0,0,8", "at least 16"), ("nan,0,100", "finite"), ("0,inf,100", "finite")):
        with pytest.raises(ValueError, match=why):
            AvatarBox.parse(bad)
    assert check_avatar_kind("animal") == "animal"
    with pytest.raises(ValueError, match="human, animal"):
        check_avatar_kind("dog")


def test_the_drawn_cartoon_is_missed_by_the_face_mesh(mesh) -> None:
    """The premise of the cartoon tests below: without a box, this face is not found."""
    for width, height in ((640, 560), (480, 420), (1280, 1120)):
        assert mesh.detect_faces(cartoon_face(width, height)[0]) == []
    assert mesh.detect_faces(mascot_face()[0]) == []


def test_no_face_and_no_box_names_both_ways_out(mesh) -> None:
    with pytest.raises(NoFaceError, match=r"^avatar image: no face found.*--avatar-box X,Y,SIZE.*--avatar-kind animal"):
        prepare_avatar_face(cartoon_face()[0], mesh)


def test_a_cartoon_with_a_box_has_no_landmarks(mesh) -> None:
    image, rect = cartoon_face()
    box = box_of(rect)
    face = prepare_avatar_face(image, mesh, box=box)
    assert face.kind == "human" and face.box == box and face.image_scale == 1.0
    assert face.landmarks.shape == (0, 2) and face.eye_ratios is None and face.lip_ratio is None
    assert not face.has_landmarks and face.num_faces == 0
    assert face.crop.shape == (512, 512, 3) and face.network_input.shape == (256, 256, 3)
    box_corners = np.array([[box.x, box.y], [box.x + box.size, box.y + box.size]])
    corners = fc.transform_points(box_corners, face.transform.M_o2c)
    assert np.allclose(corners, [[0, 0], [512, 512]], atol=1e-3)
    x0, y0, x1, y1 = face.paste.box
    assert x0 < box.x + box.size / 2 < x1 and y0 < box.y + box.size / 2 < y1


def test_a_downscaled_image_scales_its_box(mesh) -> None:
    """The box is in the file's pixels: a 1280 x 1120 drawing limited to 640 gives the crop of
    the half-size box on the half-size image, and keeps the file's box for display."""
    big, rect = cartoon_face(1280, 1120)
    box = box_of(rect)
    face = prepare_avatar_face(big, mesh, box=box, max_side=640)
    assert face.image.shape[:2] == (560, 640) and face.image_scale == pytest.approx(0.5)
    assert face.box == box
    half = AvatarBox(box.x / 2, box.y / 2, box.size / 2)
    half_corners = np.array([[half.x, half.y], [half.x + half.size, half.y + half.size]])
    corners = fc.transform_points(half_corners, face.transform.M_o2c)
    assert np.allclose(corners, [[0, 0], [512, 512]], atol=1e-2)
    direct = fc.warp_to_crop(face.image, fc.transform_from_box(half.x, half.y, half.size), precise=True,
                             border="replicate")
    assert np.array_equal(face.crop, direct)
    # and the box was not applied in the downscaled image's pixels: that crop would differ a lot
    wrong = fc.warp_to_crop(face.image, fc.transform_from_box(box.x, box.y, box.size), precise=True,
                            border="replicate")
    assert np.abs(face.crop.astype(int) - wrong).mean() > 20


def test_a_human_with_a_box_keeps_its_landmarks_and_ratios(mesh, avatar_face) -> None:
    auto = avatar_face
    assert auto.box is not None and auto.kind == "human" and auto.has_landmarks
    params = fc.crop_params(auto.landmarks, auto.layout, fc.AVATAR_CROP)
    assert auto.box.center == pytest.approx((params.center_x, params.center_y), abs=1e-3)
    assert auto.box.size == pytest.approx(params.side)
    # a corrected box, moved and tighter: still the face's landmarks, same ratios, the box's crop
    moved = AvatarBox(auto.box.x + 20, auto.box.y - 10, auto.box.size * 0.8)
    face = prepare_avatar_face(DEFAULT_AVATAR, mesh, box=moved)
    assert face.has_landmarks and face.landmarks.shape == auto.landmarks.shape
    assert np.allclose(face.eye_ratios, auto.eye_ratios) and np.allclose(face.lip_ratio, auto.lip_ratio)
    assert face.box == moved and face.num_faces == 1
    # a box away from the face (the image's bottom-left corner): the face is not in it
    corner = prepare_avatar_face(DEFAULT_AVATAR, mesh, box=AvatarBox(-40, 380, 160))
    assert not corner.has_landmarks and corner.landmarks.shape == (0, 2)


def test_a_box_must_touch_the_image(mesh) -> None:
    image, _ = cartoon_face()
    with pytest.raises(ValueError, match="lies outside the 640x560 image"):
        prepare_avatar_face(image, mesh, box=AvatarBox(700, 10, 100))
    with pytest.raises(ValueError, match="lies outside"):
        prepare_avatar_face(image, mesh, box=AvatarBox(-100, -100, 100))


def test_the_cat_detector_finds_the_cat_photo(tmp_path: Path) -> None:
    image = cv2.imread(str(CAT))
    rect = find_cat_face(image)
    assert rect is not None
    x, y, side = rect
    assert inside(CAT_EYES, AvatarBox(x, y, side)) and inside(CAT_NOSE, AvatarBox(x, y, side))
    suggestion = suggest_avatar_box(image)
    assert suggestion.kind == "animal" and suggestion.reason == "cat face found"
    assert suggestion.box.size > side and inside(np.vstack([CAT_EYES, CAT_NOSE]), suggestion.box)
    # an animal avatar without a box is framed by the detector, without the face mesh
    face = prepare_avatar_face(CAT, NoMesh(), kind="animal")  # type: ignore[arg-type]
    assert face.kind == "animal" and face.box == suggestion.box and not face.has_landmarks
    eyes = fc.transform_points(CAT_EYES, face.transform.M_o2c)
    assert (np.abs(eyes - 256) < 120).all()                  # the eyes near the crop's middle
    assert face.crop.reshape(-1, 3).max(axis=1).min() > 0     # the photo's edge fills the padding
    # through load_avatar_face: no face mesh made for an animal
    loaded = load_avatar_face(AvatarChoice(CAT, kind="animal"))
    assert np.array_equal(loaded.crop, face.crop) and loaded.kind == "animal"


def test_other_animals_get_the_fallback_box() -> None:
    """The detector knows cats only: the raccoon photo and the drawn dog get the fallback."""
    for image in (cv2.imread(str(RACCOON)), dog_face()[0]):
        assert find_cat_face(image) is None
        assert suggest_avatar_box(image).kind is None
    dog, rect = dog_face()
    with pytest.raises(NoFaceError, match=r"no cat face found.*--avatar-box X,Y,SIZE"):
        prepare_avatar_face(dog, NoMesh(), kind="animal")  # type: ignore[arg-type]
    face = prepare_avatar_face(dog, NoMesh(), kind="animal", box=box_of(rect))  # type: ignore[arg-type]
    assert face.kind == "animal" and not face.has_landmarks and face.box == box_of(rect)


def test_the_suggestion_falls_back_to_a_centred_square_on_the_upper_image() -> None:
    for width, height in ((640, 480), (480, 800), (30, 20)):
        blank = np.full((height, width, 3), 180, np.uint8)
        s = suggest_avatar_box(blank)
        assert s.kind is None and s.reason == "no face found: place the box on the face"
        assert s.box.center[0] == pytest.approx(width / 2)
        if s.box.size <= min(width, height):
            assert 0 <= s.box.y and s.box.y + s.box.size <= height and s.box.center[1] < height / 2 + 1
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        suggest_avatar_box(np.zeros((10, 10), np.uint8))


def test_a_server_face_may_come_without_ratios() -> None:
    crop = np.full((512, 512, 3), 90, np.uint8)
    bare = avatar_face_from_crop(crop, None, None, kind="animal", box=AvatarBox(1, 2, 300))
    assert bare.kind == "animal" and bare.box == AvatarBox(1, 2, 300) and not bare.has_landmarks
    assert bare.eye_ratios is None and bare.lip_ratio is None and bare.landmarks.shape == (0, 2)
    full = avatar_face_from_crop(crop, np.array([0.3, 0.3]), np.array([0.0]))
    assert full.has_landmarks and full.kind == "human" and full.eye_ratios.shape == (1, 2)
    with pytest.raises(ValueError, match="both eye and lip ratios, or neither"):
        avatar_face_from_crop(crop, np.array([0.3, 0.3]), None)
    with pytest.raises(ValueError, match="avatar kind"):
        avatar_face_from_crop(crop, None, None, kind="robot")  # type: ignore[arg-type]
