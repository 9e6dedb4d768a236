"""Hostile clients of the render server (issue 21's security review, the wire): numbers that break
float conversion, time steps that break the smoothing, sessions that hold their slot without
working, clients that never read their answers or flood, and JPEGs that take long to decode. Over
real WebSockets on loopback (``render_server.running``, the stub backend, no Ray)."""
from __future__ import annotations

import json
import math
import multiprocessing
import threading
import time

import cv2
import numpy as np
import pytest
import torch
from support.render_server import (
    TOKEN,
    close_code,
    flood,
    frame_message,
    result,
    running,
    session,
    stub_service,
    wait_for,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app.face.driving import DrivingFace
from app.face.smoothing import OneEuroFilter
from app.remote import protocol as p
from app.remote.client import RemoteServer, ServerLink
from app.remote.server.service import RenderService
from app.remote.server.session import _NO_TRANSFORM, FrameGate
from app.settings import AnimationSettings
from engines.backend import StubBackend

AVATAR = np.full(p.CROP_SHAPE, 120, np.uint8)
CROP = np.full(p.DRIVING_SHAPE, 90, np.uint8)
HUGE = 10 ** 400            # a JSON integer hundreds of digits long: beyond float range


# -- 1. numbers beyond float range ---------------------------------------------------------------
def test_huge_integers_in_number_fields_are_protocol_errors():
    for read in (lambda: p.number({"type": "frame", "t": HUGE}, "t"),
                 lambda: p.number({"type": "frame", "t": -HUGE}, "t"),
                 lambda: p.ratios({"type": "frame", "ratios": [0.3, HUGE, 0.1]}, "ratios", 3),
                 lambda: p.settings_from_wire({"eye_target": HUGE}),
                 lambda: p.settings_from_wire({"reference_frames": HUGE}),
                 lambda: p.settings_from_wire({"rotation_multiplier": [1, HUGE, 1]})):
        with pytest.raises(p.ProtocolError):
            read()
    # the largest integer a float holds is still a number (then out of range where a range applies)
    assert p.number({"type": "x", "v": int(1.7e308)}, "v") == float(int(1.7e308))


@pytest.mark.parametrize("message", [
    {"type": "frame", "seq": 1, "t": HUGE, "face": False},
    {"type": "frame", "seq": HUGE, "t": 0.0, "face": False},
    {"type": "frame", "seq": 1, "t": 0.0, "face": True, "ratios": [0.3, HUGE, 0.1]},
    {"type": "settings", "revision": 1, "values": {"eye_target": HUGE}},
    {"type": "settings", "revision": 1, "values": {"rotation_multiplier": [1, 1, -HUGE]}},
    {"type": "settings", "revision": 1, "values": {"reference_frames": HUGE}},
    {"type": "settings", "revision": HUGE, "values": {}},
    {"type": "hello", "version": p.VERSION, "format": "raw", "quality": HUGE},
], ids=["frame.t", "frame.seq", "frame.ratios", "settings.float", "settings.tuple", "settings.int",
        "settings.revision", "hello.quality"])
def test_a_huge_integer_on_the_wire_closes_the_session_as_malformed_with_one_line(message, caplog):
    service = stub_service()
    with running(service) as url:
        if message["type"] == "hello":
            ws = connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, legacy=True)
            ws.send(json.dumps(message))
        else:
            ws = session(url, avatar=AVATAR)
            ws.send(p.pack(message, CROP.tobytes() if message.get("face") else b"") if message["type"] == "frame"
                    else p.text(message))
        assert close_code(ws) == p.Close.MALFORMED
        wait_for(lambda: service.sessions == 0)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


