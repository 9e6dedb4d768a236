"""Protocol 4 without Ray: group photos (K crops up, K crops back per frame) and video avatars (the
clip's per-frame crops uploaded once in ``avatar_frames``, then a ``source`` per frame): the new
fields and each way they can be wrong, a session that refuses them, and the client (a group
finished like the local animator's, pixel for pixel; a video pasted into its own frame s(i) on
the client's clock)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from support.render_server import TOKEN, Frames, close_code, frame_message, result, running, send_avatar, session
from support.render_server import stub_service as _stub_service

from app.animation.animator import Animator
from app.avatar.framing import AvatarBox
from app.avatar.prepared import prepare_avatar
from app.avatar.video import avatar_video_from_crops, pingpong_index
from app.face import crop as fc
from app.face.driving import DrivingFace
from app.imaging.segmentation import EllipseSegmenter
from app.remote import protocol as p
from app.remote.client import FRAMES_PER_MESSAGE, RemoteAnimator, RemoteServer, _chunks, avatar_upload
from app.remote.server.service import RenderService
from app.settings import AnimationSettings, LiveSettings
from engines.backend import StubBackend

GREYS = (40, 90, 140, 190)
CROP = np.full(p.CROP_SHAPE, 120, np.uint8)
NO_TRANSFORM = fc.CropTransform(M_o2c=np.eye(3)[:2], M_c2o=np.eye(3)[:2], dsize=fc.DRIVING_CROP.dsize)


def stub_service(**kw) -> RenderService:
    return _stub_service(**kw)


def jpeg(image: np.ndarray) -> bytes:
    return p.encode_image(image, "jpeg", 90)


def face_fields(n: int) -> list[p.FaceFields]:
    return [p.FaceFields(AvatarBox(10.0 * i, 5, 100), np.array([[0.3, 0.25 + i / 100]]), np.array([[0.1]]))
            for i in range(n)]


def crops(n: int) -> list[np.ndarray]:
    return [np.full(p.CROP_SHAPE, 30 + 40 * i, np.uint8) for i in range(n)]


def group_message(n: int, **fields) -> tuple[dict, bytes]:
    payloads = [p.encode_image(c, "png") for c in crops(n)]
    header = p.group_avatar_header("png", "human", face_fields(n), [len(b) for b in payloads])
    return {**header, **fields}, b"".join(payloads)


def code_of(call) -> int:
    with pytest.raises(p.ProtocolError) as e:
        call()
    return e.value.code


# -- group photos on the wire -----------------------------------------------------------------------
def test_a_group_header_carries_each_face_and_its_crop_and_reads_back():
    header, payload = group_message(3)
    assert p.VERSION == 4 and len(header["faces"]) == 3 and header["sizes"][0] + header["sizes"][1] < len(payload)
    faces, images = p.avatar_crops(header, payload)
    assert [f.box for f in faces] == [f.box for f in face_fields(3)]
    assert [float(f.eye_ratios[1]) for f in faces] == pytest.approx([0.25, 0.26, 0.27])
    assert all(np.array_equal(a, b) for a, b in zip(images, crops(3), strict=True))
    # one face: the version-3 form stays the single face
    single = p.avatar_header("raw", "human", None, np.array([[0.3, 0.3]]), np.array([[0.1]]))
    faces, images = p.avatar_crops(single, CROP.tobytes())
    assert len(faces) == len(images) == 1 and faces[0].box is None


def _group_cases():
    header, payload = group_message(2)
    too_many, big = group_message(4)
    five = {**too_many, "faces": too_many["faces"] + too_many["faces"][:1],
            "sizes": too_many["sizes"] + too_many["sizes"][:1]}
    small = p.encode_image(np.zeros((256, 256, 3), np.uint8), "png")
    return {
        "no faces": ({**header, "faces": []}, payload),
        "five faces": (five, big + big[:too_many["sizes"][0]]),
        "faces not a list": ({**header, "faces": {"box": None}}, payload),
        "a face not an object": ({**header, "faces": [header["faces"][0], 3]}, payload),
        "a bad box": ({**header, "faces": [header["faces"][0], {**header["faces"][1], "box": [0, 0]}]}, payload),
        "one ratio without the other": ({**header, "faces": [{**header["faces"][0], "lip_ratio": None},
                                                             header["faces"][1]]}, payload),
        "sizes short of the payload": ({**header, "sizes": [header["sizes"][0], header["sizes"][1] - 1]}, payload),
        "a size per face": ({**header, "sizes": [len(payload)]}, payload),
        "sizes not numbers": ({**header, "sizes": ["1", "2"]}, payload),
        "a crop of another size": ({**header, "sizes": [header["sizes"][0], len(small)]},
                                   payload[:header["sizes"][0]] + small),
    }


@pytest.mark.parametrize("case", list(_group_cases()))
def test_a_malformed_group_is_a_protocol_error(case: str):
    header, payload = _group_cases()[case]
    assert code_of(lambda: p.avatar_crops(header, payload)) == p.Close.MALFORMED


def test_a_group_result_carries_k_crops_and_a_still_result_one():
    parts = [p.encode_image(c, "raw") for c in crops(3)]
    header = {"type": "result", "sizes": [len(b) for b in parts]}
    assert p.result_crops(header, b"".join(parts), "raw", 3).shape == (3, *p.CROP_SHAPE)
    assert p.result_crops({"type": "result"}, parts[0], "raw", 1).shape == p.CROP_SHAPE
    assert code_of(lambda: p.result_crops(header, b"".join(parts), "raw", 2)) == p.Close.MALFORMED


# -- video avatars on the wire -----------------------------------------------------------------------
def video_header(frames: int = 4, **fields) -> dict:
    eyes = np.tile([[0.3, 0.32]], (frames, 1))
    lips = np.linspace(0.0, 0.2, frames).reshape(frames, 1)
    return {**p.video_avatar_header("human", None, 25.0, frames, eyes, lips), **fields}


def test_a_video_header_carries_fps_frames_and_per_frame_ratios():
    video = p.video_fields(video_header())
    assert video is not None and (video.fps, video.frames) == (25.0, 4)
    assert video.eye_ratios.shape == (4, 2) and video.lip_ratios[:, 0] == pytest.approx([0, 0.2 / 3, 0.4 / 3, 0.2])
    bare = p.video_fields(p.video_avatar_header("animal", None, 30, 2, None, None))
    assert bare is not None and bare.eye_ratios is None and bare.lip_ratios is None
    assert p.video_fields(p.avatar_header("png", "human", None, None, None)) is None       # a still
    # 600 frames of ratios fit the avatar header's allowance, not a frame's
    big = video_header(p.MAX_VIDEO_FRAMES)
    assert p.unpack(p.pack(big))[0]["video"]["frames"] == p.MAX_VIDEO_FRAMES
    assert code_of(lambda: p.unpack(p.pack({"type": "frame", "pad": "x" * 5000}))) == p.Close.MALFORMED


@pytest.mark.parametrize("fields", [
    {"video": {"fps": 0.5, "frames": 4}}, {"video": {"fps": 121, "frames": 4}}, {"video": {"fps": 1e400, "frames": 4}},
    {"video": {"fps": 25, "frames": 0}}, {"video": {"fps": 25, "frames": 601}}, {"video": {"fps": 25, "frames": 2.5}},
    {"video": {"fps": 25}}, {"video": [25, 4]}, {"ratios": [[0.3, 0.3, 0.1]] * 3}, {"ratios": [[0.3, 0.3]] * 4},
    {"ratios": [[0.3, 0.3, 7.0]] * 4}, {"ratios": "none"}, {"faces": [{"box": None}]},
])
def test_a_malformed_video_header_is_a_protocol_error(fields: dict):
    header = json.loads(json.dumps(video_header(**fields)))        # as it arrives: 1e400 reads as inf
    assert code_of(lambda: p.video_fields(header)) == p.Close.MALFORMED


def test_avatar_frames_come_in_order_each_a_512_crop():
    frames = [jpeg(c) for c in crops(3)]
    header = p.avatar_frames_header(1, [len(f) for f in frames[1:]])
    assert p.avatar_frames(header, b"".join(frames[1:]), 1, 3) == frames[1:]
    small = jpeg(np.zeros((256, 256, 3), np.uint8))
    bad = {
        "out of order": (header, b"".join(frames[1:]), 0, 3),
        "beyond the clip": (header, b"".join(frames[1:]), 1, 2),
        "sizes short": ({**header, "sizes": [len(frames[1])]}, b"".join(frames[1:]), 1, 3),
        "a smaller crop": (p.avatar_frames_header(0, [len(small)]), small, 0, 3),
        "not a jpeg": (p.avatar_frames_header(0, [4]), b"\x89PNG", 0, 3),
    }
    for name, args in bad.items():
        assert code_of(lambda args=args: p.avatar_frames(*args)) == p.Close.MALFORMED, name


def test_a_frame_names_its_source_for_a_video_and_never_for_a_still():
    assert p.frame_source({"type": "frame", "source": 3}, 4) == 3
    assert p.frame_source({"type": "frame"}, None) is None
    for header, frames in (({"type": "frame"}, 4), ({"type": "frame", "source": 4}, 4),
                           ({"type": "frame", "source": -1}, 4), ({"type": "frame", "source": 1.0}, 4),
                           ({"type": "frame", "source": 0}, None)):
        assert code_of(lambda h=header, n=frames: p.frame_source(h, n)) == p.Close.MALFORMED


def test_the_client_cuts_a_clip_into_messages_under_the_limit():
    frames = tuple(bytes(300) for _ in range(250))
    runs = _chunks(frames, 1000)
    assert [start for start, _ in runs] == list(range(0, 250, 3)) and sum(len(r) for _, r in runs) == 250
    assert all(sum(map(len, run)) <= 1000 for _, run in runs)
    assert max(len(r) for _, r in _chunks(frames, 10**9)) == FRAMES_PER_MESSAGE


# -- sessions -------------------------------------------------------------------------------------
def send_video(ws, frames: list[bytes], per_message: int = 2, **fields) -> dict | None:
    ws.send(p.pack(video_header(len(frames), **fields)))
    for start in range(0, len(frames), per_message):
        chunk = frames[start:start + per_message]
        ws.send(p.pack(p.avatar_frames_header(start, [len(f) for f in chunk]), b"".join(chunk)))
    return json.loads(ws.recv(timeout=10))


def test_a_group_session_gets_k_crops_back_per_frame():
    with running(stub_service()) as url:
        ws = session(url)
        header, payload = group_message(3)
        ws.send(p.pack(header, payload))
        ready = json.loads(ws.recv(timeout=10))
        assert ready["type"] == "avatar_ready" and ready["faces"] == 3
        ws.send(frame_message(1, np.full(p.DRIVING_SHAPE, 90, np.uint8)))
        reply, body = result(ws)
        assert reply["rendered"] and len(reply["sizes"]) == 3
        got = p.result_crops(reply, body, "raw", 3)
        # the stub renders each face's own appearance: its crop, in the faces' order
        assert [int(round(c.mean())) for c in got] == [30, 70, 110]
        ws.close()


def test_a_video_session_renders_the_named_source_frame():
    frames = [jpeg(np.full(p.CROP_SHAPE, g, np.uint8)) for g in GREYS]
    with running(stub_service()) as url:
        ws = session(url)
        ready = send_video(ws, frames)
        assert ready["type"] == "avatar_ready" and ready["frames"] == 4
        frames_sent = Frames(ws)
        for source in (2, 0, 3):
            frames_sent.seq += 1
            header = p.unpack(frame_message(frames_sent.seq, frames_sent.crop, receipt=frames_sent.receipt))[0]
            ws.send(p.pack({**header, "source": source}, p.encode_image(frames_sent.crop, "raw")))
            reply, body = result(ws)
            frames_sent.receipt = reply["receipt"]
            assert abs(p.decode_image(body, "raw", p.CROP_SHAPE).mean() - GREYS[source]) < 2
        ws.send(frame_message(frames_sent.seq + 1, frames_sent.crop, receipt=frames_sent.receipt))   # no source
        assert close_code(ws) == p.Close.MALFORMED


@pytest.mark.parametrize("problem", ["source for a still", "frame during the upload", "frames without a header",
                                     "over the video limit", "a payload with the header"])
def test_a_session_refuses_video_messages_out_of_place(problem: str):
    frames = [jpeg(np.full(p.CROP_SHAPE, g, np.uint8)) for g in GREYS]
    limits = p.Limits(max_video_bytes=sum(len(f) for f in frames) - 1) if problem == "over the video limit" else None
    with running(stub_service(limits=limits)) as url:
        ws = session(url)
        if problem == "source for a still":
            send_avatar(ws, CROP)
            header, payload = p.unpack(frame_message(1, np.full(p.DRIVING_SHAPE, 90, np.uint8)))
            ws.send(p.pack({**header, "source": 0}, payload))
            expected = p.Close.MALFORMED
        elif problem == "frame during the upload":
            ws.send(p.pack(video_header(4)))
            ws.send(p.pack(p.avatar_frames_header(0, [len(frames[0])]), frames[0]))
            ws.send(frame_message(1, np.full(p.DRIVING_SHAPE, 90, np.uint8)))
            expected = p.Close.MALFORMED
        elif problem == "frames without a header":
            ws.send(p.pack(p.avatar_frames_header(0, [len(frames[0])]), frames[0]))
            expected = p.Close.MALFORMED
        elif problem == "a payload with the header":
            ws.send(p.pack(video_header(4), frames[0]))
            expected = p.Close.MALFORMED
        else:
            ws.send(p.pack(video_header(4)))
            ws.send(p.pack(p.avatar_frames_header(0, [len(f) for f in frames]), b"".join(frames)))
            expected = p.Close.TOO_BIG
        assert close_code(ws) == expected


# -- the client ------------------------------------------------------------------------------------
def driving(value: int) -> DrivingFace:
    crop = np.full(p.DRIVING_SHAPE, value, np.uint8)
    crop[96:160, 80 + value % 40:150] = 200                 # a moving blob: the stub's motion follows it
    return DrivingFace(network_input=crop, landmarks=np.zeros((0, 2), np.float32), transform=NO_TRANSFORM,
                       eye_ratios=np.array([[0.3, 0.3]], np.float32), lip_ratio=np.array([[0.05]], np.float32))


def test_a_group_through_the_server_equals_the_local_group_pixel_for_pixel(group_face):
    stream = [(driving(60 + 3 * i), i / 25) for i in range(8)] + [(None, 0.4), (driving(90), 0.45)]
    live = LiveSettings(AnimationSettings(reference_frames=2))
    backend = StubBackend()
    local = Animator(backend, live, prepare_avatar(group_face, backend), segmenter=EllipseSegmenter)
    expected = [local.process(f, t).image.copy() for f, t in stream]
    with running(stub_service()) as url:
        client = RemoteAnimator(RemoteServer.parse(url, TOKEN, frame_format="raw"),
                                LiveSettings(AnimationSettings(reference_frames=2)), group_face,
                                segmenter=EllipseSegmenter)
        client.connect()
        try:
            got = [client.process(f, t) for f, t in stream]
        finally:
            client.close()
    assert sum(g.rendered for g in got) >= 8
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.image.shape == b.shape == group_face.image.shape and np.array_equal(a.image, b), f"frame {i}"


@pytest.fixture(scope="module")
def group_face(examples):
    from support.group_photo import group_photo

    from app.avatar.face import prepare_avatar_face
    from app.face.tracker import MediaPipeFaceMesh

    mesh = MediaPipeFaceMesh()
    try:
        face = prepare_avatar_face(group_photo(examples, 2), mesh)
    finally:
        mesh.close()
    assert len(face.group) == 2
    return face


def test_a_video_through_the_server_is_pasted_into_its_own_frame_on_the_clients_clock():
    fps = 10.0
    clip = avatar_video_from_crops([np.full(p.CROP_SHAPE, g, np.uint8) for g in GREYS],
                                   np.full((4, 2), 0.3), np.full((4, 1), 0.05), fps)
    upload = avatar_upload(clip.face(0))
    assert upload.header["video"] == {"fps": fps, "frames": 4} and len(upload.frames) == 4
    times = [5.0 + i / fps for i in range(10)]
    faces = [driving(80 + i) if i not in (6, 7) else None for i in range(10)]
    with running(stub_service()) as url:
        client = RemoteAnimator(RemoteServer.parse(url, TOKEN, frame_format="raw"),
                                LiveSettings(AnimationSettings(reference_frames=2)), clip.face(0),
                                segmenter=EllipseSegmenter)
        client.connect()
        try:
            outs = [client.process(f, t) for f, t in zip(faces, times, strict=True)]
        finally:
            client.close()
    assert sum(o.rendered for o in outs) >= 6
    for i, out in enumerate(outs):
        s = pingpong_index(times[i] - times[0], fps, 4)
        # a cropped clip's frame is its crop: the stub renders that frame's appearance, pasted into it
        # (a wrong source frame would show another grey); a faceless frame shows the clip's frame
        assert out.image.shape == p.CROP_SHAPE
        assert abs(float(out.image.mean()) - GREYS[s]) < 2, (i, s, float(out.image.mean()))


# -- batching across sessions ---------------------------------------------------------------------
class PairBatcher:
    """``BatchedBackend``'s batching function for two sessions' frames: the first waits for the
    second, then both go through W+G as one batch (``render_batch``), as ``serve.batch`` collects
    them on a replica."""

    def __init__(self, backend, sessions: int = 2) -> None:
        import threading

        self.backend = backend
        self.sessions = sessions
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.pending: list = []
        self.images: list = []
        self.rows: list[int] = []

    def __call__(self, request):
        from app.remote.server.batching import render_batch

        with self.lock:
            index = len(self.pending)
            self.pending.append(request)
            last = len(self.pending) == self.sessions
        if last:
            self.rows = [int(r[0].shape[0]) for r in self.pending]
            self.images = render_batch(self.backend, self.pending)
            self.done.set()
        else:
            assert self.done.wait(120), "the other session's frame never came"
        return self.images[index]


class RowStub(StubBackend):
    """The stub with a render that shows each row's own motion (per-row brightness from its
    keypoints), so a batch cut at the wrong rows, or handed back in the wrong order, shows."""

    def render(self, feature, x_s, x_d):
        shift = (x_d - x_s).abs().mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return (feature * 0.5 + shift * 100).clamp(0, 1)


def test_two_sessions_one_a_group_of_three_batched_each_get_their_crops(examples):
    """A single face and a 3-face group in two sessions: their frames' W+G run as one batch of 4 rows,
    and each session gets back its own crops, equal to rendering it alone. (That a batch renders as
    its rows alone on the real networks: ``test_remote``'s batching test.)"""
    import threading

    import cv2

    from app.remote.server.batching import BatchedBackend
    from app.remote.server.session import RenderSession
    from app.remote.server.weight_sets import WeightSets

    portraits = [cv2.resize(cv2.imread(str(examples / f"s{i}.jpg")), p.CROP_SHAPE[:2], interpolation=cv2.INTER_AREA)
                 for i in range(3)]
    single = p.pack(p.avatar_header("raw", "human", None, np.array([[0.3, 0.3]]), np.array([[0.05]])),
                    portraits[0].tobytes())
    parts = [c.tobytes() for c in (portraits[2], portraits[1], portraits[0][:, ::-1].copy())]
    group = p.pack(p.group_avatar_header("raw", "human", face_fields(3), [len(b) for b in parts]), b"".join(parts))
    drive = np.ascontiguousarray(cv2.resize(portraits[1], p.DRIVING_SHAPE[:2], interpolation=cv2.INTER_AREA))
    frame = p.unpack(frame_message(1, drive))

    def run(session: RenderSession, avatar: bytes) -> np.ndarray:
        assert session.set_avatar(*p.unpack(avatar)) is not None
        header, body = p.unpack(session.frame(*frame))
        assert header["rendered"]
        return p.result_crops(header, body, "raw", session.faces)

    backend = RowStub()
    alone = [run(RenderSession(WeightSets.of(backend), "raw"), avatar) for avatar in (single, group)]
    batcher = PairBatcher(backend)
    shared = WeightSets.of(BatchedBackend(backend, batcher))
    sessions = [RenderSession(shared, "raw"), RenderSession(shared, "raw")]
    batched: list = [None, None]
    threads = [threading.Thread(target=lambda i=i, a=a: batched.__setitem__(i, run(sessions[i], a)))
               for i, a in enumerate((single, group))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(batcher.rows) == [1, 3]                   # one W+G call of 4 rows
    assert batched[0].shape == p.CROP_SHAPE and batched[1].shape == (3, *p.CROP_SHAPE)
    for a, b in zip(alone, batched, strict=True):
        assert np.array_equal(a, b)
    assert len({float(c.mean()) for c in batched[1]}) == 3        # each face its own crop, in its order
