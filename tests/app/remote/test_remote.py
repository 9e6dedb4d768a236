"""Rendering on another machine, without Ray: the protocol, the render service's sessions
(authentication, isolation, malformed / oversized / idle / vanished clients, the frame-rate cap, a
full server) and the client (``RemoteAnimator``: equal to the local animator, reconnecting), over
real WebSockets on loopback (``remote_server.running``)."""
from __future__ import annotations

import dataclasses
import json
import socket
import struct
import time

import cv2
import numpy as np
import pytest
import torch
from support.fakes import ClosingStub
from support.render_server import TOKEN, close_code, frame_message, result, running, session, stub_service, wait_for
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from app.animation.animator import Animator
from app.animation.frames import Status
from app.avatar.prepared import prepare_avatar
from app.imaging.segmentation import EllipseSegmenter
from app.remote import protocol as p
from app.remote.client import RemoteAnimator, RemoteAuthError, RemoteError, RemoteServer
from app.remote.server.batching import BatchedBackend, render_batch
from app.remote.server.local_server import free_port
from app.remote.server.service import RenderService
from app.settings import AnimationSettings, LiveSettings, MotionSettings, OutputSettings
from engines.backend import StubBackend


# -- driving data ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def driving_faces(d0):
    """d0's first 20 frames through the tracking stage (MediaPipe), with their capture times."""
    from app.face.driving import DrivingCropper
    from app.face.tracker import MediaPipeFaceMesh

    cap = cv2.VideoCapture(str(d0))
    cropper = DrivingCropper(MediaPipeFaceMesh())
    faces = []
    try:
        for i in range(20):
            ok, frame = cap.read()
            assert ok
            faces.append((cropper.process(frame, i / 25), i / 25))
    finally:
        cap.release()
        cropper.source.close()
    assert all(f is not None for f, _ in faces)
    return faces


def script(faces):
    """A stream with everything the animator does: calibration, live frames, the face lost long
    enough to hold, ease and sit at neutral, then back."""
    out = list(faces[:12])
    t = out[-1][1]
    out += [(None, t + dt) for dt in (0.05, 0.1, 0.3, 0.5, 0.8, 1.2)]
    out += [(f, t + 1.3 + k / 25) for k, (f, _) in enumerate(faces[12:])]
    return out


# -- protocol ----------------------------------------------------------------------------------
def test_binary_messages_round_trip_and_reject_broken_envelopes():
    header, payload = p.unpack(p.pack({"type": "frame", "seq": 3}, b"\x01\x02"))
    assert header == {"type": "frame", "seq": 3} and payload == b"\x01\x02"
    for broken in (b"", b"\x00\x00", struct.pack(">I", 10) + b"{}",       # short; header longer than the message
                   struct.pack(">I", p.MAX_HEADER_BYTES + 1) + b"x" * (p.MAX_HEADER_BYTES + 1),
                   struct.pack(">I", 3) + b"abc", struct.pack(">I", 2) + b"[]",
                   struct.pack(">I", 13) + b'{"type": 1.5}'):
        with pytest.raises(p.ProtocolError):
            p.unpack(broken)


def test_images_decode_only_at_their_exact_shape():
    img = np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)
    assert np.array_equal(p.decode_image(p.encode_image(img, "raw"), "raw", p.DRIVING_SHAPE), img)
    assert np.array_equal(p.decode_image(p.encode_image(img, "png"), "png", p.DRIVING_SHAPE), img)
    jpeg = p.decode_image(p.encode_image(img, "jpeg"), "jpeg", p.DRIVING_SHAPE)
    assert jpeg.shape == img.shape
    for payload, fmt in ((p.encode_image(img, "raw")[:-1], "raw"), (b"not a jpeg", "jpeg"), (b"", "jpeg"),
                         (p.encode_image(img[:128], "jpeg"), "jpeg")):
        with pytest.raises(p.ProtocolError):
            p.decode_image(payload, fmt, p.DRIVING_SHAPE)


