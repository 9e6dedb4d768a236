"""The proxy's protection (``app.remote.server.gatekeeper``) against uvicorn itself, without Ray: a
plain uvicorn server (httptools and h11) with the connection guard installed and the middleware in
front of a tiny app. Attackers connect from 127.0.0.2, so per-address limits never touch the
legitimate client on 127.0.0.1."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
import uvicorn
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from app.remote import protocol as p
from app.remote.server import gatekeeper as g

HEAD_TIMEOUT_S = 1.0
SETTINGS = g.GateSettings(head_timeout_s=HEAD_TIMEOUT_S, max_connections=12, max_connections_per_address=6,
                          health_rate=1.0, health_burst=3, drop_log_interval_s=60)
ATTACKER, OTHER = "127.0.0.2", "127.0.0.3"


async def tiny_app(scope: dict, receive, send) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": event.get("text") or ""})


class Server:
    def __init__(self, http: str, app) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, http=http, ws="websockets-sansio", log_level="warning",
                                                    lifespan="off", timeout_keep_alive=30))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])),
                                       daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def guard() -> Iterator[g.ConnectionGuard]:
    installed = g.install_connection_guard(SETTINGS)
    assert installed is not None
    yield installed
    g.uninstall_connection_guard()


@pytest.fixture(params=["httptools", "h11"])
def server(request, guard: g.ConnectionGuard) -> Iterator[Server]:
    guard.settings = SETTINGS
    guard.drops.totals.clear()
    with Server(request.param, g.GateMiddleware(tiny_app, SETTINGS, guard.drops)) as s:
        yield s
    deadline = time.monotonic() + 10          # every connection the test made is released
    while guard.open and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not guard.open and not guard.per_address


def dial(port: int, source: str = ATTACKER) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_within(s: socket.socket, timeout_s: float) -> bool:
    """Whether the server closes ``s`` (FIN or reset) within ``timeout_s``; what it sends is read away."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            if s.recv(4096) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def response(s: socket.socket) -> bytes:
    """One whole response on ``s`` (the tiny app's are chunked)."""
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk
    return data


def get(port: int, path: str = "/") -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_idle_connections_are_dropped_after_the_head_deadline(server: Server, guard: g.ConnectionGuard):
    t0 = time.monotonic()
    idle = [dial(server.port) for _ in range(3)]
    try:
        assert get(server.port) == 200                 # served meanwhile
        assert all(closed_within(s, HEAD_TIMEOUT_S + 5) for s in idle)
        assert time.monotonic() - t0 >= HEAD_TIMEOUT_S * 0.9
    finally:
        for s in idle:
            s.close()
    assert guard.drops.totals[f"connections without a complete request head within {HEAD_TIMEOUT_S:g} s"] == 3


