"""``main.py serve`` at the connection level, on a real local Ray instance (stub engine): a health
flood without the token leaves sessions admissible and health answerable; idle connections are
dropped at the head deadline, with aggregated log lines; Ray listens on loopback only, keeps its
files in a private directory removed at stop and spills nothing; open sessions are closed with 1001
on SIGTERM and on Ctrl+C; and the server starts again on the same port at once. Attackers connect
from 127.0.0.2, so per-address limits never touch the legitimate client on 127.0.0.1."""
from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from app.remote import protocol as p
from app.remote.server.local_server import LocalServer, free_port, serve_command

pytestmark = pytest.mark.integration

TOKEN = "hardening-test-token-0123"
ATTACKER = "127.0.0.2"
HEAD_TIMEOUT_S = 2.0
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "AVATARCAM_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
       "AVATARCAM_MAX_CONNECTIONS_PER_ADDRESS": "256", "AVATARCAM_DROP_LOG_INTERVAL_S": "1"}


class Serve(LocalServer):
    def __init__(self, log_path: Path, runtime_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.runtime_dir = runtime_dir
        super().__init__(serve_command(self.port, "--backend", "stub", "--token", TOKEN),
                         f"http://127.0.0.1:{self.port}", log_path,
                         env={**ENV, "XDG_RUNTIME_DIR": str(runtime_dir)})

    @contextmanager
    def session(self, timeout_s: float = 30) -> Iterator[ClientConnection]:
        """A session through its handshake (hello, welcome)."""
        with connect(f"ws://127.0.0.1:{self.port}{p.SESSION_PATH}", open_timeout=timeout_s,
                     additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            ws.send(p.text({"type": "hello", "version": p.VERSION, "format": "raw"}))
            assert p.parse_text(ws.recv(timeout=timeout_s))["type"] == "welcome"
            yield ws


@pytest.fixture(scope="module")
def runtime_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="acx-", dir="/tmp"))     # short: Ray's unix sockets live below
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path) -> Iterator[Serve]:
    with Serve(tmp_path_factory.mktemp("hardening") / "console.log", runtime_dir) as s:
        yield s


def dial(port: int, source: str = ATTACKER) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def test_sessions_and_health_stay_available_under_a_health_flood(server: Serve):
    stop = threading.Event()
    answered = [0]

    async def attacker() -> None:
        request = f"GET {p.HEALTH_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

        async def one() -> None:
            while not stop.is_set():
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", server.port,
                                                                   local_addr=(ATTACKER, 0))
                    while not stop.is_set():                    # keep-alive, as fast as answered
                        writer.write(request)
                        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                        await reader.readexactly(length)
                        answered[0] += 1
                    writer.close()
                except (TimeoutError, OSError, asyncio.IncompleteReadError, IndexError, ValueError):
                    await asyncio.sleep(0.05)

        await asyncio.wait([asyncio.ensure_future(one()) for _ in range(400)], timeout=90)

    flood = threading.Thread(target=lambda: asyncio.run(attacker()), daemon=True)
    flood.start()
    try:
        deadline = time.monotonic() + 30
        while answered[0] < 100:                                 # the flood is on
            assert time.monotonic() < deadline, answered[0]
            time.sleep(0.1)
        t0 = time.monotonic()
        with server.session(timeout_s=10):
            handshake_s = time.monotonic() - t0
        t0 = time.monotonic()
        health = server.health()
        health_s = time.monotonic() - t0
    finally:
        stop.set()
        flood.join(60)
    assert handshake_s < 4.0, handshake_s
    assert health is not None and health["status"] == "ok" and health_s < 2.0, health_s
    deadline = time.monotonic() + 15                              # logged in aggregate, forwarded by Ray
    while "health requests over the rate limit (429)" not in server.log_tail(100_000):
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.2)


def test_idle_connections_are_dropped_and_logged_in_aggregate(server: Serve):
    idle = [dial(server.port) for _ in range(200)]
    try:
        t0 = time.monotonic()
        assert server.health() is not None                       # served meanwhile
        open_ = set(range(len(idle)))
        while open_ and time.monotonic() - t0 < HEAD_TIMEOUT_S + 20:
            for i in list(open_):
                idle[i].settimeout(0.01)
                try:
                    if idle[i].recv(1) == b"":
                        open_.discard(i)
                except (ConnectionResetError, BrokenPipeError):
                    open_.discard(i)
                except TimeoutError:
                    pass
            time.sleep(0.1)
        assert not open_, f"{len(open_)} of 200 idle connections still open"
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 10
    reason = f"connections without a complete request head within {HEAD_TIMEOUT_S:g} s"
    while not (lines := [line for line in server.log_tail(100_000).splitlines() if reason in line]):
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.2)
    assert len(lines) < 20 and ATTACKER in lines[0]             # aggregated, not a line per connection


def listening_addresses(session: int) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket of the processes in ``session`` (Linux /proc)."""
    inodes: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) != session:
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = int(proc.name)
        except (OSError, ValueError, IndexError):
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:        # 0A: LISTEN
                continue
            address_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(address_hex)
            # /proc/net writes each 32-bit word in host (little-endian) order
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((str(ipaddress.ip_address(packed)), int(port_hex, 16), inodes[fields[9]]))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def test_ray_listens_on_loopback_only_and_keeps_its_files_private(server: Serve):
    listening = listening_addresses(server.process.pid)
    assert any(port == server.port for _, port, _ in listening), listening
    assert len(listening) > 3, listening                          # Ray's own processes are seen too
    assert [entry for entry in listening if not is_loopback(entry[0])] == []
    [private] = list(server.runtime_dir.iterdir())
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    raylet_logs = list(private.rglob("raylet.out"))
    assert raylet_logs and "Object spilling is disabled" in raylet_logs[0].read_text(errors="replace")
    assert (private / "ray_token").is_file()                      # Ray's token: ours, private, not ~/.ray


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_open_sessions_get_1001_when_the_server_stops_and_it_restarts_on_its_port(
        sig: signal.Signals, tmp_path: Path, runtime_dir: Path, server: Serve):
    if sig == signal.SIGTERM:
        first = server                                            # the module's server ends here
    else:
        first = Serve(tmp_path / "first.log", runtime_dir).start()
    private = list(runtime_dir.iterdir())
    try:
        with first.session() as ws, pytest.raises(ConnectionClosed) as closed:
            first.process.send_signal(sig)
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None, "no close frame"
        assert closed.value.rcvd.code == p.Close.GOING_AWAY, closed.value.rcvd
        first.process.wait(30)
    finally:
        first.stop()
    assert "Traceback" not in first.log_tail(100_000)
    assert private and not any(path.exists() for path in private)     # Ray's files went with it
    # at once on the same port: the stopped server's connections in TIME_WAIT do not block it
    again = Serve(tmp_path / "again.log", runtime_dir, port=first.port)
    with again:
        assert again.health()["status"] == "ok"
