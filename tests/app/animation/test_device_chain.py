"""The per-frame chain on the inference device: paste-back on the device, no host reads between the
uploads and the one image fetch, the torch keypoint math against the official relative-motion
formula, NaN handling without host checks, and (on a CUDA GPU) CUDA graphs and one synchronising
call per frame."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support import needs_cuda
from support.fakes import ScriptedBackend, fake_face, make_animator

from app.animation.frames import Status
from app.compositing.paste_device import DevicePasteBack
from app.face import crop as fc
from app.imaging.device_io import fetch_image, fetch_images, image_to_tensor, pack_frames, unpack_frames
from app.settings import smoothing_fields
from engines import motion
from engines.backend import StubBackend
from engines.device import HostReads, device_waits

CUDA = needs_cuda()
NO_SMOOTHING = smoothing_fields(0.0)


# --------------------------------------------------------------------------- paste-back on the device
def test_device_paste_matches_the_official_paste_back(parity_dir: Path) -> None:
    kit = np.load(parity_dir / "fixtures" / "glue_crop_paste.npz")
    orig, crop, M_c2o = kit["in__paste_orig_u8"], kit["in__paste_crop_u8"], kit["in__paste_M_c2o"]
    before = orig.copy()
    mask = cv2.imread(str(parity_dir / "data" / "mask_template.png"))
    paste = fc.prepare_paste_mask(mask, M_c2o, (orig.shape[1], orig.shape[0]))
    pasted = DevicePasteBack(orig, M_c2o, paste, 512, "cpu")
    planes = torch.from_numpy(np.ascontiguousarray(crop[..., ::-1])).permute(2, 0, 1)   # RGB planes
    box, ok = fetch_image(pasted(planes))
    out = pasted.compose(box)
    assert ok and out.shape == orig.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - kit["out__paste_result_u8"]).max() <= 2      # the kit's tolerance
    assert np.abs(out.astype(int) - fc.paste_back(crop, M_c2o, orig, paste)).max() <= 2
    assert np.array_equal(orig, before)                                          # the avatar is untouched


def test_device_paste_with_an_empty_box_and_a_wrong_mask() -> None:
    image = np.full((40, 30, 3), 77, np.uint8)
    empty = fc.PasteMask(mask=np.zeros((40, 30, 3), np.float32), box=(0, 0, 0, 0))
    pasted = DevicePasteBack(image, np.eye(3, dtype=np.float32), empty, 512, "cpu")
    box, _ = fetch_image(pasted(torch.zeros(3, 512, 512, dtype=torch.uint8)))
    out = pasted.compose(box)
    assert np.array_equal(out, image) and out is not image
    with pytest.raises(ValueError, match="paste mask: expected 20x30 to match the image, got 40x30"):
        DevicePasteBack(image[:20], np.eye(3, dtype=np.float32), empty, 512, "cpu")


def test_animator_paste_on_device_matches_opencv_paste(avatar_face) -> None:
    on_device, live_a = make_animator(avatar_face, ScriptedBackend(), paste_on_device=True, reference_frames=1)
    opencv, live_b = make_animator(avatar_face, ScriptedBackend(), paste_on_device=False, reference_frames=1)
    for i, mirror in enumerate([False, False, True]):
        for live in (live_a, live_b):
            live.update(mirror=mirror)
        a, b = on_device.process(fake_face(), i / 30), opencv.process(fake_face(), i / 30)
        assert a.rendered and b.rendered and a.image.shape == b.image.shape == avatar_face.image.shape
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2


def test_the_gpu_fetch_packing_round_trips() -> None:
    """The bytes the CUDA path copies (packed on the device) give the CPU path's images and flag,
    for one image (the frame) and two (the frame's region and its small copy to segment)."""
    region = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    small = torch.randint(0, 256, (3, 2, 3), dtype=torch.uint8)
    for planes in ([region], [region, small]):
        expected, _ = fetch_images(planes)
        for valid in (torch.tensor(True), torch.tensor(False), None):
            host = pack_frames(planes, valid).numpy()
            assert host.size == sum(p.numel() for p in planes) + (valid is not None)
            images, ok = unpack_frames(host, [(p.shape[1], p.shape[2]) for p in planes], valid is not None)
            assert len(images) == len(planes) and ok == (valid is None or bool(valid))
            assert all(np.array_equal(a, b) for a, b in zip(images, expected, strict=True))


# --------------------------------------------------------------------------- no host reads per frame
def test_the_detector_sees_host_reads() -> None:
    with HostReads() as mode:
        float(torch.ones(1).sum())
        bool(torch.ones(1) > 0)
    assert len(mode.reads) == 2


@pytest.mark.parametrize("settings", [
    {},
    {"eye_mode": "follow", "lip_mode": "follow", "driving_option": "expression-friendly"},
    {"eye_mode": "fixed", "lip_mode": "fixed", "translation_lock": True, "mirror": True},
    {"paste_back": False, **NO_SMOOTHING},
    {"background": "color:#00ff00"},
    {"background": "blur", "mirror": True},
    {"background": "color:#0000ff", "paste_back": False},
], ids=["default", "follow+expression-friendly", "fixed+lock+mirror", "crop-only", "key", "blur+mirror",
        "crop-only+key"])
@pytest.mark.parametrize("paste_on_device", [False, True], ids=["opencv-paste", "device-paste"])
def test_steady_frames_read_nothing_back_before_the_fetch(avatar_face, settings, paste_on_device) -> None:
    backend = ScriptedBackend()
    anim, _ = make_animator(avatar_face, backend, paste_on_device=paste_on_device, reference_frames=3, **settings)
    for i in range(3):
        anim.process(fake_face(), i / 30)
    assert anim.has_reference
    with HostReads() as mode:
        frames = []
        for i in range(3, 8):
            backend.pose = (i * 2.0, -i * 3.0, i * 1.0)
            backend.exp_offset = 0.01 * i
            frames.append(anim.process(fake_face(eye=0.2 + 0.01 * i, lip=0.05 * i), i / 30))
    assert mode.reads == []
    assert all(f.rendered and f.status == Status.LIVE for f in frames)


@pytest.mark.parametrize("settings", [{}, {"animal_stitching": True, "motion_strength": 2.0, "mirror": True},
                                      {"background": "color:#00ff00", "paste_back": False}],
                         ids=["default", "stitching+strength+mirror", "crop-only+key"])
@pytest.mark.parametrize("paste_on_device", [False, True], ids=["opencv-paste", "device-paste"])
def test_animal_frames_read_nothing_back_before_the_fetch(avatar_face, settings, paste_on_device) -> None:
    """An animal avatar's reference keypoints and hull multiplier are made while the reference is
    taken; a live frame reads nothing back."""
    from dataclasses import replace

    backend = ScriptedBackend()
    anim, _ = make_animator(replace(avatar_face, kind="animal"), backend, paste_on_device=paste_on_device,
                            reference_frames=3, **settings)
    for i in range(3):
        anim.process(fake_face(), i / 30)
    assert anim.has_reference and anim.avatar.kind == "animal"
    with HostReads() as mode:
        frames = []
        for i in range(3, 8):
            backend.pose = (i * 2.0, -i * 3.0, i * 1.0)
            backend.exp_offset = 0.01 * i
            frames.append(anim.process(fake_face(eye=0.2 + 0.01 * i, lip=0.05 * i), i / 30))
    assert mode.reads == []
    assert all(f.rendered and f.status == Status.LIVE for f in frames)


def test_background_constants_are_ready_before_the_frame_is_queued(avatar_face) -> None:
    """The compositing constants (which go up from pageable memory) are made before the frame's
    first device work, also on the frame right after a mode or layout change."""
    events: list[str] = []

    class Recording(ScriptedBackend):
        def motion(self, image):
            events.append("motion")
            return super().motion(image)

    anim, live = make_animator(avatar_face, Recording(), paste_on_device=True, reference_frames=1,
                               background="color:#00ff00")
    made = anim.background._device_constants

    def recorded(composite, state, device):
        if device not in composite.device:
            events.append("constants")
        return made(composite, state, device)

    anim.background._device_constants = recorded
    for i, change in enumerate([{}, {}, {"background": "blur"}, {"paste_back": False}, {}]):
        live.update(**change)
        events.clear()
        assert anim.process(fake_face(), i / 30).rendered
        assert "constants" not in events[events.index("motion"):], (i, events)
        assert ("constants" in events) == (i in (0, 2, 3)), (i, events)


# --------------------------------------------------------------------------- the keypoint math
def test_keypoints_follow_the_official_relative_motion(avatar_face) -> None:
    backend = ScriptedBackend()
    anim, _ = make_animator(avatar_face, backend, reference_frames=1, stitching=False, normalize_lip=False,
                       **NO_SMOOTHING)
    crop = image_to_tensor(fake_face().network_input, backend.device)

    def drive(pose, t, exp_offset, when) -> motion.DrivingMotion:
        backend.pose, backend.t, backend.exp_offset = pose, t, exp_offset
        anim.process(fake_face(), when)
        return motion.DrivingMotion.from_info(backend.motion(crop))

    reference = drive((2.0, -3.0, 1.0), (0.01, 0.02), 0.0, 0.0)
    driving = drive((10.0, -20.0, 5.0), (0.05, -0.03), 0.02, 0.1)
    src = anim.avatar
    expected = motion.relative_keypoints(src.info, src.R_s, driving, reference)
    assert torch.allclose(anim.last_keypoints, expected, atol=1e-4)
    assert not torch.allclose(expected, src.x_s, atol=1e-2)          # it did move


def test_nan_motion_in_live_mode_does_not_poison_later_frames(avatar_face) -> None:
    backend = ScriptedBackend()
    anim, _ = make_animator(avatar_face, backend, reference_frames=1)
    good = anim.process(fake_face(), 0.0)
    neutral = anim.last_keypoints.clone()
    backend.pose = (float("nan"), 0.0, 0.0)
    bad = anim.process(fake_face(), 1 / 30)
    assert bad.image is good.image and not bad.rendered
    backend.pose = (0.0, 0.0, 0.0)
    after = anim.process(fake_face(), 2 / 30)
    assert after.rendered and torch.isfinite(anim.last_keypoints).all()
    assert torch.allclose(anim.last_keypoints, neutral, atol=1e-4)


def test_nan_motion_while_calibrating_shows_the_avatar(avatar_face) -> None:
    backend = ScriptedBackend()
    anim, _ = make_animator(avatar_face, backend, reference_frames=3)
    backend.pose = (0.0, float("inf"), 0.0)
    frame = anim.process(fake_face(), 0.0)
    assert frame.status == Status.NO_FACE_YET and not frame.rendered and frame.image is avatar_face.image
    assert anim.reference.vector is None and anim.reference.window == []


# --------------------------------------------------------------------------- on a CUDA GPU
@CUDA
@pytest.mark.parametrize("settings", [{}, {"background": "color:#00ff00"}], ids=["keep", "key"])
def test_one_synchronising_call_per_steady_frame_on_cuda(avatar_face, settings) -> None:
    anim, _ = make_animator(avatar_face, ScriptedBackend("cuda"), reference_frames=2, **settings)
    assert anim.paste_on_device
    for i in range(4):                     # calibration, and the first frames that set buffers up
        anim.process(fake_face(), i / 30)
    torch.cuda.synchronize()
    frames, syncs = device_waits(lambda: [anim.process(fake_face(eye=0.3 + 0.01 * i), (4 + i) / 30)
                                          for i in range(5)], torch.device("cuda"))
    assert all(f.rendered for f in frames)
    assert len(syncs) == len(frames), syncs


@CUDA
def test_cuda_chain_matches_the_cpu_chain(avatar_face) -> None:
    gpu, _ = make_animator(avatar_face, StubBackend("cuda"), reference_frames=1)
    cpu, _ = make_animator(avatar_face, StubBackend("cpu"), reference_frames=1)
    for i in range(3):
        a, b = gpu.process(fake_face(), i / 30), cpu.process(fake_face(), i / 30)
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2
        assert torch.allclose(gpu.last_keypoints.cpu(), cpu.last_keypoints, atol=1e-4)


@CUDA
def test_cuda_graphs_replay_new_inputs(synthetic_weights_dir: Path) -> None:
    from engines.backend import TorchBackend
    from engines.checkpoints import load_networks

    nets = load_networks(synthetic_weights_dir)
    graphed = TorchBackend(nets, "cuda", precision="fp16")
    eager = TorchBackend(load_networks(synthetic_weights_dir), "cuda", precision="fp16", cuda_graphs=False)
    g = torch.Generator().manual_seed(0)
    crops = [torch.rand(1, 3, 256, 256, generator=g).cuda() for _ in range(2)]
    feature = graphed.appearance(crops[0])
    x_s = motion.keypoints_from_info(graphed.motion(crops[0]))
    outputs = []
    for crop in crops:
        a, b = graphed.motion(crop), eager.motion(crop)
        assert torch.allclose(a.exp, b.exp, atol=1e-3) and torch.allclose(a.yaw, b.yaw, atol=1e-2)
        x_d = motion.keypoints_from_info(a)
        r_graph, r_eager = graphed.render(feature, x_s, x_d), eager.render(feature, x_s, x_d)
        assert torch.allclose(r_graph, r_eager, atol=2e-3)
        outputs.append(r_graph)
    assert not torch.allclose(outputs[0], outputs[1])          # the second replay saw the new inputs


def test_the_live_form_of_animate_keypoints_reads_nothing_back() -> None:
    """The animator's call: retargeting offsets go in before stitching, and a NaN comes out as NaN
    (the animator swaps it on the device) without any host read."""
    g = torch.Generator().manual_seed(0)
    src = motion.KeypointInfo(pitch=torch.full((1, 1), 5.0), yaw=torch.full((1, 1), -10.0),
                              roll=torch.zeros(1, 1), t=torch.zeros(1, 3), exp=torch.zeros(1, 21, 3),
                              scale=torch.ones(1, 1), kp=torch.randn(1, 21, 3, generator=g) * 0.3)
    x_s = motion.keypoints_from_info(src)
    drv = motion.DrivingMotion(R=src.rotation(), exp=torch.full((1, 21, 3), float("nan")), scale=src.scale, t=src.t)
    seen: list[torch.Tensor] = []
    stitching = lambda x: (seen.append(x), torch.zeros(1, 65))[1]      # noqa: E731
    offset = torch.full((1, 21, 3), 0.25)
    controls = motion.MotionControls.make("cpu")
    with HostReads() as mode:
        broken = [motion.animate_keypoints(src, x_s, drv, motion.DrivingMotion.from_info(src), stitching_net=stitching,
                                           option=option, x_d_ref=x_s, expression_multiplier=1.0, R_s=src.rotation(),
                                           controls=controls, retargeting=[offset], lip_delta=offset,
                                           check_finite=False)
                  for option in ("pose-friendly", "expression-friendly")]
    assert mode.reads == []
    assert all(torch.isnan(out.final).all() for out in broken)
    healthy = motion.DrivingMotion.from_info(src)
    out = motion.animate_keypoints(src, x_s, healthy, healthy, stitching_net=stitching, retargeting=[offset],
                                   lip_delta=offset, check_finite=False)
    assert torch.allclose(seen[-1][:, 63:], (x_s + offset).reshape(1, -1), atol=1e-5)   # offset before S
    assert torch.allclose(out.final, x_s + 2 * offset, atol=1e-5)                        # lip delta after S