# -- 2. time steps ------------------------------------------------------------------------------
@pytest.mark.parametrize("step", [1e-300, 1e-9, 0.0, -1.0, -1e300, 1e300, math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_no_time_step_makes_the_one_euro_filter_non_finite(step, kind):
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    if kind == "torch":         # as the animator uses it: float32 on the device, per-element cutoffs
        f.min_cutoff = torch.tensor([1.0, 2.0, math.inf])
        sample = lambda k: torch.tensor([0.1 * k, 1.0, -0.5 * k], dtype=torch.float32)   # noqa: E731
    else:
        f.min_cutoff = np.array([1.0, 2.0, np.inf])
        sample = lambda k: np.array([0.1 * k, 1.0, -0.5 * k])                            # noqa: E731
    f(sample(0), 0.0)
    f(sample(1), step)                 # from t = 0: a step of 1e-300 is not lost to rounding
    outs = [f(sample(k), k / 25) for k in range(2, 30)]
    for out in outs:
        assert bool(np.isfinite(np.asarray(out)).all()), (step, out)
    # and it still follows the signal (the last element passes through: an infinite cutoff), unless
    # the step went far ahead: later times are then older, and the state stays as it was
    if step > 1e6:
        return
    assert float(outs[-1][2]) == pytest.approx(-0.5 * 29) and float(outs[-1][0]) > float(outs[0][0])


def test_a_time_step_below_float32_resolution_does_not_stop_rendering():
    """t = 0, then 1e-300, then normal steps: every later frame renders (the stub backend's motion
    goes through the animator's float32 One Euro filter)."""
    with running(stub_service()) as url:
        ws = session(url, avatar=AVATAR)
        receipt, statuses = None, []
        for seq, t in enumerate([0.0, 1e-300] + [k / 25 for k in range(1, 16)], start=1):
            ws.send(frame_message(seq, CROP, t=t, receipt=receipt))
            header, _ = result(ws)
            receipt = header.get("receipt")
            statuses.append((header["status"], header["rendered"]))
        assert statuses[-1] == ("live", True), statuses
        assert all(rendered for _, rendered in statuses[2:]), statuses
        ws.close()


@pytest.mark.parametrize("t", [-1.0, 2e9, 1e300, -HUGE])
def test_an_absurd_frame_time_is_a_protocol_error(t):
    with running(stub_service()) as url:
        ws = session(url, avatar=AVATAR)
        ws.send(frame_message(1, CROP, t=t))
        assert close_code(ws) == p.Close.MALFORMED


# -- 3. idle sessions ---------------------------------------------------------------------------
def keep_chatting(ws, message: str, period_s: float = 0.1, for_s: float = 6.0) -> int | None:
    """Send ``message`` every ``period_s`` for at most ``for_s``; the close code when the server
    ends the session meanwhile, None when it does not."""
    deadline = time.monotonic() + for_s
    try:
        while time.monotonic() < deadline:
            ws.send(message)
            try:
                ws.recv(timeout=period_s)                   # nothing comes back for these: the pace
            except TimeoutError:
                pass
    except ConnectionClosed as e:
        assert e.rcvd is not None
        return e.rcvd.code
    return None


def test_settings_and_calibrate_alone_do_not_keep_a_session_alive():
    service = stub_service(idle_timeout_s=0.6)
    settings = p.text({"type": "settings", "revision": 1, "values": {}})
    with running(service) as url:
        # a session that never sends its avatar, only settings
        assert keep_chatting(session(url), settings) == p.Close.IDLE
        # one with an avatar that then only calibrates
        assert keep_chatting(session(url, avatar=AVATAR), p.text({"type": "calibrate"})) == p.Close.IDLE
        wait_for(lambda: service.sessions == 0)


def test_a_session_that_sends_frames_stays_open_past_the_idle_timeout():
    service = stub_service(idle_timeout_s=0.6)
    with running(service) as url:
        ws = session(url, avatar=AVATAR)
        receipt = None
        deadline = time.monotonic() + 2.0                    # over three idle timeouts
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            ws.send(frame_message(seq, CROP, receipt=receipt))
            receipt = result(ws)[0].get("receipt")
            ws.send(p.text({"type": "calibrate"}))
            time.sleep(0.1)                                  # the client's pace, not a synchronisation
        assert service.sessions == 1
        ws.close()


# -- 4. a client that never reads ----------------------------------------------------------------
def frame(receipt: str | None = None) -> dict:
    return {"type": "frame"} if receipt is None else {"type": "frame", "receipt": receipt}


def test_the_gate_answers_a_client_that_reads_and_drops_for_one_that_does_not():
    gate = FrameGate(p.Limits(max_fps=10))                # budget: 10 drops within a second
    # one at a time, faster than the cap: each frame waits its turn (one of slack), none dropped
    now, receipt = 0.0, None
    waits = []
    for _ in range(5):
        waits.append(gate.admit(frame(receipt), now))
        now += waits[-1]
        receipt = gate.issue()                            # answered, then read at once
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.1, 0.1])
    # a receipt acknowledges every earlier result; one never issued acknowledges nothing
    gate.issue()
    second = gate.issue()
    assert gate.unread == 3
    assert gate.admit(frame("not-a-receipt-of-ours"), now + 10) is None and gate.unread == 3
    assert gate.admit(frame(second), now + 20) == 0.0 and gate.unread == 0
    with pytest.raises(p.ProtocolError) as e:
        gate.admit(frame(HUGE), now + 30)                 # type: ignore[arg-type]
    assert e.value.code == p.Close.MALFORMED


