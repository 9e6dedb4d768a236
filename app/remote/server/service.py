"""The render server's sessions over WebSockets, independent of how the app is served: the Ray
Serve deployment (``app.remote.server.deployment``) routes ``/v1/session`` and ``/v1/health`` here, and so
can any ASGI app (the tests use a plain FastAPI app).

Each connection is authenticated from its ``Authorization: Bearer TOKEN`` header before it is
accepted (constant-time comparison), then runs ``protocol``'s conversation with a ``RenderSession``
of its own. The heavy work of a message runs in a worker thread, so one session's frame never
stalls another's messages. A message that breaks the protocol or is too large, a session that does
no work (no frame and no avatar) for the idle timeout, and one that sends frames without reading
the answers end that session with a close code and one log line; an error inside a session is
logged (without its images) and ends that session only, as does a weight set that cannot be
loaded (1011 with the reason). Frames and avatars are never written or logged.

One frame is answered at a time per session, and a session holds at most ``Limits.max_unread``
answers its client has not acknowledged (``protocol``'s receipts): frames beyond that, and
pipelined frames over the frame-rate cap, are dropped before their image is decoded
(``FrameGate``), so neither a client that never reads nor one that floods can make the server
queue work or answers for it."""
from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from engines.backend import InferenceBackend

from .. import protocol as p
from .options import DEFAULTS
from .session import FrameGate, RenderSession
from .weight_sets import WeightSetError, WeightSets

log = logging.getLogger(__name__)


