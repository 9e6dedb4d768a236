"""A real render server for tests, without Ray: ``app.remote.server.service.RenderService`` (by default on
the stub backend) behind a plain FastAPI app served by uvicorn on 127.0.0.1 in a background thread
(imported as ``render_server``: tests/ is on sys.path). The Serve deployment itself is tested in
test_remote_serve.py."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI, WebSocket

from app.remote import protocol as p
from app.remote.server.local_server import free_port
from app.remote.server.service import RenderService
from engines.backend import StubBackend


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