def test_a_small_file_declaring_a_huge_picture_is_refused_before_decoding():
    img = np.zeros((256, 256, 3), np.uint8)
    jpeg, png = p.encode_image(img, "jpeg"), p.encode_image(img, "png")
    assert p.encoded_size(jpeg, "jpeg") == (256, 256) and p.encoded_size(png, "png") == (256, 256)
    # the same bytes with a 60000 x 60000 header: decoding would allocate gigabytes
    sof = jpeg.index(b"\xff\xc0")
    bomb_jpeg = jpeg[:sof + 5] + struct.pack(">HH", 60000, 60000) + jpeg[sof + 9:]
    bomb_png = png[:16] + struct.pack(">II", 60000, 60000) + png[24:]
    for payload, fmt in ((bomb_jpeg, "jpeg"), (bomb_png, "png")):
        assert p.encoded_size(payload, fmt) == (60000, 60000)
        with pytest.raises(p.ProtocolError, match="60000x60000"):
            p.decode_image(payload, fmt, p.DRIVING_SHAPE)
    with pytest.raises(p.ProtocolError):
        p.parse_text("[" * 100000)                              # nesting deep enough to overflow the parser


def test_every_motion_setting_travels_and_no_output_setting_does_and_types_are_checked():
    s = AnimationSettings(eye_mode="fixed", eye_target=0.5, rotation_multiplier=(1.0, 0.5, 2.0), mirror=True,
                          background="blur", smooth_lips=0.7, reference_frames=9, paste_back=False)
    wire = json.loads(json.dumps(p.settings_to_wire(s)))
    assert set(wire) == set(MotionSettings.field_names()) and not set(wire) & set(OutputSettings.field_names())
    assert wire == p.settings_to_wire(s.motion)               # the whole settings or their motion part alike
    live = LiveSettings()
    live.update(**p.settings_from_wire(wire))
    assert live.snapshot().motion == s.motion and live.snapshot().output == OutputSettings()
    # a value of every type differs from its default, so a field left behind would show
    changed = MotionSettings(driving_option="expression-friendly", stitching=False, rotation_limit_deg=(10, 20, 30),
                             reference_frames=9, lip_mode="follow", smooth_eyes=0.9)
    assert LiveSettings().update(**p.settings_from_wire(json.loads(json.dumps(p.settings_to_wire(changed))))
                                 ).motion == changed
    for bad in ({"mirror": True}, {"paste_back": False}, {"background": "blur"}, {"unknown": 1},
                {"eye_target": "0.5"}, {"eye_target": True}, {"stitching": 1}, {"reference_frames": 2.5},
                {"rotation_multiplier": [1, 1]}, {"rotation_multiplier": [1, 1, "1"]}, {"eye_mode": 3},
                {"eye_target": float("nan")}, [1, 2]):
        with pytest.raises(p.ProtocolError):
            p.settings_from_wire(bad)


# -- the service -------------------------------------------------------------------------------
def test_a_session_without_the_right_token_is_refused_before_it_opens():
    service = stub_service()
    with running(service) as url:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}):
            with pytest.raises(InvalidStatus) as e:
                connect(url, additional_headers=headers)
            assert e.value.response.status_code == 403
        assert service.sessions_served == 0
        session(url).close()
        assert service.sessions_served == 1


@pytest.mark.parametrize("send, code", [
    (lambda ws: ws.send("not json"), p.Close.MALFORMED),
    (lambda ws: ws.send(p.text({"type": "frame"})), p.Close.MALFORMED),
    (lambda ws: ws.send(p.pack({"type": "frame", "seq": 1, "t": 0, "face": True, "ratios": [0.3, 0.3, 0]},
                               b"\0" * 10)), p.Close.MALFORMED),                       # frame before avatar
    (lambda ws: ws.send(p.pack({"type": "avatar", "format": "png", "kind": "human", "eye_ratios": [0.3, 0.3],
                                "lip_ratio": [0]}, b"garbage")), p.Close.MALFORMED),
    (lambda ws: ws.send(p.text({"type": "settings", "revision": 1, "values": {"eye_target": 9.0}})),
     p.Close.MALFORMED),                                                              # out of range
    (lambda ws: ws.send(b"\xff" * (p.Limits().max_frame_bytes + 1)), p.Close.TOO_BIG),
    (lambda ws: ws.send("x" * (p.Limits().max_text_bytes + 1)), p.Close.TOO_BIG),
])
def test_a_broken_message_ends_that_session_only(send, code):
    service = stub_service()
    avatar = np.full(p.CROP_SHAPE, 120, np.uint8)
    with running(service) as url:
        other = session(url, avatar=avatar)
        ws = session(url)
        send(ws)
        assert close_code(ws) == code
        wait_for(lambda: service.sessions == 1)
        other.send(frame_message(1, np.full(p.DRIVING_SHAPE, 90, np.uint8)))     # the other session goes on
        header, _ = p.unpack(other.recv(timeout=10))
        assert header["type"] == "result" and header["seq"] == 1
        other.close()