class RenderService:
    """``backends``: the weight sets the sessions animate on (``WeightSets``; a single backend
    animates every kind, as the stub does). ``token``: the token clients must present (None: no
    check, for a server on loopback only). ``on_sessions``: told the number of open sessions
    whenever it changes (the deployment sizes its batches by it)."""

    def __init__(self, backends: InferenceBackend | WeightSets, *, token: str | None = None,
                 max_sessions: int = DEFAULTS.max_sessions, limits: p.Limits | None = None,
                 idle_timeout_s: float = DEFAULTS.idle_timeout_s,
                 on_sessions: Callable[[int], None] | None = None) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions: expected at least 1, got {max_sessions}")
        self.backends = backends if isinstance(backends, WeightSets) else WeightSets.of(backends)
        self._token = token.encode() if token else None
        self.max_sessions = max_sessions
        self.limits = limits or p.Limits()
        self.idle_timeout_s = idle_timeout_s
        self.on_sessions = on_sessions or (lambda n: None)
        self.sessions = 0
        self.sessions_served = 0
        self.frames_dropped = 0          # frames dropped unanswered, all sessions together (sessions closed
                                         # for it not counting the frame that closed them)
        self._ids = itertools.count(1)
        self._open: set[WebSocket] = set()
        self.draining = False
        self._workers = ThreadPoolExecutor(max_sessions, thread_name_prefix="render-session")

    def authorized(self, header: str | None) -> bool:
        if self._token is None:
            return True
        scheme, _, presented = (header or "").partition(" ")
        # compare_digest takes as long for a wrong token as for a right one of the same length
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), self._token)

    def health(self) -> dict[str, Any]:
        loaded = self.backends.first        # what a preloaded set runs on (None before any is loaded)
        return {"status": "ok", "version": p.VERSION, "backend": loaded.name if loaded else None,
                "device": str(loaded.device) if loaded else None, "weight_sets": self.backends.loaded,
                "token_required": self._token is not None,
                "sessions": self.sessions, "max_sessions": self.max_sessions, "sessions_served": self.sessions_served}

    async def serve(self, ws: WebSocket) -> None:
        """One session, from the handshake to its close."""
        if not self.authorized(ws.headers.get("authorization")):
            log.warning("session refused: wrong or missing token (from %s)", _peer(ws))
            await ws.close(code=p.Close.POLICY)         # before accept: the client gets HTTP 403
            return
        await ws.accept()
        if self.draining:
            await ws.close(code=p.Close.GOING_AWAY, reason="server stopping")
            return
        if self.sessions >= self.max_sessions:
            await ws.close(code=p.Close.TRY_LATER, reason=f"server full ({self.max_sessions} sessions)")
            return
        number = next(self._ids)
        self.sessions += 1
        self.sessions_served += 1
        self.on_sessions(self.sessions)
        log.info("session %d opened (%d open)", number, self.sessions)
        session: RenderSession | None = None
        code, reason = p.Close.NORMAL, ""
        self._open.add(ws)
        try:
            session = await self._hello(ws)
            await self._conversation(ws, session)
        except WebSocketDisconnect:
            reason = "server stopping" if self.draining else "client left"
        except p.ProtocolError as e:
            code, reason = e.code, str(e)
        except WeightSetError as e:          # logged where it failed; the other sessions go on
            code, reason = p.Close.INTERNAL, str(e)
        except TimeoutError:
            code, reason = p.Close.IDLE, f"no frame or avatar for {self.idle_timeout_s:g} s"
        except Exception:  # noqa: BLE001 - this session ends; the server and the other sessions go on
            if self.draining:      # a reply to a session that drain has closed meanwhile
                reason = "server stopping"
            else:
                log.exception("session %d failed", number)
                code, reason = p.Close.INTERNAL, "internal error"
        finally:
            self._open.discard(ws)
            self.sessions -= 1
            self.on_sessions(self.sessions)
            if session is not None:
                await asyncio.get_running_loop().run_in_executor(self._workers, session.close)
            await _close(ws, code, reason)
            log.info("session %d closed: %s (%d open)", number, reason or code.name.lower(), self.sessions)

    async def _hello(self, ws: WebSocket) -> RenderSession:
        kind, message = await self._receive(ws, asyncio.get_running_loop().time() + self.idle_timeout_s)
        hello = p.parse_text(message) if kind == "text" else {}
        if hello.get("type") != "hello":
            raise p.ProtocolError("expected hello first")
        if hello.get("version") != p.VERSION:
            raise p.ProtocolError(f"protocol version {p.shown(hello.get('version'))} not spoken here "
                                  f"(this server speaks {p.VERSION})", p.Close.VERSION)
        session = RenderSession(self.backends, p.choice(hello, "format", p.FRAME_FORMATS),
                                int(p.number(hello, "quality", 30, 100)) if "quality" in hello else 90, self.limits)
        await ws.send_text(p.text({"type": "welcome", "version": p.VERSION, "limits": self.limits.to_wire()}))
        return session

    async def _conversation(self, ws: WebSocket, session: RenderSession) -> None:
        loop = asyncio.get_running_loop()
        gate = FrameGate(self.limits)
        # the idle timeout counts from the last frame or avatar answered (from hello until the
        # first avatar): settings and calibrate alone do not keep a session, nor its slot, alive
        idle_at = loop.time() + self.idle_timeout_s
        while True:
            kind, message = await self._receive(ws, idle_at)
            if kind == "text":
                msg = p.parse_text(message)
                if msg["type"] == "settings":
                    session.apply_settings(msg)
                elif msg["type"] == "calibrate":
                    session.calibrate()
                else:
                    raise p.ProtocolError(f"unexpected {p.shown(msg['type'])} text message")
                continue
            header, payload = p.unpack(message)
            if header["type"] == "frame":
                wait = gate.admit(header, loop.time())
                if wait is None:                                          # dropped before decoding
                    self.frames_dropped += 1
                    continue
                await asyncio.sleep(wait)                                 # the session's frame-rate cap
                result = await loop.run_in_executor(self._workers, session.frame, header, payload, gate.issue())
                await ws.send_bytes(result)
            elif header["type"] in ("avatar", "avatar_frames"):
                # a video avatar's header and all but its last frames are answered by nothing
                work = session.set_avatar if header["type"] == "avatar" else session.add_frames
                ready = await loop.run_in_executor(self._workers, work, header, payload)
                if ready is not None:
                    await ws.send_text(p.text(ready))
            else:
                raise p.ProtocolError(f"unexpected {p.shown(header['type'])} binary message")
            idle_at = loop.time() + self.idle_timeout_s

    async def _receive(self, ws: WebSocket, idle_at: float) -> tuple[str, Any]:
        """The next message as ("text", str) or ("bytes", bytes), its size checked; ``TimeoutError``
        when none has come by ``idle_at`` (the event loop's time), ``WebSocketDisconnect`` when the
        client has gone."""
        event = await asyncio.wait_for(ws.receive(), max(0.0, idle_at - asyncio.get_running_loop().time()))
        if event["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(event.get("code", 1000))
        if event.get("bytes") is not None:
            data = event["bytes"]
            if len(data) > max(self.limits.max_frame_bytes, self.limits.max_avatar_bytes):
                raise p.ProtocolError(f"binary message of {len(data)} bytes is over the limit", p.Close.TOO_BIG)
            if len(data) > self.limits.max_frame_bytes and not _is_avatar(data):     # an avatar's crops
                raise p.ProtocolError(f"frame message of {len(data)} bytes is over the limit", p.Close.TOO_BIG)
            return "bytes", data
        data = event.get("text") or ""
        if len(data) > self.limits.max_text_bytes:
            raise p.ProtocolError(f"text message of {len(data)} characters is over the limit", p.Close.TOO_BIG)
        return "text", data

    async def drain(self, reason: str = "server stopping") -> int:
        """Close every open session with 1001 (going away) and refuse new ones, before the server
        stops; returns how many were open."""
        self.draining = True
        sessions = list(self._open)
        await asyncio.gather(*(_close(ws, p.Close.GOING_AWAY, reason) for ws in sessions))
        return len(sessions)

    def shutdown(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)


def _is_avatar(data: bytes) -> bool:
    """Whether ``data`` is an ``avatar`` or ``avatar_frames`` message (those may be large)."""
    try:
        return p.unpack(data)[0]["type"] in ("avatar", "avatar_frames")
    except p.ProtocolError:
        return False


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            # a close reason is at most 123 bytes
            await ws.close(code=int(code), reason=reason.encode()[:120].decode(errors="ignore"))
        except (RuntimeError, OSError):      # the client went away meanwhile
            pass


def _peer(ws: WebSocket) -> str:
    return f"{ws.client.host}:{ws.client.port}" if ws.client else "unknown"
