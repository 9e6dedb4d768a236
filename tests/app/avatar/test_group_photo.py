"""Group photos (issue 20): up to four faces of one image found, numbered left to right, each
cropped with its own region-weighted paste mask, prepared as one batch and animated in one W+G
call per frame, with no face pasted over another."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from support.fakes import ScriptedBackend, fake_face, make_animator
from support.group_photo import close_pair, group_photo

from app.animation.animator import Animator
from app.avatar.face import NoFaceError, prepare_avatar_face
from app.avatar.framing import MAX_GROUP_FACES, AvatarBox, parse_faces
from app.avatar.prepared import prepare_avatar
from app.face import crop as fc
from app.face.mask import feathered_square_mask
from app.face.tracker import MediaPipeFaceMesh
from app.settings import AnimationSettings, LiveSettings
from engines import motion


@pytest.fixture(scope="module")
def mesh():
    source = MediaPipeFaceMesh()
    yield source
    source.close()


@pytest.fixture(scope="module")
def groups(examples, mesh) -> dict[int, object]:
    """The 2- and 4-face photos, prepared (all faces)."""
    return {k: prepare_avatar_face(group_photo(examples, k), mesh) for k in (2, 4)}


def inner_box(landmarks: np.ndarray) -> tuple[slice, slice]:
    (x0, y0), (x1, y1) = np.floor(landmarks.min(axis=0)).astype(int), np.ceil(landmarks.max(axis=0)).astype(int)
    return slice(max(y0, 0), y1), slice(max(x0, 0), x1)


# -- --faces ---------------------------------------------------------------------------------------
def test_parse_faces_reads_all_one_or_a_list() -> None:
    assert parse_faces("all") is None and parse_faces(" ALL ") is None
    assert parse_faces("2") == (2,)
    assert parse_faces("3,1,3") == (1, 3)
    for bad, problem in (("0", "from 1 to 4"), ("5", "from 1 to 4"), ("1,x", "expected all"), ("", "expected all")):
        with pytest.raises(ValueError, match=problem):
            parse_faces(bad)
    assert MAX_GROUP_FACES == 4


# -- the faces of a group photo --------------------------------------------------------------------
@pytest.mark.parametrize("count", [2, 4])
def test_every_face_is_found_and_numbered_left_to_right(groups, count: int) -> None:
    face = groups[count]
    assert face.num_faces == count and len(face.group) == count
    assert [f.number for f in face.group] == list(range(1, count + 1))
    centres = [f.landmarks[:, 0].mean() for f in face.group]
    assert centres == sorted(centres)
    for f in face.group:
        assert f.image is face.image and f.has_landmarks and f.crop.shape == (512, 512, 3)
    assert all(f.others == () and f.group_paste is None for f in face.others)
    assert face.output_paste is face.group_paste


@pytest.mark.parametrize("count", [2, 4])
def test_no_face_is_pasted_over_another(groups, count: int) -> None:
    """Each face's paste weight is below 0.02 on every other face's inner area (its landmarks' box)
    and the union is 1 - prod(1 - m_i)."""
    face = groups[count]
    for f in face.group:
        for other in face.group:
            if other is not f:
                assert f.paste.mask[inner_box(other.landmarks)].max() < 0.02
        # its own inner face is pasted in full
        assert f.paste.mask[inner_box(f.landmarks)].min() > 0.98
    union = 1.0 - np.prod([1.0 - f.paste.mask for f in face.group], axis=0)
    np.testing.assert_allclose(face.group_paste.mask, union, atol=1e-6)


def test_the_pasted_group_has_no_seam(examples, mesh) -> None:
    """Two faces whose crops overlap, each pasted as a flat crop of its own shade: across the split
    the output changes between neighbouring pixels no more than at a face's own feathered edge."""
    face = prepare_avatar_face(close_pair(examples), mesh)
    assert len(face.group) == 2
    first, second = face.group
    both = (first.paste.mask[..., 0] > 0.01) & (second.paste.mask[..., 0] > 0.01)
    assert both.sum() > 1000                  # the crops overlap: the split decides there
    black = np.zeros_like(face.image)
    out = black
    for f, shade in zip(face.group, (255, 128), strict=True):
        out = fc.paste_back(np.full((512, 512, 3), shade, np.uint8), f.transform.M_c2o, out, f.paste)
    plain = fc.prepare_paste_mask(feathered_square_mask(), first.transform.M_c2o, face.image.shape[1::-1])
    alone = fc.paste_back(np.full((512, 512, 3), 255, np.uint8), first.transform.M_c2o, black, plain)
    edge_step = max(np.abs(np.diff(alone.astype(int), axis=a)).max() for a in (0, 1))
    steps = np.abs(np.diff(out.astype(int), axis=1))[both[:, 1:] & both[:, :-1]]
    assert 0 < steps.max() <= edge_step
    # and each face's inner area shows its own shade only
    assert (out[inner_box(first.landmarks)] == 255).mean() > 0.99
    assert (out[inner_box(second.landmarks)] == 128).mean() > 0.99


def test_faces_picks_faces_and_a_missing_number_is_one_clear_error(examples, mesh, groups) -> None:
    image = group_photo(examples, 2)
    second = prepare_avatar_face(image, mesh, faces=(2,))
    assert second.number == 2 and second.others == () and second.num_faces == 2
    np.testing.assert_array_equal(second.crop, groups[2].group[1].crop)
    assert second.paste.mask[inner_box(groups[2].landmarks)].max() < 0.02    # face 1 stays untouched
    with pytest.raises(NoFaceError, match=r"face 3 asked for \(--faces\), but 2 faces found"):
        prepare_avatar_face(image, mesh, faces=(1, 3))


def test_a_box_corrects_the_first_selected_face_of_a_group(examples, mesh, groups) -> None:
    found = groups[2].group
    image = group_photo(examples, 2)
    box = AvatarBox(found[0].box.x + 10, found[0].box.y, found[0].box.size)
    face = prepare_avatar_face(image, mesh, faces=(2, 1), box=box)
    assert [f.number for f in face.group] == [1, 2]                        # in face-number order
    assert face.box == box and face.has_landmarks and face.group[1].box == found[1].box
    box = AvatarBox(found[1].box.x + 10, found[1].box.y, found[1].box.size)
    face = prepare_avatar_face(image, mesh, faces=(2,), box=box)
    assert face.number == 2 and face.box == box and face.has_landmarks


def test_a_single_face_is_prepared_as_ever(examples, mesh) -> None:
    """One face found: the official crop and the plain paste mask, no region, no group."""
    import cv2

    image = cv2.imread(str(examples / "s1.jpg"))
    face = prepare_avatar_face(image, mesh)
    landmarks = mesh.detect_faces(fc_limit(image))[0]
    transform = fc.crop_transform(landmarks, mesh.layout, fc.AVATAR_CROP)
    np.testing.assert_array_equal(face.crop, fc.warp_to_crop(fc_limit(image), transform, precise=True))
    plain = fc.prepare_paste_mask(feathered_square_mask(), transform.M_c2o, fc_limit(image).shape[1::-1])
    np.testing.assert_array_equal(face.paste.mask, plain.mask)
    assert face.group == (face,) and face.output_paste is face.paste and face.num_faces == 1


def fc_limit(image: np.ndarray) -> np.ndarray:
    from app.imaging.image_io import MAX_AVATAR_SIDE, limit_size

    return limit_size(image, MAX_AVATAR_SIDE)


# -- one batch -------------------------------------------------------------------------------------
def test_a_group_is_prepared_as_one_batch(groups) -> None:
    face = groups[4]
    backend = ScriptedBackend()
    avatar = prepare_avatar(face, backend)
    assert avatar.batch == avatar.num_faces == 4
    assert avatar.feature.shape[0] == 4 and avatar.x_s.shape == (4, motion.NUM_KP, 3)
    assert avatar.R_s.shape == (4, 3, 3) and avatar.eye_ratios.shape == (4, 2) and avatar.lip_ratio.shape == (4, 1)
    assert avatar.expression_reference.shape == (4, motion.NUM_KP, 3)
    assert isinstance(avatar.expression_multiplier, torch.Tensor) and avatar.expression_multiplier.shape == (4, 1, 1)
    single = prepare_avatar(face.group[2], backend)
    assert single.batch == 1 and isinstance(single.expression_multiplier, float)
    torch.testing.assert_close(avatar.x_s[2:3], single.x_s)


def test_lip_normalisation_applies_the_official_threshold_per_face() -> None:
    def lip_net(x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 3 * motion.NUM_KP)

    x_s = torch.zeros(3, motion.NUM_KP, 3)
    delta = motion.lip_normalization_delta(lip_net, x_s, torch.tensor([[0.1], [0.01], [0.2]]))
    assert delta is not None and delta.shape == (3, motion.NUM_KP, 3)
    assert delta[1].abs().max() == 0 and (delta[0] == 1).all() and (delta[2] == 1).all()
    assert motion.lip_normalization_delta(lip_net, x_s, torch.full((3, 1), 0.01)) is None


def test_follow_eye_target_is_per_face() -> None:
    from app.animation import driver_motion as driver
    from app.animation.retargeting import follow_eye_target

    v = torch.zeros(driver.SIZE)
    v[driver.EYES] = 0.3
    target = follow_eye_target(v, v.clone(), torch.tensor([[0.2, 0.2], [0.4, 0.4]]))
    torch.testing.assert_close(target, torch.tensor([[0.2], [0.4]]))
    ratios = motion.combined_eye_ratios(torch.rand(3, 2), torch.tensor([[0.5]]))
    assert ratios.shape == (3, 3) and (ratios[:, 2] == 0.5).all()


def drive(anim: Animator, frames: int) -> list:
    return [anim.process(fake_face(0.28 + 0.02 * (i % 3), 0.02 * (i % 4)), i / 30) for i in range(frames)]


def test_a_group_renders_in_one_call_and_is_pasted_on_the_host(groups, monkeypatch) -> None:
    face = groups[4]
    backend = ScriptedBackend()
    calls = []
    render = backend.render
    monkeypatch.setattr(backend, "render", lambda f, s, d: calls.append(f.shape[0]) or render(f, s, d))
    anim, _ = make_animator(face, backend, paste_on_device=True)      # a group pastes on the host anyway
    frames = drive(anim, 4)
    assert calls == [4] * 4 and all(f.rendered for f in frames)
    assert frames[-1].image.shape == face.image.shape
    # crop-only output: the first (selected) face's crop
    only = Animator(backend, LiveSettings(AnimationSettings(paste_back=False)), prepare_avatar(face, backend))
    assert drive(only, 2)[-1].image.shape == (512, 512, 3)


@pytest.mark.integration
def test_a_batched_group_equals_its_faces_animated_one_by_one(groups, synthetic_weights_dir) -> None:
    """Real networks (synthetic weights, CPU): the group's K crops of a frame equal the crops of K
    single-face animators, one per face, with retargeting and expression-friendly driving on."""
    from engines.backend import TorchBackend
    from engines.checkpoints import load_networks

    backend = TorchBackend(load_networks(synthetic_weights_dir), "cpu")
    settings = dict(eye_mode="follow", lip_mode="follow", driving_option="expression-friendly")
    face = groups[2]

    def crops_of(anim: Animator) -> list[np.ndarray]:
        seen: list[np.ndarray] = []
        finish = anim.finisher.finish
        anim.finisher.finish = lambda crop, s: seen.append(crop.copy()) or finish(crop, s)    # type: ignore[method-assign]
        drive(anim, 2)
        return seen

    group = crops_of(make_animator(face, backend, **settings)[0])
    singles = [crops_of(make_animator(replace(f, others=(), group_paste=None), backend, **settings)[0])
               for f in face.group]
    assert len(group) == 2
    for frame, batch in enumerate(group):
        assert batch.shape == (2, 512, 512, 3)
        for k in range(2):
            diff = np.abs(batch[k].astype(int) - singles[k][frame].astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.01


def test_a_background_mode_keeps_every_face_of_a_group(groups) -> None:
    """A colour background on a 4-face photo, everything segmented as a person: every face's inner
    area keeps its own pasted crop (the union of the faces' regions is the animated area, not the
    first face's paste box alone), and outside that area the output is the still one."""
    from app.compositing.finishing import OutputFinisher
    from app.imaging.segmentation import EllipseSegmenter

    face = groups[4]
    s = AnimationSettings(background="color:#00ff00")
    finisher = OutputFinisher(face, lambda: EllipseSegmenter(0.5, 0.5, 10.0, 10.0))   # all person
    finisher.begin(s)
    crops = np.stack([np.full((512, 512, 3), 40 + 50 * i, np.uint8) for i in range(len(face.group))])
    out = finisher.finish(crops, s)
    still = finisher.still(s)
    assert out.shape == face.image.shape
    for i, f in enumerate(face.group):
        area = out[inner_box(f.landmarks)].astype(np.int16)
        # the face's own crop shows there (a grey of its own level; the person mask keeps it)
        assert np.abs(area - (40 + 50 * i)).mean() < 12, f"face {f.number}"
    x0, y0, x1, y1 = face.output_paste.box
    outside = np.ones(face.image.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    if outside.any():
        assert np.array_equal(out[outside], still[outside])