def test_hostile_frames_in_a_live_session_close_it_with_a_reason():
    avatar = np.full(p.CROP_SHAPE, 120, np.uint8)
    cases = [
        ({"type": "frame", "seq": 1, "t": 0, "face": True, "ratios": [0.3, 0.3, 0.1]}, b"\0" * 100),  # wrong size
        ({"type": "frame", "seq": 1, "t": 0, "face": True, "ratios": [0.3, float("nan"), 0.1]},
         b"\0" * int(np.prod(p.DRIVING_SHAPE))),
        ({"type": "frame", "seq": -1, "t": 0, "face": False}, b""),
        ({"type": "frame", "seq": 1, "t": 0, "face": False}, b"\0"),
        ({"type": "frame", "seq": 1, "t": "now", "face": False}, b""),
        ({"type": "shutdown"}, b""),
    ]
    service = stub_service()
    with running(service) as url:
        for header, payload in cases:
            ws = session(url, avatar=avatar)
            ws.send(p.pack(header, payload))
            assert close_code(ws) == p.Close.MALFORMED, header
        wait_for(lambda: service.sessions == 0)
        assert service.health()["status"] == "ok"


def test_another_protocol_version_is_told_so():
    with running(stub_service()) as url:
        ws = connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, legacy=True)
        ws.send(p.text({"type": "hello", "version": 99, "format": "raw"}))
        assert close_code(ws) == p.Close.VERSION


def test_sessions_are_isolated():
    """Two clients with different avatars, frames interleaved: each gets its own avatar back."""
    service = stub_service()
    dark, light = np.full(p.CROP_SHAPE, 40, np.uint8), np.full(p.CROP_SHAPE, 210, np.uint8)
    with running(service) as url:
        a, b = session(url, avatar=dark), session(url, avatar=light)
        crop = np.full(p.DRIVING_SHAPE, 90, np.uint8)
        seen: dict[str, list] = {"a": [], "b": []}
        receipts: dict[str, str | None] = {"a": None, "b": None}
        for seq in range(1, 9):
            for name, ws in (("a", a), ("b", b)):          # both sessions have a frame in flight at once
                ws.send(frame_message(seq, crop, receipt=receipts[name]))
            for name, ws in (("a", a), ("b", b)):
                header, body = result(ws)
                assert header["seq"] == seq
                receipts[name] = header["receipt"]
                if header["rendered"]:
                    seen[name].append(p.decode_image(body, "raw", p.CROP_SHAPE))
        assert seen["a"] and seen["b"]
        # the stub renders the avatar itself: each session sees only its own
        assert all(abs(float(img.mean()) - 40) < 2 for img in seen["a"])
        assert all(abs(float(img.mean()) - 210) < 2 for img in seen["b"])
        assert service.frames_dropped == 0
        a.close()
        b.close()