def test_the_gate_closes_a_session_that_drops_a_seconds_worth_within_a_second():
    gate = FrameGate(p.Limits(max_fps=10))
    gate.issue(), gate.issue()                            # two results never read
    for k in range(10):
        assert gate.admit(frame(), 5 + k * 0.05) is None   # dropped
    with pytest.raises(p.ProtocolError) as e:
        gate.admit(frame(), 5.5)                          # the 11th within a second
    assert e.value.code == p.Close.NOT_READING
    # dropped more slowly than that: dropped, and the session goes on
    slow = FrameGate(p.Limits(max_fps=10))
    slow.issue(), slow.issue()
    assert all(slow.admit(frame(), k * 0.2) is None for k in range(50))


def test_the_gate_drops_pipelined_frames_over_the_cap_instead_of_queueing_them():
    gate = FrameGate(p.Limits(max_fps=10))
    assert gate.admit(frame(), 0.0) == 0.0
    first = gate.issue()                                  # sent, not yet read
    assert gate.admit(frame(), 0.01) == 0.0               # pipelined, within the slack
    second = gate.issue()
    assert gate.admit(frame(first), 0.02) is None         # pipelined (one unread) and over the cap
    assert gate.admit(frame(second), 0.03) == pytest.approx(0.07)   # all read: it waits its turn instead


def send_without_reading(ws, count: int, fmt: str = "jpeg") -> int:
    """Send up to ``count`` frames without reading; the number sent before the server closed."""
    message = frame_message(1, CROP, fmt=fmt)
    for sent in range(count):
        try:
            ws.send(message)
        except ConnectionClosed:
            return sent
    return count


def read_all(ws) -> tuple[int, int | None]:
    """(results waiting for the client, close code) once the connection is closed."""
    results = 0
    try:
        for _ in range(100000):
            p.unpack(ws.recv(timeout=10))
            results += 1
    except ConnectionClosed as e:
        return results, e.rcvd.code if e.rcvd else None
    except TimeoutError:                                    # the server holds the session open
        pass
    return results, None


def test_a_client_that_never_reads_is_closed_and_holds_at_most_max_unread_answers():
    limits = p.Limits(max_fps=60)
    service = stub_service(limits=limits)
    served = []
    with running(service) as url:
        other = session(url, avatar=AVATAR)
        ws = session(url, fmt="jpeg", avatar=AVATAR)
        stop = threading.Event()

        def legitimate() -> None:                          # served all along, one frame at a time
            receipt, seq = None, 0
            while not stop.is_set() and seq < 2000:
                seq += 1
                other.send(frame_message(seq, CROP, receipt=receipt))
                header, _ = result(other)
                receipt = header.get("receipt")
                served.append(header["seq"])

        thread = threading.Thread(target=legitimate)
        thread.start()
        try:
            wait_for(lambda: len(served) >= 3)
            send_without_reading(ws, 600)
            waiting, code = read_all(ws)
            at_close = len(served)
            wait_for(lambda: len(served) >= at_close + 3)    # and goes on being served
        finally:
            stop.set()
            thread.join(30)
        assert code == 4429 == p.Close.NOT_READING
        assert waiting <= limits.max_unread                 # all the server ever held for it
        # closed within a second's worth of dropped frames
        assert 0 < service.frames_dropped <= limits.drop_budget
        assert served == list(range(1, len(served) + 1))
        other.close()
    wait_for(lambda: service.sessions == 0)


def test_a_client_that_reads_answers_while_pipelining_under_the_cap_never_loses_a_frame():
    """Two frames in flight, each new one carrying the receipt of the last answer read (the cap
    raised out of the way: pipelined frames over it are dropped, see the gate's test)."""
    service = stub_service(limits=p.Limits(max_fps=10000))
    with running(service) as url:
        ws = session(url, avatar=AVATAR)
        ws.send(frame_message(1, CROP))
        receipt = None
        for seq in range(2, 61):
            ws.send(frame_message(seq, CROP, receipt=receipt))
            header, _ = result(ws)
            assert header["seq"] == seq - 1
            receipt = header["receipt"]
        assert result(ws)[0]["seq"] == 60
        assert service.frames_dropped == 0
        ws.close()


def test_our_client_never_has_a_frame_dropped(avatar_face):
    service = stub_service()
    with running(service) as url:
        link = ServerLink(RemoteServer.parse(url, TOKEN, frame_format="jpeg"), avatar_face, AnimationSettings())
        link.connect()
        try:
            answers = [link.animate(driving_face(), k / 30, link._settings) for k in range(300)]
        finally:
            link.close()
    assert all(a is not None and a.rendered for a in answers[1:])
    assert service.frames_dropped == 0 and link.connects == 1


