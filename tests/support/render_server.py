"""A real render server for tests, without Ray: ``app.remote.server.service.RenderService`` (by default on
the stub backend) behind a plain FastAPI app served by uvicorn on 127.0.0.1 in a background thread
(imported as ``render_server``: tests/ is on sys.path). The Serve deployment itself is tested in
test_remote_serve.py. Also the helpers of tests that speak the protocol by hand (``session``,
``avatar_message``, ``send_avatar``, ``frame_message``, ``Frames``, ``result``, ``close_code``)."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, WebSocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from app.remote import protocol as p
from app.remote.server.local_server import free_port
from app.remote.server.service import RenderService
from engines.backend import StubBackend

TOKEN = "correct-horse-battery-staple"


class RenderServer:
    """One server on ``port`` (default: a free one); ``url`` is what ``--remote`` takes. ``stop``
    ends it (sessions closed, the port refused from then on) within a few seconds."""

    def __init__(self, token: str | None = None, *, service: RenderService | None = None,
                 port: int | None = None) -> None:
        self.service = service or RenderService(StubBackend(), token=token)
        api = FastAPI()

        @api.get(p.HEALTH_PATH)
        async def health() -> dict:
            return self.service.health()

        @api.websocket(p.SESSION_PATH)
        async def session(ws: WebSocket) -> None:
            await self.service.serve(ws)

        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=self.port, log_level="warning",
                                                     ws="websockets-sansio", timeout_graceful_shutdown=1))
        self._thread = threading.Thread(target=self._server.run, name="test-render-server", daemon=True)

    def start(self, timeout_s: float = 20.0) -> RenderServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"test render server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self.service.shutdown()


@contextmanager
def render_server(token: str | None = None) -> Iterator[RenderServer]:
    server = RenderServer(token).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running(service: RenderService, port: int | None = None) -> Iterator[str]:
    """Serve ``service`` until the block ends; yields the ws:// URL of its session path."""
    server = RenderServer(service=service, port=port).start()
    try:
        yield server.url + p.SESSION_PATH
    finally:
        server.stop()


# -- speaking the protocol by hand -------------------------------------------------------------
def stub_service(**kw: Any) -> RenderService:
    kw.setdefault("token", TOKEN)
    return RenderService(StubBackend(), **kw)


def session(url: str, token: str = TOKEN, fmt: str = "raw", avatar: np.ndarray | None = None,
            kind: str = "human", **kw: Any) -> ClientConnection:
    """A raw client session past hello (and avatar of ``kind``, when given)."""
    ws = connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None, legacy=True, **kw)
    ws.send(p.text({"type": "hello", "version": p.VERSION, "format": fmt}))
    assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
    if avatar is not None:
        send_avatar(ws, avatar, kind)
    return ws


def avatar_message(avatar: np.ndarray, kind: str = "human", **fields: Any) -> bytes:
    """An ``avatar`` message with a raw crop: a human's ratios, an animal's null ones (no landmarks);
    ``fields`` replace the header's."""
    ratios: dict[str, Any] = ({"eye_ratios": [0.3, 0.3], "lip_ratio": [0.0]} if kind == "human"
                              else {"eye_ratios": None, "lip_ratio": None})
    header = {"type": "avatar", "format": "raw", "kind": kind, "box": None, **ratios, **fields}
    return p.pack(header, avatar.tobytes())


def send_avatar(ws: ClientConnection, avatar: np.ndarray, kind: str = "human", timeout: float = 10,
                **fields: Any) -> dict[str, Any]:
    """Upload an avatar and return its ``avatar_ready``."""
    ws.send(avatar_message(avatar, kind, **fields))
    ready = json.loads(ws.recv(timeout=timeout))
    assert ready["type"] == "avatar_ready", ready
    return ready


def frame_message(seq: int, crop: np.ndarray, t: float | None = None, fmt: str = "raw",
                  receipt: str | None = None) -> bytes:
    """A frame with a face; ``receipt``: that of the last result read (None on the first frame)."""
    header: dict[str, Any] = {"type": "frame", "seq": seq, "t": seq / 25 if t is None else t, "face": True,
                              "ratios": [0.3, 0.3, 0.1]}
    if receipt is not None:
        header["receipt"] = receipt
    return p.pack(header, p.encode_image(crop, fmt))


class Frames:
    """A hand-spoken session's frames, as our client sends them: numbered on, each sent after the
    last one's answer and carrying its receipt."""

    def __init__(self, ws: ClientConnection, crop: np.ndarray | None = None, timeout: float = 10) -> None:
        self.ws = ws
        self.crop = np.full(p.DRIVING_SHAPE, 90, np.uint8) if crop is None else crop
        self.timeout = timeout
        self.seq = 0
        self.receipt: str | None = None

    def send(self, count: int = 1) -> list[dict[str, Any]]:
        """``count`` frames; their results' headers."""
        headers = []
        for _ in range(count):
            self.seq += 1
            self.ws.send(frame_message(self.seq, self.crop, receipt=self.receipt))
            header, _ = result(self.ws, self.timeout)
            assert header["seq"] == self.seq, header
            self.receipt = header["receipt"]
            headers.append(header)
        return headers


def result(ws: ClientConnection, timeout: float = 10) -> tuple[dict[str, Any], bytes]:
    """The next message, a ``result``: (header, image bytes)."""
    header, body = p.unpack(ws.recv(timeout=timeout))
    assert header["type"] == "result", header
    return header, body


def close_code(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as e:
        for _ in range(5):
            ws.recv(timeout=5)
    assert e.value.rcvd is not None
    return e.value.rcvd.code


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def flood(url: str, reading: bool, stop: Any, token: str = TOKEN) -> None:
    """A hostile client: one session sending frames as fast as the socket takes them, until the
    server ends it or ``stop`` (an ``Event``) is set. ``reading``: a second thread reads the
    answers and each frame carries the latest receipt (a client that reads but sends faster than
    it is answered); otherwise nothing is ever read. Run in a process of its own in the tests, so
    that its work does not compete with the server for the test process's GIL."""
    message: dict[str, Any] = {"type": "frame", "seq": 1, "t": 0.0, "face": True, "ratios": [0.3, 0.3, 0.1]}
    image = p.encode_image(np.full(p.DRIVING_SHAPE, 90, np.uint8), "jpeg")    # small: cheap to send
    ws = session(url, token, fmt="jpeg", avatar=np.full(p.CROP_SHAPE, 120, np.uint8))
    latest: list[str] = []
    reader = threading.Thread(target=_read_receipts, args=(ws, latest), daemon=True) if reading else None
    if reader is not None:
        reader.start()
    try:
        while not stop.is_set():
            ws.send(p.pack(dict(message, receipt=latest[-1]) if latest else message, image))
    except ConnectionClosed:
        pass
    finally:
        ws.close()
        if reader is not None:
            reader.join(10)


def _read_receipts(ws: ClientConnection, into: list[str]) -> None:
    try:
        while True:
            into.append(p.unpack(ws.recv(timeout=10))[0]["receipt"])
    except (ConnectionClosed, TimeoutError):
        pass
