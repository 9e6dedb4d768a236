"""The render server as a Ray Serve application: one deployment, ``RenderServer``, whose replicas
each hold the networks on one device and serve live sessions over WebSockets (FastAPI ingress).

``build_app(args)`` is the application builder that ``python main.py serve`` runs and that a Serve
config file names (``import_path: app.remote.server.deployment:build_app``, see ``deploy/``). Within a
replica, the W+G renders of all sessions with a frame waiting run as one batch (``serve.batch``,
sized to the open sessions, so a lone session never waits for company)."""
# No ``from __future__ import annotations`` here: FastAPI must see the routes' real parameter
# types (a ``WebSocket`` annotated as a string turns into a required query parameter). And whatever
# the deployment class calls is defined above it: Serve captures the class when it is decorated.

import asyncio
import logging
import os
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from fastapi import FastAPI, WebSocket
from ray import serve
from ray.serve import Application

from ...cli.console import LOG_FORMAT
from .. import protocol as p
from .batching import BatchedBackend, RenderRequest, render_batch
from .options import DEFAULTS, ServerOptions
from .service import RenderService

log = logging.getLogger(__name__)

BATCH_WAIT_S = 0.003                # how long a frame waits for other sessions' frames, at most


def _log_our_lines() -> None:
    """In a replica, our loggers' INFO lines (sessions opened and closed) go to its standard error,
    which Ray forwards to the server's console; Ray's own loggers keep their configuration."""
    ours = logging.getLogger("app")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False


api = FastAPI(title="AvatarCam render server", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(name="RenderServer", max_ongoing_requests=64, health_check_period_s=5.0,
                  graceful_shutdown_timeout_s=2.0, graceful_shutdown_wait_loop_s=0.5)
@serve.ingress(api)
class RenderServer:
    def __init__(self, options: ServerOptions) -> None:
        from engines.registry import make_backend  # loads the networks: in the replica only

        _log_our_lines()
        if options.cpu_threads:
            torch.set_num_threads(options.cpu_threads)
        self.options = options
        self.backend = make_backend(options.backend, weights=options.weights, device=options.device,
                                    download=False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._render_pool = ThreadPoolExecutor(1, thread_name_prefix="render-batch")
        self.service = RenderService(BatchedBackend(self.backend, self._render_one), token=options.token,
                                     max_sessions=options.max_sessions, idle_timeout_s=options.idle_timeout_s,
                                     limits=p.Limits(max_fps=options.max_fps), on_sessions=self._size_batches)
        self.batch_sizes: dict[int, int] = {}
        self._size_batches(0)

    @api.get(p.HEALTH_PATH)
    async def health(self) -> dict[str, Any]:
        # the replica's process: which one answered (Serve routes health to any replica)
        return {**self.service.health(), "batches": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "replica_pid": os.getpid()}

    @api.websocket(p.SESSION_PATH)
    async def session(self, ws: WebSocket) -> None:
        self._loop = asyncio.get_running_loop()
        await self.service.serve(ws)

    def _render_one(self, request: RenderRequest) -> torch.Tensor:
        """From a session's worker thread: queue this frame's W+G for the next batch and wait."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._render_batch(request), self._loop).result()

    @serve.batch(max_batch_size=DEFAULTS.max_batch, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _render_batch(self, requests: list[RenderRequest]) -> list[torch.Tensor]:
        self.batch_sizes[len(requests)] = self.batch_sizes.get(len(requests), 0) + 1
        # the batch runs off the event loop: other sessions' messages go on being received
        return await asyncio.get_running_loop().run_in_executor(self._render_pool, render_batch, self.backend,
                                                                requests)

    def _size_batches(self, sessions: int) -> None:
        self._render_batch.set_max_batch_size(max(1, min(self.options.max_batch, sessions)))

    async def drain(self, reason: str = "server stopping") -> int:
        """Close every open session with 1001 (going away) and refuse new ones; ``main.py serve``
        calls it through a handle before Ray stops. Returns how many sessions were open."""
        return await self.service.drain(reason)

    def __del__(self) -> Coroutine[Any, Any, None] | None:
        # Serve's graceful shutdown calls this on the replica's event loop and awaits what it
        # returns: the sessions are told 1001 first. Called without a loop (garbage collection),
        # it can only release.
        if not hasattr(self, "service"):      # the constructor failed
            self._release()
            return None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._release()
            return None
        return self._drain_and_release()

    async def _drain_and_release(self) -> None:
        try:
            await self.service.drain()
        finally:
            self._release()

    def _release(self) -> None:
        if self.__dict__.get("_released"):    # Serve's call, then garbage collection
            return
        self._released = True
        if hasattr(self, "service"):          # not when the constructor failed
            self.service.shutdown()
            self._render_pool.shutdown(wait=False)
        if hasattr(self, "backend"):          # the replica's own; its sessions' threads are not waited
            self.backend.close()              # for: a call in flight completes or raises RuntimeError


def uses_gpu(device: str) -> bool:
    """Whether a replica for ``device`` needs a GPU from Ray (which hides GPUs from actors that
    did not ask for one)."""
    if device == "cuda":
        return True
    return device == "auto" and torch.cuda.is_available()


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application for ``args`` (``ServerOptions`` fields). One GPU per replica where
    the device is a GPU; replicas, autoscaling and resources can be overridden in a config file."""
    options = ServerOptions.from_args(dict(args))
    return RenderServer.options(
        ray_actor_options={"num_gpus": 1 if uses_gpu(options.device) else 0},
        max_ongoing_requests=options.max_sessions + 8,     # a session is one ongoing request
        max_constructor_retry_count=2,                     # a replica that cannot start says so soon
    ).bind(options)