def driving_face() -> DrivingFace:
    return DrivingFace(network_input=CROP, landmarks=np.zeros((0, 2), np.float32), transform=_NO_TRANSFORM,
                       eye_ratios=np.array([[0.3, 0.3]], np.float32), lip_ratio=np.array([[0.1]], np.float32))


# -- 5. fairness --------------------------------------------------------------------------------
def frame_rate(link: ServerLink, frames: int) -> float:
    s = link._settings
    t0 = time.perf_counter()
    for k in range(frames):
        assert link.animate(driving_face(), k / 30, s) is not None
    return frames / (time.perf_counter() - t0)


class OneDevice(StubBackend):
    """The stub with a render that takes 8 ms of one shared device (a lock): sessions compete for
    it as for a GPU, so frames rendered for a flood are frames not rendered for anyone else."""

    device_lock = threading.Lock()

    def render(self, feature, x_s, x_d):
        with self.device_lock:
            time.sleep(0.008)
            return super().render(feature, x_s, x_d)


def test_a_flooding_session_leaves_a_legitimate_one_most_of_its_frame_rate(avatar_face):
    """Two flooding sessions, one that never reads and one that reads but pipelines as fast as it
    can, each in a process of its own: our client's frame rate meanwhile stays within half of its
    rate alone (before the fix both took 120 renders/s of the device)."""
    service = RenderService(OneDevice(), token=TOKEN)
    with running(service) as url:
        link = ServerLink(RemoteServer.parse(url, TOKEN, frame_format="jpeg"), avatar_face, AnimationSettings())
        link.connect()
        try:
            frame_rate(link, 20)                              # warm up
            alone = frame_rate(link, 100)
            spawn = multiprocessing.get_context("spawn")
            stop = spawn.Event()
            flooders = [spawn.Process(target=flood, args=(url, reading, stop), daemon=True)
                        for reading in (False, True)]
            for f in flooders:
                f.start()
            try:
                wait_for(lambda: service.sessions_served == 3, timeout=60)   # both connected (a process
                flooded = frame_rate(link, 100)                                # starts in seconds)
            finally:
                stop.set()
                for f in flooders:
                    f.join(30)
                    if f.is_alive():
                        f.kill()
        finally:
            link.close()
    assert flooded >= 0.5 * alone, (flooded, alone)
    assert link.connects == 1


# -- 6. JPEGs that take long to decode ----------------------------------------------------------
def progressive_jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    return data.tobytes()


def with_extra_scans(jpeg: bytes, copies: int) -> bytes:
    """The JPEG with its last scan (a refinement: its start-of-scan segment and entropy-coded
    data, up to the end-of-image marker) repeated ``copies`` more times: still decodable."""
    last = jpeg.rindex(b"\xff\xda")
    assert jpeg.endswith(b"\xff\xd9")
    scan = jpeg[last:-2]
    return jpeg[:-2] + scan * copies + b"\xff\xd9"


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding_and_a_normal_one_decodes():
    img = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, p.DRIVING_SHAPE, np.uint8), (5, 5), 0)
    normal = progressive_jpeg(img)
    assert p.decode_image(normal, "jpeg", p.DRIVING_SHAPE).shape == p.DRIVING_SHAPE
    hostile = with_extra_scans(normal, 300)
    assert cv2.imdecode(np.frombuffer(hostile, np.uint8), cv2.IMREAD_COLOR) is not None   # libjpeg would take it
    with pytest.raises(p.ProtocolError, match="scans"):
        p.decode_image(hostile, "jpeg", p.DRIVING_SHAPE)
    assert 1 < p.jpeg_scans(normal) <= p.MAX_JPEG_SCANS
    assert p.jpeg_scans(p.encode_image(img, "jpeg")) == 1                # baseline


def test_a_jpeg_frame_with_too_many_scans_closes_the_session():
    hostile = with_extra_scans(progressive_jpeg(np.full(p.DRIVING_SHAPE, 80, np.uint8)), 100)
    with running(stub_service()) as url:
        ws = session(url, fmt="jpeg", avatar=AVATAR)
        ws.send(p.pack({"type": "frame", "seq": 1, "t": 0.0, "face": True, "ratios": [0.3, 0.3, 0.1]}, hostile))
        assert close_code(ws) == p.Close.MALFORMED


# -- the version -----------------------------------------------------------------------------------
@pytest.mark.parametrize("old", [1, 2, 3])
def test_an_older_client_is_told_the_version_and_the_paths_stay(old: int):
    assert (p.VERSION, p.SESSION_PATH, p.HEALTH_PATH) == (4, "/v1/session", "/v1/health")
    with running(stub_service()) as url:
        ws = connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, legacy=True)
        ws.send(p.text({"type": "hello", "version": old, "format": "raw"}))
        assert close_code(ws) == p.Close.VERSION