def test_a_slowloris_is_dropped_at_the_head_deadline(server: Server):
    with dial(server.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        dropped = False
        for i in range(40):                            # a header every 0.2 s: 8 s if never dropped
            try:
                s.sendall(b"X-Slow-%d: 1\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            if closed_within(s, 0.2):
                dropped = True
                break
        assert dropped and time.monotonic() - t0 < HEAD_TIMEOUT_S + 3


def test_a_keep_alive_connection_must_send_its_next_head_in_time(server: Server):
    with dial(server.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        assert response(s).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET / HTTP/1.1\r\n")                # and then nothing more
        assert closed_within(s, HEAD_TIMEOUT_S + 5)


def test_connections_over_the_caps_are_closed_at_once(server: Server, guard: g.ConnectionGuard):
    held = [dial(server.port) for _ in range(SETTINGS.max_connections_per_address)]
    try:
        with dial(server.port) as extra:               # one more from the same address
            assert closed_within(extra, HEAD_TIMEOUT_S / 2)
        held += [dial(server.port, OTHER) for _ in range(SETTINGS.max_connections - len(held))]
        deadline = time.monotonic() + 5
        while len(guard.open) < SETTINGS.max_connections:
            assert time.monotonic() < deadline, len(guard.open)
            time.sleep(0.02)
        with dial(server.port, "127.0.0.4") as extra:  # a new address, but the proxy is full
            assert closed_within(extra, HEAD_TIMEOUT_S / 2)
    finally:
        for s in held:
            s.close()
    assert guard.drops.totals[f"connections over the cap of {SETTINGS.max_connections_per_address} per address"] == 1
    assert guard.drops.totals[f"connections over the proxy's cap of {SETTINGS.max_connections}"] == 1


def test_requests_and_a_websocket_session_are_unaffected(server: Server):
    with dial(server.port, "127.0.0.1") as s:           # keep-alive: three requests, idle gaps within the deadline
        s.settimeout(10)
        for _ in range(3):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert response(s).startswith(b"HTTP/1.1 200")
            time.sleep(HEAD_TIMEOUT_S / 2)
    with connect(f"ws://127.0.0.1:{server.port}/any", open_timeout=10) as ws:
        for i in range(2):
            time.sleep(HEAD_TIMEOUT_S * 1.5)            # a quiet session outlives the head deadline
            ws.send(f"m{i}")
            assert ws.recv(timeout=10) == f"m{i}"


def test_health_is_rate_limited_per_address_in_the_proxy(server: Server, guard: g.ConnectionGuard):
    codes = [get(server.port, p.HEALTH_PATH) for _ in range(int(SETTINGS.health_burst) + 3)]
    assert codes[: int(SETTINGS.health_burst)] == [200] * int(SETTINGS.health_burst)
    assert 429 in codes[int(SETTINGS.health_burst):]
    assert get(server.port, "/other") == 200           # only health is limited
    assert guard.drops.totals["health requests over the rate limit (429)"] >= 1


def test_a_websocket_without_the_token_is_refused_in_the_proxy(guard: g.ConnectionGuard):
    token = "the-right-token-0123"
    settings = dataclasses.replace(SETTINGS, token=token)
    with Server("httptools", g.GateMiddleware(tiny_app, settings, guard.drops)) as s:
        url = f"ws://127.0.0.1:{s.port}{p.SESSION_PATH}"
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456"}, {"Authorization": token}):
            with pytest.raises(InvalidStatus) as refused:
                connect(url, additional_headers=headers, open_timeout=10)
            assert refused.value.response.status_code == 403
        with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10) as ws:
            ws.send("hi")
            assert ws.recv(timeout=10) == "hi"


def test_token_buckets_refill_at_their_rate():
    now = [0.0]
    buckets = g.TokenBuckets(rate=2.0, burst=2, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [True, True, False]
    assert buckets.take("b")                            # per key
    now[0] = 0.5
    assert buckets.take("a") and not buckets.take("a")


def test_drops_are_logged_as_one_line_per_reason_and_interval(caplog: pytest.LogCaptureFixture):
    drops = g.DropLog(interval_s=10)
    with caplog.at_level(logging.WARNING, logger=g.log.name):
        for i in range(500):
            drops.count("idle connections", ATTACKER if i % 5 else OTHER)
        drops.count("health requests", ATTACKER)
        drops.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "500 idle connections" in lines[0] and f"{ATTACKER}: 400" in lines[0] and f"{OTHER}: 100" in lines[0]


def test_the_guard_refuses_to_patch_an_untested_uvicorn(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture):
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    g.uninstall_connection_guard()
    monkeypatch.setattr(uvicorn, "__version__", "0.99.0")
    before = HttpToolsProtocol.connection_made
    with caplog.at_level(logging.WARNING, logger=g.log.name):
        assert g.install_connection_guard(SETTINGS) is None
    assert HttpToolsProtocol.connection_made is before
    assert "connection limits are OFF: uvicorn 0.99.0" in caplog.text


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AVATARCAM_HEAD_TIMEOUT_S", "2.5")
    monkeypatch.setenv("AVATARCAM_MAX_CONNECTIONS_PER_ADDRESS", "7")
    monkeypatch.setenv(g.TOKEN_ENV, "tok")
    monkeypatch.delenv("AVATARCAM_MAX_CONNECTIONS", raising=False)
    settings = g.GateSettings.from_env()
    assert (settings.head_timeout_s, settings.max_connections_per_address, settings.token) == (2.5, 7, "tok")
    assert settings.max_connections < __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[0]
    assert g.default_max_connections(1024) == 768 and g.default_max_connections(65536) == 57344
    monkeypatch.setenv("AVATARCAM_HEALTH_RATE", "fast")
    with pytest.raises(ValueError, match="AVATARCAM_HEALTH_RATE"):
        g.GateSettings.from_env()
