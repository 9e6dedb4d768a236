"""A render service on loopback for tests: ``RenderService`` behind a FastAPI app and uvicorn in a
background thread (no Ray: the Serve deployment itself is tested in test_remote_serve.py)."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI, WebSocket

from app.remote import protocol as p
from app.remote.service import RenderService


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_app(service: RenderService) -> FastAPI:
    api = FastAPI()

    @api.get(p.HEALTH_PATH)
    async def health() -> dict:
        return service.health()

    @api.websocket(p.SESSION_PATH)
    async def session(ws: WebSocket) -> None:
        await service.serve(ws)

    return api


@contextlib.contextmanager
def running(service: RenderService, port: int | None = None) -> Iterator[str]:
    """Serve ``service`` on 127.0.0.1 (``port`` or a free one) until the block ends; yields the
    ws:// URL of its session path."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(service_app(service), host="127.0.0.1", port=port, log_level="warning",
                                           ws_ping_interval=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{port}{p.SESSION_PATH}"
    finally:
        server.should_exit = True
        thread.join(10)
