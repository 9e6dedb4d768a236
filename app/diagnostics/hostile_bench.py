"""The hostile-client matrix: ``python main.py serve --backend stub`` in a child process on
127.0.0.1, attacked case by case the way the security review did, with one legitimate client
checked after each case. Per case it prints what was sent, what the attacker got (HTTP status or
WebSocket close code), whether the next legitimate client was served (its handshake time and a
rendered frame) and the server's memory (resident memory of its whole process group: driver, Ray
processes, proxy, replica) before and after.

    python -m app.diagnostics.hostile_bench                  # every case
    python -m app.diagnostics.hostile_bench --case health_flood --case never_reads

Attackers that must not share the legitimate client's address limits connect from 127.0.0.2
(Linux answers the whole of 127.0.0.0/8 on loopback). Progress goes to the log; the table goes to
stdout at the end (and to ``--json``). The README's security section shows its output."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from ..remote import protocol as p
from ..remote.server.local_server import LocalServer, free_port, serve_command

log = logging.getLogger("app.diagnostics.hostile_bench")

TOKEN = "hostile-matrix-token-0123456789"
ATTACKER = "127.0.0.2"              # attackers' source address; the legitimate client uses 127.0.0.1
IDLE_TIMEOUT_S = 3.0                # the server's --idle-timeout for this run: the idle cases end soon
SERVER_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Row:
    case: str
    sent: str
    answer: str
    next_client: str
    memory_mb: str
    seconds: float


# -- the server and its memory -------------------------------------------------------------------
def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in process group ``pgid`` (the server started its own)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) != pgid:                   # field 5 of stat: the process group
                continue
            total += int((entry / "statm").read_text().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):        # a process that ended meanwhile
            continue
    return total / 2**20


class Target:
    """The server under attack: ``url`` (ws://), ``http`` (http://), its port and process group."""

    def __init__(self, workdir: Path, options: list[str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = LocalServer(serve_command(self.port, "--backend", "stub", "--token", TOKEN, *options),
                                  f"http://127.0.0.1:{self.port}", workdir / f"server-{self.port}.log",
                                  env=SERVER_ENV, ready_timeout_s=180.0)
        self.url = f"ws://127.0.0.1:{self.port}{p.SESSION_PATH}"

    def start(self) -> Target:
        self.server.start()
        log.info("server ready in %.1f s on port %d", self.server.ready_s, self.port)
        return self

    def memory_mb(self) -> float:
        assert self.server.process is not None
        return group_rss_mb(self.server.process.pid)


# -- clients -------------------------------------------------------------------------------------
def _socket_from(source: str, port: int, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def open_session(target: Target, *, token: str | None = TOKEN, source: str = "127.0.0.1",
                 headers: dict[str, str] | None = None, url: str | None = None,
                 timeout: float = 10.0, frame_format: str = "jpeg") -> ClientConnection:
    """A WebSocket to the session path past ``hello``/``welcome``."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    sock = _socket_from(source, target.port, timeout)
    ws = connect(url or target.url, sock=sock, additional_headers=all_headers, max_size=None,
                 open_timeout=timeout, ping_interval=None, legacy=True)
    ws.send(p.text({"type": "hello", "version": p.VERSION, "format": frame_format}))
    welcome = json.loads(ws.recv(timeout=timeout))
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"expected welcome, got {welcome!r}")
    return ws


AVATAR = np.full(p.CROP_SHAPE, 128, np.uint8)
DRIVING = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, p.DRIVING_SHAPE, np.uint8), (9, 9), 3)
DRIVING_JPEG = p.encode_image(DRIVING, "jpeg")


def send_avatar(ws: ClientConnection, timeout: float = 30.0) -> None:
    header = p.avatar_header("png", "human", None, np.array([0.3, 0.3]), np.array([0.0]))
    ws.send(p.pack(header, p.encode_image(AVATAR, "png")))
    ready = json.loads(ws.recv(timeout=timeout))
    if ready.get("type") != "avatar_ready":
        raise RuntimeError(f"expected avatar_ready, got {ready!r}")


class FrameSender:
    """Frames of one session, each echoing the receipt of the last result read (protocol 2)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seq = 0
        self.receipt: str | None = None

    def message(self, t: float | None = None, payload: bytes = DRIVING_JPEG, **extra: Any) -> bytes:
        self.seq += 1
        header: dict[str, Any] = {"type": "frame", "seq": self.seq, "t": self.seq / 30 if t is None else t,
                                  "face": True, "ratios": [0.3, 0.3, 0.1], **extra}
        if self.receipt is not None:
            header["receipt"] = self.receipt
        return p.pack(header, payload)

    def read(self, timeout: float = 30.0) -> dict[str, Any]:
        reply = self.ws.recv(timeout=timeout)
        header, _ = p.unpack(reply if isinstance(reply, bytes) else reply.encode())
        if isinstance(header.get("receipt"), str):
            self.receipt = header["receipt"]
        return header

    def round_trip(self, t: float | None = None) -> dict[str, Any]:
        self.ws.send(self.message(t))
        return self.read()


def close_code(ws: ClientConnection, timeout: float = 15.0) -> str:
    """Read until the server closes: its close code, or what happened instead."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.1, deadline - time.monotonic()))
    except ConnectionClosed as e:
        return f"close {e.rcvd.code}" if e.rcvd is not None else "closed without a close frame (1006)"
    except TimeoutError:
        pass
    return f"still open after {timeout:g} s"


def legit_check(target: Target) -> str:
    """A legitimate client: handshake, avatar and three frames; its handshake time, or why not."""
    t0 = time.perf_counter()
    try:
        ws = open_session(target)
        handshake = time.perf_counter() - t0
        with contextlib.closing(ws):
            send_avatar(ws)
            frames = FrameSender(ws)
            rendered = sum(frames.round_trip().get("rendered") is True for _ in range(3))
    except (OSError, TimeoutError, ConnectionClosed, InvalidStatus, RuntimeError) as e:
        return f"NOT served ({type(e).__name__}: {str(e)[:60]})"
    return f"served: handshake {handshake:.2f} s, {rendered}/3 rendered"


def http_status(target: Target, path: str = p.HEALTH_PATH, source: str = "127.0.0.1",
                timeout: float = 10.0) -> tuple[str, float]:
    """One GET from ``source``: its status line (or the error) and seconds."""
    t0 = time.perf_counter()
    try:
        with contextlib.closing(_socket_from(source, target.port, timeout)) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
            return (head.split(" ", 1)[1] if " " in head else head or "no answer"), time.perf_counter() - t0
    except OSError as e:
        return f"{type(e).__name__}", time.perf_counter() - t0


def handshake_status(target: Target, **kw: Any) -> str:
    try:
        open_session(target, **kw).close()
    except InvalidStatus as e:
        return f"HTTP {e.response.status_code}"
    except (OSError, TimeoutError, ConnectionClosed, RuntimeError) as e:
        return f"{type(e).__name__}"
    return "ACCEPTED"


# -- the cases ---------------------------------------------------------------------------------
Case = Callable[[Target], tuple[str, str]]          # -> (what was sent, what the attacker got)


def case_no_token(t: Target) -> tuple[str, str]:
    return "session handshake without Authorization", handshake_status(t, token=None)


def case_wrong_token(t: Target) -> tuple[str, str]:
    return "Bearer with a wrong token of the same length", handshake_status(t, token="x" * len(TOKEN))


def case_token_short_long(t: Target) -> tuple[str, str]:
    short, long_ = handshake_status(t, token=TOKEN[:-1]), handshake_status(t, token=TOKEN + "x")
    return "the token one character short / long", f"{short} / {long_}"


def case_token_elsewhere(t: Target) -> tuple[str, str]:
    query = handshake_status(t, token=None, url=f"{t.url}?token={TOKEN}")
    header = handshake_status(t, token=None, headers={"X-Token": TOKEN, "Cookie": f"token={TOKEN}"})
    return "the token in the query / in other headers", f"{query} / {header}"


def case_huge_integer(t: Target) -> tuple[str, str]:
    ws = open_session(t)
    send_avatar(ws)
    frames = FrameSender(ws)
    ws.send(frames.message(t=10**400))                   # json.dumps writes it digit by digit
    return "a frame whose t is a 401-digit integer", close_code(ws)


def case_tiny_time_step(t: Target) -> tuple[str, str]:
    ws = open_session(t)
    with contextlib.closing(ws):
        send_avatar(ws)
        frames = FrameSender(ws)
        answers = [frames.round_trip(t=0.0), frames.round_trip(t=1e-300)]
        answers += [frames.round_trip(t=0.04 * k) for k in range(1, 11)]
        rendered = sum(a.get("rendered") is True for a in answers[2:])
        refused = ""
    if rendered == 0 and not answers[1].get("rendered"):
        refused = f" (t=1e-300: {answers[1].get('status')})"
    return "t = 0, then 1e-300, then 10 frames 40 ms apart", f"{rendered}/10 later frames rendered{refused}"


def case_calibrate_only(t: Target) -> tuple[str, str]:
    ws = open_session(t)
    send_avatar(ws)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 4 * IDLE_TIMEOUT_S:
            ws.send(p.text({"type": "calibrate"}))
            time.sleep(IDLE_TIMEOUT_S / 3)
    except ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd is not None else 1006
        return (f"`calibrate` every {IDLE_TIMEOUT_S / 3:g} s, no frame (idle timeout {IDLE_TIMEOUT_S:g} s)",
                f"close {code} after {time.monotonic() - t0:.1f} s")
    ws.close()
    return (f"`calibrate` every {IDLE_TIMEOUT_S / 3:g} s, no frame (idle timeout {IDLE_TIMEOUT_S:g} s)",
            f"still open after {4 * IDLE_TIMEOUT_S:g} s")


def case_never_reads(t: Target) -> tuple[str, str]:
    ws = open_session(t, frame_format="raw")            # 786 KB per answer: what piles up shows
    send_avatar(ws)
    frames = FrameSender(ws)
    raw = p.encode_image(DRIVING, "raw")
    sent, peak = 0, t.memory_mb()
    try:
        for _ in range(2000):
            ws.send(frames.message(payload=raw))
            sent += 1
            if sent % 200 == 0:
                peak = max(peak, t.memory_mb())
    except ConnectionClosed:
        pass
    time.sleep(2.0)
    peak = max(peak, t.memory_mb())
    return (f"2,000 raw frames, no reply read ({sent} sent before the close)",
            f"{close_code(ws)}; group memory peak {peak:.0f} MB")


def case_oversized(t: Target) -> tuple[str, str]:
    ws = open_session(t)
    ws.send(b"\xff" * (p.Limits().max_frame_bytes + 1))
    return "a binary message one byte over the frame limit", close_code(ws)


def many_scans_jpeg(scans: int) -> bytes:
    """A progressive JPEG of a flat 256 x 256 image whose smallest scan is repeated until it has
    ``scans`` scans (libjpeg decodes every one of them)."""
    ok, data = cv2.imencode(".jpg", np.full(p.DRIVING_SHAPE, 120, np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    raw = data.tobytes()
    starts = [i for i in range(len(raw) - 1) if raw[i:i + 2] == b"\xff\xda"]
    ends = [*starts[1:], len(raw) - 2]                   # a scan runs to the next one, the last to EOI
    start, end = min(zip(starts, ends, strict=True), key=lambda se: se[1] - se[0])
    return raw[:-2] + raw[start:end] * max(0, scans - len(starts)) + b"\xff\xd9"


def case_many_scans(t: Target) -> tuple[str, str]:
    ws = open_session(t)
    send_avatar(ws)
    frames = FrameSender(ws)
    payload = many_scans_jpeg(13000)
    scans = payload.count(b"\xff\xda")
    ws.send(frames.message(payload=payload))
    try:
        header = frames.read(timeout=15)
        answer = f"answered: rendered={header.get('rendered')} (status {header.get('status')})"
        ws.close()
    except ConnectionClosed as e:
        answer = f"close {e.rcvd.code}" if e.rcvd is not None else "closed (1006)"
    return f"a progressive JPEG frame with {scans:,} scans", answer


def case_oversized_integer_in_hello(t: Target) -> tuple[str, str]:
    sock = _socket_from("127.0.0.1", t.port)
    ws = connect(t.url, sock=sock, additional_headers={"Authorization": f"Bearer {TOKEN}"}, ping_interval=None,
                 legacy=True)
    ws.send('{"type":"hello","version":' + "9" * 500 + ',"format":"jpeg"}')
    return "a hello whose version is a 500-digit integer", close_code(ws)


async def _health_flood(port: int, connections: int, seconds: float, counts: dict[str, int]) -> None:
    request = b"GET " + p.HEALTH_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
        except OSError:
            counts["refused"] += 1
            return
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1].decode()
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                counts[status] = counts.get(status, 0) + 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            counts["dropped"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))


def case_health_flood(t: Target, connections: int = 400, seconds: float = 15.0) -> tuple[str, str]:
    counts: dict[str, int] = {"refused": 0, "dropped": 0}
    flood = threading.Thread(target=lambda: asyncio.run(_health_flood(t.port, connections, seconds, counts)))
    flood.start()
    time.sleep(seconds / 3)                              # the flood is at its height
    during = legit_check(t)
    health, health_s = http_status(t)
    flood.join()
    answered = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if v)
    return (f"{connections} keep-alive connections from {ATTACKER} asking {p.HEALTH_PATH} for {seconds:g} s",
            f"{answered}; meanwhile from 127.0.0.1: health {health} in {health_s:.2f} s, client {during}")


@contextlib.contextmanager
def _idle_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    """Up to ``count`` connections from the attacker's address (fewer when the server stops
    accepting), all closed when the block ends."""
    sockets = []
    try:
        for _ in range(count):
            try:
                sockets.append(_socket_from(ATTACKER, port, timeout=2.0))
            except OSError:
                break
        yield sockets
    finally:
        for s in sockets:
            s.close()


def _still_open(sockets: list[socket.socket]) -> int:
    alive = 0
    for s in sockets:
        s.setblocking(False)
        try:
            alive += s.recv(1) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def case_idle_connections(t: Target, count: int = 2000, wait_s: float = 20.0) -> tuple[str, str]:
    with _idle_sockets(t.port, count) as sockets:
        during = legit_check(t)
        time.sleep(wait_s)
        alive = _still_open(sockets)
    return (f"{count} TCP connections from {ATTACKER} that never send a byte",
            f"{len(sockets)} opened; {alive} still open after {wait_s:g} s; meanwhile client {during}")


def case_slowloris(t: Target, count: int = 200, wait_s: float = 20.0) -> tuple[str, str]:
    header = b"GET " + p.HEALTH_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096
    with _idle_sockets(t.port, count) as sockets:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < wait_s:
            for s in sockets:
                with contextlib.suppress(OSError):
                    s.send(header[i % len(header):i % len(header) + 1])
            i += 1
            time.sleep(1.0)
        alive = _still_open(sockets)
    return (f"{count} connections from {ATTACKER} sending their request head one byte a second",
            f"{alive} of {len(sockets)} still open after {wait_s:g} s")


def _frame_rate(target: Target, seconds: float) -> float:
    ws = open_session(target)
    with contextlib.closing(ws):
        send_avatar(ws)
        frames = FrameSender(ws)
        frames.round_trip()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            frames.round_trip()
            time.sleep(1 / 40)                           # a 40 fps camera
            n += 1
        return n / (time.perf_counter() - t0)


def case_flood_fairness(t: Target, floods: int = 1, seconds: float = 8.0) -> tuple[str, str]:
    alone = _frame_rate(t, seconds)
    stop = threading.Event()
    outcomes: list[str] = []

    def flood() -> None:
        try:
            ws = open_session(t, source=ATTACKER)
            send_avatar(ws)
            frames = FrameSender(ws)
            while not stop.is_set():
                ws.send(frames.message())
        except (ConnectionClosed, OSError) as e:
            outcomes.append(f"close {e.rcvd.code}" if isinstance(e, ConnectionClosed) and e.rcvd else type(e).__name__)

    threads = [threading.Thread(target=flood) for _ in range(floods)]
    for th in threads:
        th.start()
    time.sleep(1.0)
    shared = _frame_rate(t, seconds)
    stop.set()
    for th in threads:
        th.join(10)
    ended = ", ".join(outcomes) or "not closed"
    return (f"{floods} session(s) sending frames as fast as they can without reading",
            f"flooder: {ended}; a 40 fps client renders {alone:.0f} fps alone, {shared:.0f} fps meanwhile")


CASES: dict[str, Case] = {
    "no_token": case_no_token,
    "wrong_token": case_wrong_token,
    "token_short_long": case_token_short_long,
    "token_elsewhere": case_token_elsewhere,
    "huge_integer": case_huge_integer,
    "huge_integer_hello": case_oversized_integer_in_hello,
    "tiny_time_step": case_tiny_time_step,
    "calibrate_only": case_calibrate_only,
    "never_reads": case_never_reads,
    "oversized": case_oversized,
    "many_scans": case_many_scans,
    "flood_fairness": case_flood_fairness,
    "health_flood": case_health_flood,
    "idle_connections": case_idle_connections,
    "slowloris": case_slowloris,
}


def run_case(target: Target, name: str, case: Case) -> Row:
    before = target.memory_mb()
    t0 = time.perf_counter()
    log.info("case %s", name)
    try:
        sent, answer = case(target)
    except Exception as e:  # noqa: BLE001 - a case that breaks is a finding of its own: reported, the run goes on
        sent, answer = "(the case failed)", f"{type(e).__name__}: {str(e)[:80]}"
    seconds = time.perf_counter() - t0
    time.sleep(1.0)                                      # the server lets go of what the case held
    served = legit_check(target)
    after = target.memory_mb()
    return Row(name, sent, answer, served, f"{before:.0f} -> {after:.0f}", round(seconds, 1))


# -- stopping ----------------------------------------------------------------------------------
def stop_cases(workdir: Path, extra: list[str]) -> list[Row]:
    """SIGTERM and SIGINT with a client connected (the close code it gets), then a start on the
    port the SIGTERM'd server just left (a service manager's restart)."""
    rows = []
    ports = {signal.SIGTERM: free_port(), signal.SIGINT: free_port()}
    for sig, port in ports.items():
        target = Target(workdir, extra, port=port).start()
        try:
            ws = open_session(target)
            send_avatar(ws)
            before = target.memory_mb()
            t0 = time.perf_counter()
            assert target.server.process is not None
            target.server.process.send_signal(sig)
            code = close_code(ws, timeout=30)
        finally:
            target.server.stop()
        rows.append(Row(f"stop_{sig.name.lower()}", f"{sig.name} to the server with a session open", code, "-",
                        f"{before:.0f} -> 0", round(time.perf_counter() - t0, 1)))
    target = Target(workdir, extra, port=ports[signal.SIGTERM])
    t0 = time.perf_counter()
    try:
        target.start()
        served = legit_check(target)
        answer = f"started in {target.server.ready_s:.1f} s"
    except RuntimeError as e:
        lines = [line for line in str(e).splitlines() if line.startswith("error:")] or str(e).splitlines()[:1]
        served, answer = "-", f"did not start: {lines[0][:90]}"
    finally:
        target.server.stop()
    rows.append(Row("restart_same_port", "a start on the port a stop with a session open just left", answer,
                    served, "-", round(time.perf_counter() - t0, 1)))
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| case | sent | the attacker got | next legitimate client | group memory MB (before -> after) | s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.case} | {r.sent} | {r.answer} | {r.next_client} | {r.memory_mb} | {r.seconds:g} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", choices=[*CASES, "stop"],
                    help="run only these cases (repeatable; default: all, then the stop cases)")
    ap.add_argument("--server-option", action="append", default=[], metavar="OPT",
                    help="an extra option for `main.py serve` (repeatable)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    chosen = a.case or [*CASES, "stop"]
    extra = ["--idle-timeout", f"{IDLE_TIMEOUT_S:g}", *a.server_option]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="avatarcam-hostile-") as tmp:
        workdir = Path(tmp)
        names = [n for n in chosen if n != "stop"]
        if names:
            target = Target(workdir, extra).start()
            try:
                rows += [run_case(target, name, CASES[name]) for name in names]
            finally:
                target.server.stop()
        if "stop" in chosen:
            rows += stop_cases(workdir, extra)
    sys.stdout.write(table(rows) + "\n")
    if a.json:
        a.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