def test_idle_and_vanished_clients_free_their_sessions():
    service = stub_service(idle_timeout_s=0.5)
    with running(service) as url:
        ws = session(url)
        assert close_code(ws) == p.Close.IDLE                # said nothing for the idle timeout
        wait_for(lambda: service.sessions == 0)
        # a client that sends half a frame and vanishes without a close
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        raw = socket.create_connection(("127.0.0.1", port))
        raw.sendall(f"GET {p.SESSION_PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        assert b"101" in raw.recv(4096).split(b"\r\n")[0]
        wait_for(lambda: service.sessions == 1)
        raw.sendall(bytes([0x82, 0xFE]) + struct.pack(">H", 60000) + b"\0\0\0\0" + b"x" * 1000)   # masked, cut short
        raw.close()
        wait_for(lambda: service.sessions == 0, timeout=3)


def test_the_frame_rate_cap_slows_a_fast_client_down_and_loses_nothing():
    service = stub_service(limits=p.Limits(max_fps=20))
    with running(service) as url:
        ws = session(url, avatar=np.full(p.CROP_SHAPE, 120, np.uint8))
        crop = np.full(p.DRIVING_SHAPE, 90, np.uint8)
        t0 = time.perf_counter()
        seqs, receipt = [], None
        for seq in range(1, 13):                              # each as soon as the last is answered
            ws.send(frame_message(seq, crop, receipt=receipt))
            header, _ = result(ws)
            seqs.append(header["seq"])
            receipt = header["receipt"]
        elapsed = time.perf_counter() - t0
        assert seqs == list(range(1, 13)) and service.frames_dropped == 0
        assert elapsed >= 10 / 20 - 0.02, elapsed              # 12 frames, 2 of slack, at 20 per second
        ws.close()


def test_a_full_server_says_so_and_the_client_reports_it(avatar_face):
    service = stub_service(max_sessions=1)
    with running(service) as url:
        first = session(url)
        client = RemoteAnimator(RemoteServer.parse(url, TOKEN), LiveSettings(), avatar_face)
        with pytest.raises(RemoteError, match="server full"):
            client.connect()
        first.close()
        wait_for(lambda: service.sessions == 0)
        client.connect()
        client.close()


def test_the_client_reports_a_wrong_token_and_an_absent_server(avatar_face):
    with running(stub_service()) as url:
        with pytest.raises(RemoteAuthError, match="refused the token"):
            RemoteAnimator(RemoteServer.parse(url, "not-the-token-at-all"), LiveSettings(), avatar_face).connect()
    with pytest.raises(RemoteError, match="cannot reach"):
        RemoteAnimator(RemoteServer.parse(f"ws://127.0.0.1:{free_port()}"), LiveSettings(), avatar_face).connect()
    assert "not-the-token" not in repr(RemoteServer.parse("ws://h:1", "not-the-token-at-all"))


# -- the client against the local animator -----------------------------------------------------
# (output changes while the face is lost differ on purpose: the client re-finishes its last crop
# where the local animator renders the held pose again)
SETTINGS_CHANGES = {5: {"eye_mode": "fixed", "eye_target": 0.6}, 9: {"mirror": True},
                    11: {"paste_back": False}, 20: {"background": "blur", "paste_back": True},
                    24: {"expression_multiplier": 1.5, "smooth_rotation": 0.9}}


class MotionShowingBackend(StubBackend):
    """The stub with its head turns amplified and a render that shows the driving keypoints
    (brightness follows their offset from the avatar's), so that the equality below covers the
    motion path (smoothing, reference, retargeting) too."""

    def motion(self, image):
        info = super().motion(image)
        return dataclasses.replace(info, pitch=info.pitch * 20, yaw=info.yaw * 20)

    def render(self, feature, x_s, x_d):
        return (feature * 0.5 + (x_d - x_s).abs().mean() * 100).clamp(0, 1)


def run_stream(animator, live, stream, calibrate_at=None):
    images, statuses = [], []
    for i, (face, t) in enumerate(stream):
        if i in SETTINGS_CHANGES:
            live.update(**SETTINGS_CHANGES[i])
        if i == calibrate_at:
            animator.calibrate()
        out = animator.process(face, t)
        images.append(out.image.copy())
        statuses.append(out.status)
    return images, statuses


def test_remote_animation_equals_local_with_raw_frames(avatar_face, driving_faces):
    """Same driving faces and times, same settings changes mid-stream (retargeting, mirror, crop
    only, background): the client's output is the local animator's, pixel for pixel."""
    stream = script(driving_faces)
    live = LiveSettings(AnimationSettings(reference_frames=3))
    backend = MotionShowingBackend()
    local = Animator(backend, live, prepare_avatar(avatar_face, backend), segmenter=EllipseSegmenter)
    expected, expected_status = run_stream(local, live, stream, calibrate_at=22)
    assert len({float(img.mean()) for img in expected[:9]}) > 4          # the motion shows
    service = RenderService(MotionShowingBackend(), token=TOKEN)
    with running(service) as url:
        live = LiveSettings(AnimationSettings(reference_frames=3))
        client = RemoteAnimator(RemoteServer.parse(url, TOKEN, frame_format="raw"), live, avatar_face,
                                segmenter=EllipseSegmenter)
        client.connect()
        try:
            got, got_status = run_stream(client, live, stream, calibrate_at=22)
        finally:
            client.close()
    assert got_status == expected_status
    assert {Status.CALIBRATING, Status.LIVE, Status.HOLDING, Status.EASING, Status.NEUTRAL} <= set(got_status)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.shape == b.shape and np.array_equal(a, b), f"frame {i}"
    wait_for(lambda: service.sessions == 0)


def test_jpeg_frames_stay_close_to_local(avatar_face, driving_faces):
    live = LiveSettings(AnimationSettings(reference_frames=3, paste_back=False))
    local = Animator(StubBackend(), live, prepare_avatar(avatar_face, StubBackend()))
    expected = [local.process(f, t).image for f, t in driving_faces[:8]]
    with running(stub_service()) as url:
        client = RemoteAnimator(RemoteServer.parse(url, TOKEN, quality=90), live, avatar_face)
        client.connect()
        got = [client.process(f, t).image for f, t in driving_faces[:8]]
        client.close()
    for a, b in zip(got, expected, strict=True):
        psnr = cv2.PSNR(a, b)
        assert 30 < psnr < 100, psnr                           # close, yet not lossless


def test_the_client_holds_the_avatar_while_the_server_is_gone_and_reconnects(avatar_face, driving_faces):
    port = free_port()
    live = LiveSettings(AnimationSettings(reference_frames=3))
    service = stub_service()
    camera_like = [f.network_input for f, _ in driving_faces]
    with running(service, port) as url:
        client = RemoteAnimator(RemoteServer.parse(url, TOKEN, frame_format="raw"), live, avatar_face)
        client.connect()
        for face, t in driving_faces[:6]:
            last = client.process(face, t)
        assert last.status == Status.LIVE and last.rendered
    # the server is gone: the output holds the last frame, at once, and says so
    t0 = time.monotonic()
    for face, t in driving_faces[6:10]:
        held = client.process(face, t)
        assert held.status == Status.SERVER_LOST and not held.rendered
        assert np.array_equal(held.image, last.image)
        assert not any(held.image.shape == c.shape and np.array_equal(held.image, c) for c in camera_like)
    assert time.monotonic() - t0 < 2.0
    service2 = stub_service()
    with running(service2, port):
        deadline = time.monotonic() + 15
        while True:
            out = client.process(driving_faces[10][0], 1.0)
            if out.rendered:
                break
            assert time.monotonic() < deadline, "did not reconnect"
            time.sleep(0.1)
        assert client.link.connects == 2 and service2.sessions_served == 1    # avatar uploaded again
        assert out.status in (Status.LIVE, Status.CALIBRATING)
        client.close()


# -- batching ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_batched_renders_equal_one_by_one_renders(synthetic_weights_dir):
    """W+G of three sessions' frames as one batch equals each frame rendered alone (real networks,
    synthetic weights, CPU)."""
    from engines.backend import TorchBackend
    from engines.checkpoints import load_networks

    backend = TorchBackend(load_networks(synthetic_weights_dir), "cpu")
    g = torch.Generator().manual_seed(3)
    requests = [(torch.randn(1, 32, 16, 64, 64, generator=g), torch.randn(1, 21, 3, generator=g) * 0.3,
                 torch.randn(1, 21, 3, generator=g) * 0.3) for _ in range(3)]
    with torch.inference_mode():
        alone = [backend.render(*r) for r in requests]
        batched = render_batch(backend, requests)
    for a, b in zip(alone, batched, strict=True):
        assert a.shape == b.shape == (1, 3, 512, 512)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
        assert torch.equal((a * 255).clamp(0, 255).to(torch.uint8), (b * 255).clamp(0, 255).to(torch.uint8))


def test_a_batched_backend_sends_only_render_through_the_batcher():
    stub = StubBackend()
    seen = []
    backend = BatchedBackend(stub, lambda r: seen.append(r) or r[0])
    image = torch.rand(1, 3, 256, 256)
    assert backend.device == stub.device and backend.name == "stub"
    backend.appearance(image)
    out = backend.render(torch.ones(1, 3, 512, 512), torch.zeros(1, 21, 3), torch.zeros(1, 21, 3))
    assert len(seen) == 1 and torch.equal(out, torch.ones(1, 3, 512, 512))


def test_a_batched_backend_delegates_the_interface_and_nothing_else():
    stub = StubBackend()
    backend = BatchedBackend(stub, lambda r: r[0])
    image = torch.rand(1, 3, 256, 256)
    assert torch.equal(backend.appearance(image), stub.appearance(image))
    assert torch.equal(backend.motion(image).kp, stub.motion(image).kp)
    for mlp, width in (("stitching", 126), ("eye", 66), ("lip", 65)):
        x = torch.rand(1, width)
        assert torch.equal(getattr(backend, mlp)(x), getattr(stub, mlp)(x))
    assert not hasattr(backend, "_kp")                # the shared backend's other attributes stay its own


def test_a_batched_backend_closes_nothing_shared():
    shared = ClosingStub()
    BatchedBackend(shared, lambda r: r[0]).close()          # a session's end
    assert shared.closes == 0
